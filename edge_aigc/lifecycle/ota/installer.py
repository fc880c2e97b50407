"""The installer: one job per install, from the first chunk to the switch; no transport here.

A front end (MQTT today) hands it an install (:meth:`Installer.submit`), its chunks
(:meth:`Installer.receive`) and cancels; the installer answers through the front end's
:class:`InstallEvents`: events for the requester (``accepted``, ``need``, ``progress``, then a
``result`` or an ``error``) and the job's status for all to see. Receiving is in receive.py,
the records in job.py, the checks in verify.py; the switch runs on the service's worker between
two requests. The state machine is drawn in this package's ``__init__``.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ...contract import EventKind, JobState
from ...errors import BadRequest, Busy, Cancelled, Rejected, UnknownJob
from ...runtime.runtime import Runtime
from ...bundle.store import ModelStore
from . import receive
from .book import InstallEvents, JobBook
from .job import InstallJob, InstallSpec, save_job
from .verify import Checks

__all__ = ["Installer", "CRASH_ENV", "CRASH_POINTS", "INSTALLED"]

log = logging.getLogger(__name__)

MIB = 1 << 20
# Crash tests: SIGKILL the service when a job reaches this point (tests/e2e/test_ota_kill.py): a job
# state, or INSTALLED (verifying, just after the store installed the version inactive).
CRASH_ENV = "EDGE_AIGC_CRASH_AT"
INSTALLED = "installed"
CRASH_POINTS = (JobState.QUEUED, JobState.DOWNLOADING, JobState.VERIFYING, INSTALLED, JobState.ACTIVATING,
                JobState.SUCCEEDED)


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        log.warning("%s=%s: killing the service here", CRASH_ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)


class Installer:
    def __init__(self, state_dir: str | os.PathLike, store: ModelStore, runtime: Runtime, device_id: str,
                 between_requests: Callable[[Callable[[], Any]], Any], retry_s: float = 5.0,
                 idle_timeout_s: float = 600.0, max_jobs: int = 4, url_installs: bool = False):
        self.dir = Path(state_dir) / "ota"
        self.store, self.runtime = store, runtime
        self.checks = Checks(store, runtime.profile, runtime.threads)
        self.between_requests = between_requests
        self.retry_s, self.idle_timeout_s, self.max_jobs = retry_s, idle_timeout_s, max_jobs
        self.url_installs = url_installs
        self.book = JobBook(self.dir, device_id)  # the job records, and what is said of them
        self.jobs, self._lock = self.book.jobs, self.book.lock
        self._verify: list[InstallJob] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ota", daemon=True)

    @property
    def events(self) -> InstallEvents | None:
        return self.book.events

    @events.setter
    def events(self, events: InstallEvents) -> None:
        """The front end that speaks for the installer; set it before :meth:`start`."""
        self.book.events = events

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Load the job records; a job that was verifying or activating is checked again. (The
        store itself was recovered before the models loaded: serve/app.py.)"""
        for job in self.book.load():
            if job.state == JobState.QUEUED:  # accepted, then stopped before it asked for anything
                self.book.set(job, JobState.DOWNLOADING)
            if job.state in (JobState.VERIFYING, JobState.ACTIVATING) or (
                    not job.final and job.spec.chunks and job.received == job.spec.chunks):
                self._verify.append(job)
            elif job.spec.url and not job.final:
                self._start_fetch(job)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def announce_all(self) -> None:
        """Every job's status again (after a reconnect: retained messages do not survive every
        broker restart), and ask again for what downloading jobs miss."""
        with self._lock:
            for job in self.jobs.values():
                self.book.publish_status(job)
                if job.state == JobState.DOWNLOADING and not job.spec.url:
                    self._ask(job, again=True)

    # -- requests -------------------------------------------------------------------
    def submit(self, job_id: str, spec: InstallSpec, reply: dict[str, str]) -> None:
        """A new install, or a known job id again (which resumes that job, or gets its final
        answer again); raises BadRequest / Busy / Rejected for the client."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is not None:
                self._again(job, spec)
                return
            self._admit(spec)
            job = InstallJob(job_id, spec, reply)
            job.dir = self.dir / job_id
            receive.create_part(job)
            self.jobs[job.id] = job
            save_job(job)
            self.book.reply(job, EventKind.ACCEPTED, action="install", queue_position=0)
            self.book.publish_status(job)
            _crash_point(JobState.QUEUED)
            if spec.url:
                self.book.set(job, JobState.DOWNLOADING)
                self._start_fetch(job)
            else:
                self._ask(job)

    def _again(self, job: InstallJob, spec: InstallSpec) -> None:
        if job.spec != spec:
            raise BadRequest(f"install {job.id} exists with another bundle (sha256, size or "
                             "chunk size differ); use a new id")
        self.book.publish_status(job)
        if job.final:
            self.book.announce_final(job)
        elif job.state in (JobState.QUEUED, JobState.DOWNLOADING) and not job.spec.url:
            self._ask(job, again=True)

    def _admit(self, spec: InstallSpec) -> None:
        active = sum(not j.final for j in self.jobs.values())
        if active >= self.max_jobs:
            raise Busy(f"{active} installs are unfinished (limit {self.max_jobs}); try again later")
        if spec.url and not self.url_installs:
            raise BadRequest("this device does not fetch bundles from URLs (limits.ota_url_installs is "
                             "false); send the bundle in chunks instead (edge-aigc push without --url)")
        free = shutil.disk_usage(self.dir.parent if self.dir.parent.exists() else "/").free
        if free < 2 * spec.size:  # the part file, then the extracted version
            raise Rejected("space", f"a {spec.size / MIB:.1f} MB bundle needs {2 * spec.size / MIB:.1f} MB "
                                    f"free on the device; {free / MIB:.1f} MB is")

    def status(self, job_id: str) -> dict[str, Any]:
        """A job's status, with its outcome once final (``result`` or ``error``); UnknownJob."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise UnknownJob(f"no install job {job_id!r} on this device")
            status = job.status(self.book.device_id)
            if job.final:
                kind, fields = job.outcome(self.book.device_id)
                status["outcome"] = {"event": kind, **fields}
            return status

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.state not in (JobState.QUEUED, JobState.DOWNLOADING):
                return False
            self.book.finish(job, JobState.FAILED, "download", "cancelled", "cancelled")
            return True

    # -- chunks ---------------------------------------------------------------------
    def receive(self, job_id: str, n: int, data: bytes | None) -> None:
        """Chunk ``n`` of a job, checked by the front end (None: it arrived damaged)."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.state != JobState.DOWNLOADING or job.spec.url:
                return  # a late duplicate, or a stray message: nothing to do
            if n >= job.spec.chunks or job.have[n]:
                return
            job.asked.discard(n)
            if data is None or len(data) != receive.chunk_size(job, n):
                log.warning("install %s: chunk %d is damaged; asking again", job.id, n)
                self._ask(job)
                return
            if self._store_chunk(job, n, data) and len(job.asked) <= receive.WINDOW // 2:
                self._ask(job)

    def _store_chunk(self, job: InstallJob, n: int, data: bytes) -> bool:
        """Write chunk ``n`` and record it (under the lock); False once the bundle is complete."""
        receive.write_chunk(job, n, data)
        job.last_activity = time.monotonic()
        received = job.received
        if received == job.spec.chunks:
            self._progress(job, force=True)
            self.book.set(job, JobState.VERIFYING)
            self._verify.append(job)
            self._wake.set()
            return False
        if received == job.spec.chunks // 2:
            _crash_point(JobState.DOWNLOADING)
        self._progress(job)
        return True

    def _ask(self, job: InstallJob, again: bool = False) -> None:
        """A ``need`` event for the next missing chunks (``again``: also those asked before)."""
        want = receive.wanted(job, again)
        if job.state == JobState.QUEUED:
            self.book.set(job, JobState.DOWNLOADING)
        job.last_ask = time.monotonic()
        if want:
            self.book.reply(job, EventKind.NEED, chunks=receive.ranges(want), of=job.spec.chunks)

    def _progress(self, job: InstallJob, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - job.last_progress >= 0.5:
            job.last_progress = now
            self.book.reply(job, EventKind.PROGRESS, step=job.received, total=job.spec.chunks, message="downloading")
            self.book.publish_status(job)

    # -- fetching from a URL (limits.ota_url_installs) --------------------------------
    def _start_fetch(self, job: InstallJob) -> None:
        threading.Thread(target=self._fetch, args=(job,), name=f"ota-fetch-{job.id}", daemon=True).start()

    def _fetch(self, job: InstallJob) -> None:
        """The bundle from its URL (receive.fetch), failing the job after ``idle_timeout_s`` of nothing."""
        def accept(n: int, data: bytes) -> bool:
            with self._lock:
                if job.state != JobState.DOWNLOADING:
                    return False
                return bool(job.have[n]) or self._store_chunk(job, n, data)

        def give_up(idle: float) -> None:
            with self._lock:
                if job.state == JobState.DOWNLOADING:
                    missing = f"{job.spec.chunks - job.received} of {job.spec.chunks} chunks missing"
                    self.book.finish(job, JobState.FAILED, "download",
                                     f"the bundle URL gave nothing for {idle:.0f} s; {missing}", "timeout")

        receive.fetch(job, accept, give_up, self._stop, self.retry_s, self.idle_timeout_s)

    # -- the ota thread: timeouts, re-asks, verification ----------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(min(self.retry_s, 1.0))
            self._wake.clear()
            while True:
                with self._lock:
                    job = self._verify.pop(0) if self._verify else None
                if job is None:
                    break
                try:
                    self._check_and_activate(job)
                except Exception:  # a bug must not leave a job hanging
                    log.exception("install %s failed", job.id)
                    with self._lock:
                        self.checks.undo(job)
                        self.book.finish(job, JobState.FAILED, "verify",
                                         "unexpected error; the device log has the details", "internal")
            self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            for job in list(self.jobs.values()):
                if job.state != JobState.DOWNLOADING or job.spec.url:  # a fetch keeps its own time
                    continue
                idle = now - job.last_activity
                if idle > self.idle_timeout_s:
                    missing = job.spec.chunks - job.received
                    self.book.finish(job, JobState.FAILED, "download", f"no chunk arrived for {idle:.0f} s; "
                                     f"{missing} of {job.spec.chunks} chunks missing", "timeout")
                elif idle > self.retry_s and now - job.last_ask > self.retry_s:
                    self._ask(job, again=True)

    def _check_and_activate(self, job: InstallJob) -> None:
        if job.state == JobState.DOWNLOADING:  # every chunk was in when the service stopped
            with self._lock:
                self.book.set(job, JobState.VERIFYING)
        _crash_point(JobState.VERIFYING)
        try:
            switch = self._check(job)
        except Rejected as exc:
            with self._lock:
                self.checks.undo(job)
                self.book.finish(job, JobState.FAILED, exc.step, str(exc).split(": ", 1)[-1], exc.code)
            return
        if switch:
            with self._lock:
                self.book.set(job, JobState.ACTIVATING)
            if not self._switch(job):
                return
        self._succeed(job)

    def _check(self, job: InstallJob) -> bool:
        """Every check before the switch (verify.py); True when the new version is to be switched
        to (not already active, and the install asked for it). Raises Rejected naming the step."""
        part = job.dir / receive.PART
        self.checks.received(job, part)
        before = self.store.summary()
        installed = self.checks.install(part)
        m = installed.manifest
        old = before.get(m.name, {})
        with self._lock:
            if job.model is None:  # the first run; a run after a restart keeps what it recorded
                job.model, job.version, job.previous = m.name, m.version, old.get("active")
                job.installed_new = m.version not in old.get("versions", [])
            save_job(job)
        _crash_point(INSTALLED)
        self.checks.serves(installed)
        return job.previous != m.version and job.spec.activate

    def _switch(self, job: InstallJob) -> bool:
        """The store's active version, then the serving runtime, between two requests. False when
        the job is not finished here (stopping: the next start finishes it; failed: rolled back)."""
        try:
            self.store.activate(job.model, job.version)
            _crash_point(JobState.ACTIVATING)
            self.between_requests(lambda: self.runtime.reload(job.model))
        except Cancelled:  # the service is stopping: the next start finishes this job
            log.warning("install %s: stopping before %s %s was swapped in; resuming on restart", job.id,
                        job.model, job.version)
            return False
        except Exception as exc:
            log.error("install %s: activating %s %s failed (%s); rolling back", job.id, job.model,
                      job.version, exc)
            with self._lock:
                self.checks.restore(job)
                self.book.finish(job, JobState.ROLLED_BACK, "activate", f"the new version did not start "
                                 f"({type(exc).__name__}); {job.previous or 'no version'} is active again",
                                 "internal")
            return False
        job.activated = True
        self.store.prune(job.model)
        return True

    def _succeed(self, job: InstallJob) -> None:
        with self._lock:
            self.book.finish(job, JobState.SUCCEEDED, None, None, None)
        _crash_point(JobState.SUCCEEDED)
