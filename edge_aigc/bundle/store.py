"""The device model store: verified bundles installed under a state directory.

Layout (``<state>/models``)::

    <name>/<version>/...      an extracted, verified bundle (never modified after install)
    <name>/state.json         {"active": "<version>", "previous": "<version>" | null}
    .staging/                 where installs are extracted and verified before a rename
    .lock                     serializes writers (flock)

Install is atomic: extract into .staging, verify, rename into place, then switch
``state.json`` with an atomic replace. Any failure before the switch removes what it
made, so a failed install leaves the store exactly as it was. The previous version is
kept for ``rollback``; older ones are pruned.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .archive import DEFAULT_MAX_BYTES, extract_archive
from .load import Bundle, verify_tree
from ..errors import StoreError, UnknownModel
from .manifest import Manifest
from ..device.records import write_atomic
from ..contract import MANIFEST

__all__ = ["ModelStore", "InstalledModel", "default_state_dir"]


def default_state_dir() -> Path:
    """$EDGE_AIGC_STATE_DIR, systemd's $STATE_DIRECTORY, /var/lib/edge-aigc for root, else ~/.local/state."""
    for var in ("EDGE_AIGC_STATE_DIR", "STATE_DIRECTORY"):
        if os.environ.get(var):
            return Path(os.environ[var].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/edge-aigc")
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "edge-aigc"


@dataclass(frozen=True)
class InstalledModel:
    manifest: Manifest
    path: Path
    active: bool

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version


class ModelStore:
    def __init__(self, state_dir: str | os.PathLike, public_key: Ed25519PublicKey | None = None,
                 require_signature: bool | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.root = Path(state_dir) / "models"
        # True: unsigned bundles are refused; None: refused whenever public_key is given;
        # False: accepted even then (a signed one must still verify). As load_bundle.
        self.public_key, self.require_signature = public_key, require_signature
        self.max_bytes = max_bytes

    # -- reading -------------------------------------------------------------------
    def _state(self, name: str) -> dict:
        try:
            return json.loads((self.root / name / "state.json").read_text())
        except FileNotFoundError:
            return {"active": None, "previous": None}

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / "state.json").is_file())

    def versions(self, name: str) -> list[InstalledModel]:
        active = self._state(name)["active"]
        found = []
        for d in sorted((self.root / name).glob("*/manifest.json")):
            manifest = Manifest.from_json(d.read_bytes())
            found.append(InstalledModel(manifest, d.parent, manifest.version == active))
        return found

    def list(self) -> list[InstalledModel]:
        return [m for name in self.names() for m in self.versions(name)]

    def summary(self) -> dict[str, dict]:
        """Per model: the active and previous version and every version on disk (the device's
        retained status lists this)."""
        out = {}
        for name in self.names():
            state = self._state(name)
            out[name] = {"active": state["active"], "previous": state["previous"],
                         "versions": sorted(p.parent.name for p in (self.root / name).glob(f"*/{MANIFEST}"))}
        return out

    def active_path(self, name: str) -> Path:
        active = self._state(name)["active"] if (self.root / name).is_dir() else None
        if not active:
            installed = ", ".join(self.names()) or "none"
            raise UnknownModel(f"model {name!r} is not installed (installed: {installed})")
        return self.root / name / active

    def open(self, name: str) -> Bundle:
        """The active version of ``name``, re-verified (hashes and, if configured, signature)."""
        path = self.active_path(name)
        manifest, signer = verify_tree(path, self.public_key, self.require_signature)
        return Bundle(manifest, path, signer)

    # -- writing -------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write_state(self, name: str, active: str | None, previous: str | None) -> None:
        state = json.dumps({"active": active, "previous": previous}) + "\n"
        write_atomic(self.root / name / "state.json", state.encode())

    def install(self, bundle_path: str | os.PathLike, activate: bool = True) -> InstalledModel:
        """Install a ``.eaigc`` file; installing the same version with the same content is a no-op."""
        with self._locked():
            staging = self.root / ".staging"
            staging.mkdir(exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=staging))
            try:
                extract_archive(bundle_path, tmp, max_bytes=self.max_bytes)
                manifest, _ = verify_tree(tmp, self.public_key, self.require_signature)
                return self._place(tmp, manifest, activate)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    staging.rmdir()
                except OSError:
                    pass  # another writer's leftovers; not ours to remove

    def _place(self, tmp: Path, manifest: Manifest, activate: bool) -> InstalledModel:
        model_dir = self.root / manifest.name
        target = model_dir / manifest.version
        created_dir = not model_dir.exists()
        if target.exists():
            if (target / MANIFEST).read_bytes() != manifest.to_json():
                raise StoreError(f"{manifest.name} {manifest.version} is already installed with "
                                 "different content; remove that version first")
        else:
            model_dir.mkdir(exist_ok=True)
            os.rename(tmp, target)
        state = self._state(manifest.name)
        try:
            if activate and state["active"] != manifest.version:
                self._write_state(manifest.name, manifest.version, state["active"])
            elif state["active"] is None:
                self._write_state(manifest.name, None, None)
        except OSError as exc:
            shutil.rmtree(target if not created_dir else model_dir, ignore_errors=True)
            raise StoreError(f"cannot record {manifest.name} {manifest.version}: {exc}") from None
        if activate:
            self.prune(manifest.name)
        return InstalledModel(manifest, target, activate or state["active"] == manifest.version)

    def prune(self, name: str) -> None:
        """Remove the versions of ``name`` that are neither active nor previous."""
        keep = {v for v in self._state(name).values() if v}
        for d in (self.root / name).iterdir():
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d)

    def recover(self) -> list[str]:
        """After a crash: remove what an interrupted writer left (staging directories, a state
        file half-written, a model directory whose first install never recorded a state);
        returns what it removed. Every model keeps the active version its state.json names."""
        removed = []
        if not self.root.is_dir():
            return removed
        with self._locked():
            staging = self.root / ".staging"
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
                removed.append(".staging")
            for model_dir in self.root.iterdir():
                if not model_dir.is_dir() or model_dir.name.startswith("."):
                    continue
                (model_dir / "state.tmp").unlink(missing_ok=True)
                if not (model_dir / "state.json").is_file():
                    shutil.rmtree(model_dir, ignore_errors=True)
                    removed.append(model_dir.name)
        return removed

    def activate(self, name: str, version: str) -> None:
        with self._locked():
            if not (self.root / name / version / MANIFEST).is_file():
                have = ", ".join(m.version for m in self.versions(name)) or "none"
                raise StoreError(f"{name} {version} is not installed (installed versions: {have})")
            state = self._state(name)
            if state["active"] != version:
                self._write_state(name, version, state["active"])

    def rollback(self, name: str) -> str:
        """Make the previous version active again; returns it."""
        with self._locked():
            state = self._state(name)
            previous = state["previous"]
            if not previous or not (self.root / name / previous).is_dir():
                raise StoreError(f"{name} has no previous version to roll back to")
            self._write_state(name, previous, state["active"])
            return previous

    def remove(self, name: str, version: str | None = None) -> None:
        """Remove one inactive version, or the whole model when ``version`` is None."""
        with self._locked():
            model_dir = self.root / name
            if not (model_dir / "state.json").is_file():
                raise UnknownModel(f"model {name!r} is not installed")
            if version is None:
                shutil.rmtree(model_dir)
                return
            state = self._state(name)
            if version == state["active"]:
                raise StoreError(f"{name} {version} is active; activate or roll back first, "
                                 f"or remove the whole model")
            if not (model_dir / version).is_dir():
                raise StoreError(f"{name} {version} is not installed")
            shutil.rmtree(model_dir / version)
            if state["previous"] == version:
                self._write_state(name, state["active"], None)
