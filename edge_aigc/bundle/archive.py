"""Reading and writing bundle archives (tar, optionally gzip) without trusting them.

Extraction writes only regular files and directories, each opened with O_EXCL and
O_NOFOLLOW under the destination; it refuses absolute paths, "..", links, device
files, duplicate names, too many members and archives that expand past a cap, and
tells a truncated archive apart from a well-formed one.
"""
from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from pathlib import Path

from ..errors import CorruptBundle, UnsafeBundle
from .manifest import check_member_name

__all__ = ["extract_archive", "read_member", "write_archive", "DEFAULT_MAX_BYTES", "MAX_MEMBERS"]

DEFAULT_MAX_BYTES = 4 << 30
MAX_MEMBERS = 10_000
_CHUNK = 1 << 20
# What a damaged archive raises from tarfile, gzip and zlib while reading.
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except FileNotFoundError:
        raise CorruptBundle(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorruptBundle(f"{path}: is a directory, not a bundle archive") from None
    except _READ_ERRORS as exc:
        raise CorruptBundle(f"{path}: not a bundle (not a tar archive, or empty): {exc}") from None


def _check_member(member: tarfile.TarInfo, seen: set[str]) -> str:
    name = member.name.removeprefix("./")
    if why := check_member_name(name):
        raise UnsafeBundle(f"archive member {member.name!r} {why}; refusing to extract")
    if member.issym() or member.islnk():
        raise UnsafeBundle(f"archive member {name!r} is a link (to {member.linkname!r}); "
                           "bundles may hold only regular files")
    if member.ischr() or member.isblk() or member.isfifo():
        raise UnsafeBundle(f"archive member {name!r} is a device file or FIFO; refusing to extract")
    if not (member.isreg() or member.isdir()) or member.issparse():
        raise UnsafeBundle(f"archive member {name!r} is not a regular file or directory")
    if name.rstrip("/") in seen:
        raise UnsafeBundle(f"archive member {name!r} appears twice")
    seen.add(name.rstrip("/"))
    return name


def _check_end_marker(tar: tarfile.TarFile, path: Path) -> None:
    # tarfile treats a cut exactly between two members as a clean end; a real archive
    # ends with two 512-byte zero blocks, so their absence means truncation.
    tar.fileobj.seek(tar.offset)
    tail = tar.fileobj.read(1024)
    if len(tail) < 1024 or tail.strip(b"\0"):
        raise CorruptBundle(f"{path}: archive is truncated (no end-of-archive marker)")
    # Drain the record padding so gzip reaches its trailer and checks CRC and length.
    while tar.fileobj.read(_CHUNK):
        pass


def extract_archive(path: str | os.PathLike, dest: str | os.PathLike,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Extract into the existing empty directory ``dest``; returns the file names written."""
    path, dest = Path(path), Path(dest)
    seen: set[str] = set()
    written: list[str] = []
    total = 0
    with _open(path) as tar:
        try:
            for member in tar:
                name = _check_member(member, seen)
                if len(seen) > MAX_MEMBERS:
                    raise UnsafeBundle(f"{path}: more than {MAX_MEMBERS} archive members")
                target = dest / name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                total += member.size
                if total > max_bytes:
                    raise UnsafeBundle(f"{path}: expands past the {max_bytes:,}-byte cap; refusing")
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_member(tar, member, target)
                written.append(name)
            _check_end_marker(tar, path)
        except _READ_ERRORS as exc:
            raise CorruptBundle(f"{path}: archive is truncated or corrupt: {exc}") from None
    return written


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    src = tar.extractfile(member)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        copied = 0
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            copied += len(chunk)
    if copied != member.size:
        raise CorruptBundle(f"archive member {member.name!r} is truncated "
                            f"({copied} of {member.size} bytes)")


def read_member(path: str | os.PathLike, name: str, max_bytes: int = 1 << 20) -> bytes | None:
    """One small member's bytes without extracting the rest (None when absent)."""
    path = Path(path)
    with _open(path) as tar:
        try:
            for member in tar:
                if member.name.removeprefix("./") != name:
                    continue
                if not member.isreg():
                    raise UnsafeBundle(f"archive member {name!r} is not a regular file")
                if member.size > max_bytes:
                    raise UnsafeBundle(f"archive member {name!r} is larger than {max_bytes:,} bytes")
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise CorruptBundle(f"archive member {name!r} is truncated")
                return data
        except _READ_ERRORS as exc:
            raise CorruptBundle(f"{path}: archive is truncated or corrupt: {exc}") from None
    return None


def write_archive(out: str | os.PathLike, members: list[tuple[str, bytes | Path]],
                  compress: bool = True) -> None:
    """Write members in the given order, with fixed metadata so equal input gives equal bytes."""
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as raw:
        gz = gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) if compress else None
        with tarfile.open(fileobj=gz or raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, content in members:
                info = tarfile.TarInfo(name)
                info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
                if isinstance(content, bytes):
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
                else:
                    info.size = content.stat().st_size
                    with open(content, "rb") as f:
                        tar.addfile(info, f)
        if gz is not None:
            gz.close()
    os.replace(tmp, out)
