"""``--recipe auto``: every recipe the profile's formats allow, gated and measured; the fastest
that passes the gate and fits the profile's budgets wins.

A candidate is measured by ``edge-aigc bench --bundle`` (edge_aigc/runtime/bundle_bench.py) on a
bundle packaged for it: on this host as a labelled proxy, in a subprocess of its own so its
peak RSS is the device runtime's and not the converter's; or, where ``--measurements`` gives
the JSON that the same command wrote on the device, those figures. The manifest records
every candidate (built or not, gated, measured) and why the winner won
(``fidelity.recipe_selection``; docs/converting.md).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from edge_aigc.runtime.bundle_bench import HIGHER_IS_BETTER
from edge_aigc.contract import Recipe
from edge_aigc.errors import ConversionError
from edge_aigc.device.profiles import Profile

__all__ = ["Candidate", "candidate_recipes", "load_measurements", "measure_on_host", "pick"]

GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider"}
HOST_REPEATS = 5
MIN_SPREAD = 0.02  # differences under 2% are never taken as real


@dataclass
class Candidate:
    format: str
    recipe: str
    status: str = "not built"          # "not built: …", "failed the gate: …", "over budget: …", "passed"
    model_bytes: int | None = None
    figures: dict[str, float] = field(default_factory=dict)  # the bench's medians
    headline: str | None = None
    peak_rss_mb: float | None = None
    measured_on: str | None = None     # "host proxy" or "device"
    cv: float | None = None            # the headline's coefficient of variation over the repeats

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def score(self) -> float:
        value = self.figures[self.headline]
        return value if HIGHER_IS_BETTER[self.headline] else -value

    def line(self) -> str:
        figure = f", {self.headline} {self.figures[self.headline]:.4g} ({self.measured_on})" if self.figures else ""
        return f"{self.format}/{self.recipe}: {self.status}{figure}"


def candidate_recipes(profile: Profile, fmt: str) -> list[str]:
    """Every recipe, but fp16 only where the profile has a GPU provider (CPU kernels for fp16
    are missing or slower than fp32 in ONNX Runtime's CPU provider and LiteRT's CPU path)."""
    gpu = bool(profile.onnx and GPU_PROVIDERS & set(profile.onnx.providers)) or bool(profile.gpu)
    return [r.value for r in Recipe if r != Recipe.FP16 or gpu]


def load_measurements(paths: list[Path]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``bench --bundle`` JSON files (or directories of them), keyed by (profile, format, recipe)."""
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in paths:
        for file in sorted(path.glob("*.json")) if path.is_dir() else [path]:
            try:
                data = json.loads(file.read_text())
                key = (data["profile"], data["format"], data["recipe"])
                data["median"][data["headline"]], data["peak_rss_mb"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConversionError(f"--measurements {file}: not a report of `edge-aigc bench --bundle` "
                                      f"({type(exc).__name__}: {exc})") from None
            found[key] = data
    return found


def measure_on_host(bundle: Path, profile: Profile) -> dict[str, Any]:
    """``edge-aigc bench --bundle`` in a fresh process (its RSS is the runtime's alone)."""
    with tempfile.TemporaryDirectory(prefix="edge-aigc-auto-") as out:
        done = subprocess.run([sys.executable, "-m", "edge_aigc", "bench", "--bundle", str(bundle), "--repeats",
                               str(HOST_REPEATS), "--profile", profile.name, "--out", out],
                              capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise ConversionError(f"measuring {bundle.name} failed: {done.stderr.strip().splitlines()[-1:]}")
        [report] = Path(out).glob("*.json")
        return json.loads(report.read_text())


def record(c: Candidate, report: dict[str, Any], where: str, profile: Profile) -> None:
    c.figures, c.headline, c.peak_rss_mb, c.measured_on = report["median"], report["headline"], \
        report["peak_rss_mb"], where
    c.cv = report.get("cv")
    if c.peak_rss_mb is not None and c.peak_rss_mb > profile.budget.max_rss_mb:
        c.status = f"over budget: peak RSS {c.peak_rss_mb:.0f} MB > max_rss_mb {profile.budget.max_rss_mb}"


def pick(profile: Profile, candidates: list[Candidate]) -> tuple[Candidate, dict[str, Any]]:
    """The fastest passing candidate, and the record for the manifest; a ConversionError
    listing every candidate when none passes. Candidates as fast as the fastest within the
    measurement's own spread (the larger coefficient of variation of the two, at least 2%)
    are a tie, which the smaller file wins."""
    passing = [c for c in candidates if c.passed]
    if not passing:
        raise ConversionError(f"--recipe auto: no candidate for {profile.name} passes the gate and fits its "
                              "budgets: " + "; ".join(c.line() for c in candidates))
    fastest = max(passing, key=lambda c: c.score())
    best = fastest.figures[fastest.headline]

    def tied(c: Candidate) -> bool:
        spread = max(c.cv or 0.0, fastest.cv or 0.0, MIN_SPREAD)
        return abs(c.figures[c.headline] - best) <= spread * abs(best)
    winner = min((c for c in passing if tied(c)), key=lambda c: (c.model_bytes or 0, -c.score()))
    ties = [c for c in passing if tied(c) and c is not winner]
    why = (f"fastest of {len(passing)} passing candidate(s) by {winner.headline} "
           f"({winner.figures[winner.headline]:.4g}, {winner.measured_on})")
    if ties:
        why = (f"smallest of the candidates within the measurement's spread of the fastest by {winner.headline} "
               f"({', '.join(f'{c.recipe} {c.figures[c.headline]:.4g}' for c in [winner, *ties])}; "
               f"{winner.measured_on})")
    return winner, {"winner": f"{winner.format}/{winner.recipe}", "why": why,
                    "candidates": [asdict(c) for c in candidates]}


class Candidates(Protocol):
    """What ``choose`` needs of a conversion (pipeline.Conversion)."""

    def built(self, profile: Profile, fmt: str, recipe: str) -> tuple[Path, Any, int]:
        """(artifact, gate report, bytes), or ConversionError when it cannot be built."""

    def probe(self, profile: Profile, fmt: str, recipe: str) -> Path:
        """The artifact as a bundle to measure."""


def choose(profile: Profile, formats: list[str], conversion: Candidates, measurements: dict,
           progress: Callable[[str], None]) -> tuple[Candidate, dict[str, Any]]:
    """Build, gate and measure each candidate of ``profile``."""
    candidates = []
    for fmt in formats:
        for recipe in candidate_recipes(profile, fmt):
            c = Candidate(fmt, recipe)
            candidates.append(c)
            try:
                _, report, c.model_bytes = conversion.built(profile, fmt, recipe)
            except ConversionError as exc:
                c.status = f"not built: {str(exc).splitlines()[0][:200]}"
                continue
            if not report.passed:
                c.status = "failed the gate: " + ", ".join(report.failures)
                continue
            if c.model_bytes > profile.budget.max_bundle_mb << 20:
                c.status = f"over budget: {c.model_bytes / 2**20:.1f} MB > max_bundle_mb {profile.budget.max_bundle_mb}"
                continue
            c.status = "passed"
            device = measurements.get((profile.name, fmt, recipe))
            record(c, device or measure_on_host(conversion.probe(profile, fmt, recipe), profile),
                   "device" if device else "host proxy", profile)
            progress(f"--recipe auto, {profile.name}: {c.line()}")
    return pick(profile, candidates)
