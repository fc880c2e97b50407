"""The install jobs on record, and what is said of them: every state change is written to the
job's record before it is announced, through the front end's :class:`InstallEvents`."""
from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Protocol

from ...contract import EventKind, JobState
from . import receive
from .job import RECORD, InstallJob, load_job, save_job

__all__ = ["InstallEvents", "JobBook", "KEEP_FINISHED"]

log = logging.getLogger(__name__)

KEEP_FINISHED = 32          # finished job records kept (a re-sent install gets its final answer)


class InstallEvents(Protocol):
    """How the installer speaks, implemented by the front end that drives it."""

    def reply(self, job: InstallJob, kind: EventKind, **fields: Any) -> None:
        """An event for whoever asked for ``job`` (its ``reply`` address is the front end's)."""

    def status(self, job_id: str, status: dict[str, Any] | None) -> None:
        """The job's current status for anyone watching (None: the job is forgotten)."""


class JobBook:
    def __init__(self, directory: Path, device_id: str):
        self.dir, self.device_id = directory, device_id
        self.events: InstallEvents | None = None  # set by the front end before the installer starts
        self.jobs: dict[str, InstallJob] = {}     # every job on record, finished ones too
        self.lock = threading.RLock()

    def load(self) -> Iterator[InstallJob]:
        """Every recorded job, into :attr:`jobs`. A directory without a record was never accepted
        (killed before its first record) and is removed; an unreadable record is kept aside."""
        for job_dir in sorted(self.dir.glob("*/")):
            if not (job_dir / RECORD).is_file():
                shutil.rmtree(job_dir, ignore_errors=True)
                continue
            try:
                job = load_job(job_dir)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("ignoring unreadable install record %s: %s", job_dir.name, exc)
                continue
            if not job.final:
                receive.read_map(job)
            self.jobs[job.id] = job
            yield job

    def set(self, job: InstallJob, state: str) -> None:
        job.state = state
        save_job(job)
        self.publish_status(job)

    def finish(self, job: InstallJob, state: str, step: str | None, reason: str | None, code: str | None) -> None:
        job.step, job.reason, job.code = step, reason, code
        job.seconds = round(time.monotonic() - job.started, 3)
        self.set(job, state)
        receive.discard_part(job)
        log.log(logging.INFO if state == JobState.SUCCEEDED else logging.WARNING, "install %s: %s%s", job.id,
                state, f" at {step}: {reason}" if step else f" ({job.model} {job.version})")
        self.announce_final(job)
        self._forget_old()

    def _forget_old(self) -> None:
        done = sorted((j for j in self.jobs.values() if j.final), key=lambda j: j.created)
        for job in done[:-KEEP_FINISHED]:
            del self.jobs[job.id]
            shutil.rmtree(job.dir, ignore_errors=True)
            self._events().status(job.id, None)

    def announce_final(self, job: InstallJob) -> None:
        kind, fields = job.outcome(self.device_id)
        self.reply(job, kind, **fields)

    def publish_status(self, job: InstallJob) -> None:
        self._events().status(job.id, job.status(self.device_id))

    def reply(self, job: InstallJob, kind: EventKind, **fields: Any) -> None:
        self._events().reply(job, kind, **fields)

    def _events(self) -> InstallEvents:
        if self.events is None:
            raise RuntimeError("the installer has no front end (set Installer.events before start)")
        return self.events
