"""The ``.eaigc`` bundle: pack, load (extract + verify), inspect.

A bundle is a tar archive (gzip by default) holding ``manifest.json``, an optional
``manifest.sig`` and the files the manifest pins by sha256. Loading checks, in order:
archive safety, manifest schema and fields, the signature (when a key is given or one
is required), then every file's presence and sha256, and that no unlisted file rides along.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import weakref
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import signing
from .._version import __version__
from .archive import DEFAULT_MAX_BYTES, extract_archive, read_member, write_archive
from ..contract import MANIFEST, SIGNATURE
from ..errors import BundleError, CorruptBundle, IntegrityError, SignatureError
from .manifest import SCHEMA_VERSION, Manifest

__all__ = ["Bundle", "BundleInfo", "pack_bundle", "load_bundle", "is_bundle_path", "verify_tree", "inspect_bundle",
           "sha256_file", "resign_bundle", "repack_bundle"]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def pack_bundle(out: str | os.PathLike, meta: Mapping[str, Any], files: Mapping[str, Path | bytes],
                key: Ed25519PrivateKey | None = None, compress: bool = True) -> Manifest:
    """Write a bundle. ``meta`` holds the manifest fields except files/size_bytes/schema."""
    digests: dict[str, str] = {}
    size = 0
    for name, content in sorted(files.items()):
        if isinstance(content, bytes):
            digests[name], n = hashlib.sha256(content).hexdigest(), len(content)
        else:
            digests[name], n = sha256_file(content), Path(content).stat().st_size
        size += n
    fields = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "converter_version": __version__, **meta,
              "files": digests, "size_bytes": size, "schema": SCHEMA_VERSION}
    manifest = Manifest.from_dict(fields)  # validates what we are about to write
    raw = manifest.to_json()
    members: list[tuple[str, bytes | Path]] = [(MANIFEST, raw)]
    if key is not None:
        members.append((SIGNATURE, signing.sign(raw, key)))
    members += [(name, files[name] if isinstance(files[name], bytes) else Path(files[name]))
                for name in sorted(files)]
    write_archive(out, members, compress=compress)
    return manifest


def verify_tree(root: str | os.PathLike, public_key: Ed25519PublicKey | None = None,
                require_signature: bool | None = None) -> tuple[Manifest, str | None]:
    """Verify an extracted bundle directory; returns its manifest and the signer's key id.

    A signature is required when ``require_signature`` is true, and by default whenever a
    public key is given (verifying "against a key" must not pass an unsigned bundle).
    """
    root = Path(root)
    if require_signature is None:
        require_signature = public_key is not None
    try:
        raw = (root / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise CorruptBundle(f"{root}: no {MANIFEST}; not a bundle") from None
    manifest = Manifest.from_json(raw)
    signer = _check_signature(root, raw, public_key, require_signature)
    for name, digest in manifest.files.items():
        path = root / name
        if not path.is_file() or path.is_symlink():
            raise IntegrityError(f"file {name!r} listed in the manifest is missing from the bundle")
        actual = sha256_file(path)
        if actual != digest:
            raise IntegrityError(f"file {name!r} does not match its sha256 in the manifest "
                                 f"(expected {digest[:12]}…, got {actual[:12]}…): tampered or corrupt")
    listed = set(manifest.files) | {MANIFEST, SIGNATURE}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if not path.is_dir() and rel not in listed:
            raise IntegrityError(f"file {rel!r} is in the bundle but not in the manifest")
    return manifest, signer


def _check_signature(root: Path, raw: bytes, public_key: Ed25519PublicKey | None,
                     required: bool) -> str | None:
    sig_path = root / SIGNATURE
    if not sig_path.is_file():
        if required:
            raise SignatureError("bundle is not signed, and a signature is required")
        return None
    if public_key is None:
        if required:
            raise SignatureError("a signature is required but no public key is configured to check it")
        return None  # signed, but nothing to check it against: treated as unsigned
    signing.verify(raw, sig_path.read_bytes(), public_key)
    return signing.key_id(public_key)


@dataclass
class Bundle:
    """A verified bundle on disk. From an archive it lives in a temp dir until ``close()``."""

    manifest: Manifest
    root: Path
    signer: str | None = None
    _cleanup: Any = field(default=None, repr=False)

    def file(self, name: str) -> Path:
        if name not in self.manifest.files:
            raise BundleError(f"bundle {self.manifest.name!r} has no file {name!r}")
        return self.root / name

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_bundle_path(ref: str | os.PathLike) -> bool:
    """Whether ``ref`` names a bundle file or directory rather than an installed model.

    A path has a ``/``, or ends in ``.eaigc`` and exists, or is an existing directory;
    anything else is a model name (names may contain dots: ``x.eaigc`` that is not a file
    here is the name of an installed model)."""
    text = os.fspath(ref)
    return "/" in text or os.sep in text or Path(text).is_dir() or (text.endswith(".eaigc") and Path(text).is_file())


def load_bundle(path: str | os.PathLike, public_key: Ed25519PublicKey | None = None,
                require_signature: bool | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Bundle:
    """Open a ``.eaigc`` archive (extracted to a temp dir) or an extracted bundle directory, verified."""
    path = Path(path)
    if path.is_dir():
        manifest, signer = verify_tree(path, public_key, require_signature)
        return Bundle(manifest, path, signer)
    tmp = Path(tempfile.mkdtemp(prefix="edge-aigc-bundle-"))
    try:
        extract_archive(path, tmp, max_bytes=max_bytes)
        manifest, signer = verify_tree(tmp, public_key, require_signature)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle = Bundle(manifest, tmp, signer)
    bundle._cleanup = weakref.finalize(bundle, shutil.rmtree, tmp, True)
    return bundle


@dataclass(frozen=True)
class BundleInfo:
    manifest: Manifest
    signed: bool
    archive_bytes: int


def inspect_bundle(path: str | os.PathLike) -> BundleInfo:
    """Read the manifest without extracting or verifying the model files."""
    path = Path(path)
    if path.is_dir():
        raw = (path / MANIFEST).read_bytes() if (path / MANIFEST).is_file() else None
        signed = (path / SIGNATURE).is_file()
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        raw = read_member(path, MANIFEST)
        signed = read_member(path, SIGNATURE, max_bytes=1024) is not None
        size = path.stat().st_size
    if raw is None:
        raise CorruptBundle(f"{path}: no {MANIFEST}; not a bundle")
    return BundleInfo(Manifest.from_json(raw), signed, size)


def resign_bundle(bundle: Bundle, out: str | os.PathLike, key: Ed25519PrivateKey,
                  compress: bool = True) -> None:
    """Write a verified bundle again with a new signature (the manifest bytes stay the same)."""
    raw = (bundle.root / MANIFEST).read_bytes()
    members: list[tuple[str, bytes | Path]] = [(MANIFEST, raw), (SIGNATURE, signing.sign(raw, key))]
    members += [(name, bundle.root / name) for name in sorted(bundle.manifest.files)]
    write_archive(out, members, compress=compress)


def repack_bundle(bundle: Bundle, out: str | os.PathLike, key: Ed25519PrivateKey | None = None,
                  files: Mapping[str, Path | bytes] | None = None, compress: bool = True,
                  **changes: Any) -> Manifest:
    """Write a copy of a verified bundle with other manifest fields (``version="2.0.0"``) and
    ``files`` added or replaced, signed with ``key`` if given: a new release of the same model
    (the OTA benchmark and tests push such copies)."""
    meta = {k: v for k, v in asdict(bundle.manifest).items() if k not in ("files", "size_bytes", "schema")}
    members: dict[str, Path | bytes] = {name: bundle.root / name for name in bundle.manifest.files}
    members.update(files or {})
    return pack_bundle(out, {**meta, **changes}, members, key=key, compress=compress)
