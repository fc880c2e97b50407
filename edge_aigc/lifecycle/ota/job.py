"""An install job and its record on disk (``<state>/ota/<job>/job.json``), versioned.

Version 1 (releases up to 2026-12-07) was the bare job dict with MQTT's ``reply_to`` and
``correlation`` as fields of their own. Version 2 wraps it (``records.save_record``) and keeps
the requester's address as one opaque ``reply`` object that only the front end that made the
job reads, so the installer itself knows no transport. Fields added later take their defaults
when an older record lacks them, and unknown fields are ignored: a new release never drops an
old job, and an old job never stops a new release.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ...contract import FINAL_JOB_STATES, EventKind, JobState
from ...device.records import load_record, save_record

__all__ = ["CHUNK_BYTES", "InstallSpec", "InstallJob", "RECORD", "RECORD_VERSION", "load_job", "save_job"]

CHUNK_BYTES = 64 << 10     # an install's default chunk size
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
