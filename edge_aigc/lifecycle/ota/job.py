"""An install job and its record on disk (``<state>/ota/<job>/job.json``), versioned.

Version 1 (releases up to 2026-12-07) was the bare job dict with MQTT's ``reply_to`` and
``correlation`` as fields of their own. Version 2 wraps it (``records.save_record``) and keeps
the requester's address as one opaque ``reply`` object that only the front end that made the
job reads, so the installer itself knows no transport. Fields added later take their defaults
when an older record lacks them, and unknown fields are ignored: a new release never drops an
old job, and an old job never stops a new release.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...contract import FINAL_JOB_STATES, EventKind, JobState
from ...errors import BadRequest
from ...device.records import load_record, save_record
from ...tasks.params import is_text

__all__ = ["CHUNK_BYTES", "CHUNK_BYTES_RANGE", "INSTALL_FIELDS", "install_spec", "InstallSpec", "InstallJob", "RECORD", "RECORD_VERSION", "load_job", "save_job"]

CHUNK_BYTES = 64 << 10                   # an install's default chunk size
CHUNK_BYTES_RANGE = (1 << 10, 1 << 20)   # what a device accepts
MAX_INSTALL_BYTES = 4 << 30              # a bundle archive's cap (archive.DEFAULT_MAX_BYTES)
INSTALL_FIELDS = {"sha256", "size", "activate", "chunk_bytes", "url"}   # what an install request declares
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_JOB_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a job id names a directory on the device
RECORD = "job.json"
RECORD_VERSION = 2


@dataclass(frozen=True)
class InstallSpec:
    """What an install declares about the bundle it is about to send."""

    sha256: str
    size: int
    activate: bool = True
    chunk_bytes: int = CHUNK_BYTES
    url: str | None = None   # where the device fetches the bundle itself (else: chunks sent to it)

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_bytes)


@dataclass
class InstallJob:
    id: str
    spec: InstallSpec
    reply: dict[str, str] = field(default_factory=dict)  # where its answers go: the front end's own
    state: str = JobState.QUEUED
    model: str | None = None
    version: str | None = None
    previous: str | None = None
    activated: bool = False
    installed_new: bool = False             # the version was not in the store before this job
    step: str | None = None                 # the check that failed
    code: str | None = None
    reason: str | None = None
    created: float = field(default_factory=time.time)
    seconds: float | None = None
    # not recorded:
    dir: Path = field(default=Path(), repr=False, metadata={"runtime": True})
    have: bytearray = field(default_factory=bytearray, repr=False, metadata={"runtime": True})
    asked: set[int] = field(default_factory=set, repr=False, metadata={"runtime": True})
    last_activity: float = field(default_factory=time.monotonic, repr=False, metadata={"runtime": True})
    last_ask: float = field(default=0.0, metadata={"runtime": True})
    last_progress: float = field(default=0.0, metadata={"runtime": True})
    started: float = field(default_factory=time.monotonic, repr=False, metadata={"runtime": True})

    @property
    def received(self) -> int:
        return self.spec.chunks - self.have.count(0)

    @property
    def final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    def status(self, device_id: str) -> dict[str, Any]:
        """What anyone watching the job sees (its retained status)."""
        return {"job": self.id, "state": self.state, "device": device_id, "model": self.model,
                "version": self.version, "previous": self.previous, "activated": self.activated,
                "sha256": self.spec.sha256, "size": self.spec.size, "chunks": self.spec.chunks,
                "received": self.received, "step": self.step, "reason": self.reason, "seconds": self.seconds,
                "ts": round(time.time(), 3)}

    def outcome(self, device_id: str) -> tuple[EventKind, dict[str, Any]]:
        """The final event for whoever asked: a result, or the error naming the failed step."""
        if self.state == JobState.SUCCEEDED:
            return EventKind.RESULT, {"device": device_id, "state": self.state, "model": self.model,
                                      "version": self.version, "previous": self.previous,
                                      "activated": self.activated, "seconds": self.seconds}
        return EventKind.ERROR, {"code": self.code, "message": f"{self.step}: {self.reason}", "state": self.state,
                                 "step": self.step, "device": device_id}


RECORDED = tuple(f.name for f in fields(InstallJob) if not f.metadata.get("runtime") and f.name != "spec")


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """MQTT's reply topic and correlation data into the opaque ``reply`` address."""
    data = dict(data)
    topic, correlation = data.pop("reply_to", None), data.pop("correlation", None)
    data["reply"] = {k: v for k, v in (("topic", topic), ("correlation", correlation)) if v is not None}
    return data


MIGRATIONS = {1: _v1_to_v2}


def save_job(job: InstallJob) -> None:
    save_record(job.dir / RECORD, RECORD_VERSION,
                {"spec": asdict(job.spec), **{k: getattr(job, k) for k in RECORDED}})


def load_job(directory: Path) -> InstallJob:
    """The job recorded in ``directory`` (any record version). Raises FileNotFoundError, or
    ValueError / TypeError / KeyError for a record that is not a job's."""
    data = load_record(directory / RECORD, RECORD_VERSION, MIGRATIONS)
    job = InstallJob(spec=InstallSpec(**data["spec"]), **{k: data[k] for k in RECORDED if k in data})
    job.dir = directory
    return job


def install_spec(data: dict[str, Any], job: str) -> InstallSpec:
    """An install request's bundle fields (``INSTALL_FIELDS``), checked as every front end
    takes them; ``job`` is the job's id. Raises BadRequest naming the field."""
    if not _JOB_RE.match(job):
        raise BadRequest(f"install: the id names the job: 1-64 of A-Z a-z 0-9 _ -, starting with a "
                         f"letter or digit, got {job!r}")

    def integer(key: str, lo: int, hi: int, default: int | None = None) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise BadRequest(f"install: {key!r} must be an integer in [{lo}, {hi}], got {value!r}")
        return value

    digest = data.get("sha256")
    if not (isinstance(digest, str) and _SHA256_RE.match(digest)):
        raise BadRequest("install: 'sha256' must be the bundle's sha256 (64 lowercase hex digits)")
    activate = data.get("activate", True)
    if not isinstance(activate, bool):
        raise BadRequest(f"install: 'activate' must be true or false, got {activate!r}")
    return InstallSpec(digest, integer("size", 1, MAX_INSTALL_BYTES), activate,
                       integer("chunk_bytes", *CHUNK_BYTES_RANGE, default=CHUNK_BYTES), _bundle_url(data.get("url")))


def _bundle_url(url: Any) -> str | None:
    """An http(s) URL without credentials (they would show in logs and job records)."""
    if url is None:
        return None
    parts = urlsplit(url) if isinstance(url, str) and len(url) <= 2048 and is_text(url) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("install: 'url' must be an http:// or https:// URL of at most 2048 characters")
    if parts.username or parts.password:
        raise BadRequest("install: 'url' must not carry credentials")
    return url
