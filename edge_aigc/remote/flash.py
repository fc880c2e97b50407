"""Lay out a device root (e.g. a mounted SD card): models, config, systemd unit, trusted key.

Writes, under ``root``:

    var/lib/edge-aigc/models/…                    the bundles, installed into the device store
    etc/edge-aigc/device.toml                     the service config
    etc/edge-aigc/trusted.pub                     the key bundles must be signed with
    etc/systemd/system/edge-aigc.service          the unit, MemoryMax from the profile budget
    etc/systemd/system/multi-user.target.wants/edge-aigc.service -> ../edge-aigc.service
    README-edge-aigc.txt                          what was written, and what is left to do

Every bundle's signature is checked and each must fit the profile: converted for it, at
most ``max_bundle_mb``, and all together within ``max_rss_mb`` by the estimate below.
Running it again with the same inputs changes nothing.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ..bundle import signing
from .. import zoo
from ..bundle.load import load_bundle, resign_bundle
from ..errors import ConfigError, StoreError
from ..device.profiles import Profile
from ..device.records import write_atomic
from ..serve.config import DEFAULT_BROKER, device_toml
from ..bundle.store import ModelStore

__all__ = ["FlashPlan", "flash", "estimate_rss_mb", "BASE_RSS_MB"]

STATE = "var/lib/edge-aigc"
ETC = "etc/edge-aigc"
UNIT_DIR = "etc/systemd/system"
# Measured: the service process with onnxruntime and paho loaded is ~90 MB resident before
# any model; each model costs about its weights plus onnxruntime's arena and buffers.
BASE_RSS_MB, RSS_PER_MODEL_BYTE = 120, 2.0


def estimate_rss_mb(model_bytes: list[int]) -> float:
    return BASE_RSS_MB + RSS_PER_MODEL_BYTE * sum(model_bytes) / 2**20


@dataclass
class FlashPlan:
    root: Path
    profile: Profile
    models: list[str]              # prebuilt names or bundle paths
    device_id: str
    broker: str = DEFAULT_BROKER
    pubkey: Path | None = None     # key the bundles are signed with (default: the zoo key)
    sign_key: Path | None = None   # re-sign with this key; the device then trusts its public half


def _bundle_path(model: str, profile: str) -> Path:
    path = Path(model)
    if path.suffix == ".eaigc" or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: no such bundle")
        return path
    return zoo.zoo_bundle(model, profile).path


def _write(path: Path, content: bytes, written: list[str], root: Path) -> None:
    if path.exists() and path.read_bytes() == content:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, content)
    written.append(str(path.relative_to(root)))


def _unit(profile: Profile) -> bytes:
    text = (resources.files("edge_aigc.systemd") / "edge-aigc.service").read_text()
    text, found = re.subn(r"(?m)^MemoryMax=\S+$", f"MemoryMax={profile.budget.max_rss_mb}M", text)
    if found != 1:  # the shipped unit lost its line: fail here, not with an unbounded service
        raise StoreError(f"edge-aigc.service has {found} MemoryMax= lines; expected exactly one")
    return text.encode()


def _config(plan: FlashPlan, names: list[str]) -> bytes:
    header = (f"Written by edge-aigc flash for profile {plan.profile.name}. Reference: docs/deploy.md\n"
              f"Every bundle must be signed by pubkey. For a broker login add, under [mqtt]:\n"
              f'username = "{plan.device_id}" (the password goes in /{ETC}/mqtt-password, a systemd credential)')
    return device_toml(plan.device_id, names, plan.broker, header=header, profile=plan.profile.name,
                       state_dir=f"/{STATE}", pubkey=f"/{ETC}/trusted.pub").encode()


def flash(plan: FlashPlan) -> list[str]:
    """Check everything, then write; returns the paths written (relative to the root)."""
    root, profile, written = Path(plan.root), plan.profile, []
    verify_key = signing.load_public_key(plan.pubkey or zoo.zoo_public_key_path())
    sign_key = signing.load_private_key(plan.sign_key) if plan.sign_key else None
    trusted = sign_key.public_key() if sign_key else verify_key
    bundles = [load_bundle(_bundle_path(m, profile.name), public_key=verify_key, require_signature=True)
               for m in plan.models]
    try:
        _check_budget(profile, bundles, plan.models)
        store = ModelStore(root / STATE, public_key=trusted, require_signature=True)
        with tempfile.TemporaryDirectory() as tmp:
            for model, bundle in zip(plan.models, bundles):
                before = {(m.name, m.version) for m in store.list()}
                source = _bundle_path(model, profile.name)
                if sign_key is not None:
                    source = Path(tmp) / f"{bundle.manifest.name}.eaigc"
                    resign_bundle(bundle, source, sign_key)
                m = store.install(source)
                if (m.name, m.version) not in before:
                    written.append(str(m.path.relative_to(root)))
        pem = trusted.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        _write(root / ETC / "trusted.pub", pem, written, root)
        _write(root / ETC / "device.toml", _config(plan, [b.manifest.name for b in bundles]), written, root)
        _write(root / UNIT_DIR / "edge-aigc.service", _unit(profile), written, root)
        _enable(root, written)
        _write(root / "README-edge-aigc.txt", _readme(plan, bundles), written, root)
    finally:
        for b in bundles:
            b.close()
    return written


def _check_budget(profile: Profile, bundles, names: list[str]) -> None:
    sizes = []
    for name, b in zip(names, bundles):
        m = b.manifest
        if m.profile and m.profile not in zoo.accepts(profile.name, m.name):
            raise StoreError(f"{name}: converted for profile {m.profile}, not {profile.name}")
        if m.size_bytes > profile.budget.max_bundle_mb * 2**20:
            raise StoreError(f"{name}: {m.size_bytes / 2**20:.1f} MB is over {profile.name}'s "
                             f"max_bundle_mb = {profile.budget.max_bundle_mb}")
        sizes.append(m.size_bytes)
    rss = estimate_rss_mb(sizes)
    if rss > profile.budget.max_rss_mb:
        raise StoreError(f"these models need ~{rss:.0f} MB resident (estimate: {BASE_RSS_MB} MB + "
                         f"{RSS_PER_MODEL_BYTE:g}x model size), over {profile.name}'s max_rss_mb = "
                         f"{profile.budget.max_rss_mb}")


def _enable(root: Path, written: list[str]) -> None:
    link = root / UNIT_DIR / "multi-user.target.wants" / "edge-aigc.service"
    target = "/etc/systemd/system/edge-aigc.service"  # what `systemctl enable` would link to
    if link.is_symlink() and os.readlink(link) == target:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)
    written.append(str(link.relative_to(root)))


def _readme(plan: FlashPlan, bundles) -> bytes:
    lines = [f"edge-aigc device root for {plan.device_id} (profile {plan.profile.name})", "",
             "Models (in /var/lib/edge-aigc, signatures checked against /etc/edge-aigc/trusted.pub):"]
    lines += [f"  {b.manifest.name} {b.manifest.version}: {b.manifest.task}, {b.manifest.format}/"
              f"{b.manifest.recipe}, {b.manifest.size_bytes / 2**20:.1f} MB" for b in bundles]
    lines += ["", "On the device:",
              "  1. pip install edge-aigc   (the device install: no torch)",
              "  2. put the MQTT password in /etc/edge-aigc/mqtt-password (mode 0600) and set",
              "     username in /etc/edge-aigc/device.toml, if the broker wants one",
              "  3. systemctl daemon-reload && systemctl start edge-aigc   (already enabled)",
              f"  4. edge-aigc send {plan.device_id} status --broker {plan.broker}", ""]
    return "\n".join(lines).encode()
