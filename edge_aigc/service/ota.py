"""Over-the-air installs: a bundle sent in MQTT chunks, verified, smoke-tested, then activated.

One install is one job, named by the request's id (docs/deploy.md, "Updating devices")::

    install request ─► queued ─► downloading ─► verifying ─► activating ─► succeeded
                                     │               │             └─────► rolled-back
                                     └───────────────┴───────────────────► failed

- **downloading**: the device asks for chunks with ``need`` events on the job's reply
  topic, a window at a time; the host publishes each on ``<root>/ota/<job>/<n>`` as
  ``sha256(data) ‖ data``. A chunk whose digest or length is wrong is dropped and asked
  for again; so is every missing one when nothing arrived for ``limits.ota_retry_s``.
  Chunks go straight to ``<state>/ota/<job>/bundle.part`` and a one-byte-per-chunk map,
  so a job resumes where it stopped after a broker or device restart.
- **verifying**: size, whole-file sha256, the profile's bundle budget, then the store's
  own install (archive safety, every file's hash, the Ed25519 signature against the
  device's pinned key) as an inactive version, the RSS budget, and the smoke generation
  and fidelity spot check (edge_aigc/smoke.py) on that version in a runtime of its own.
- **activating**: the store switches its active version (one atomic rename) and the
  serving runtime swaps the model between two requests, so a request in flight finishes
  on the version it started on and the old version serves until then.

Any refusal removes what the job installed; a failure after the switch rolls the store
back. Every state change is written to ``job.json`` before it is announced, and every step
is safe to run twice, so a job killed anywhere is finished on the next start.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..bundle import sha256_file
from ..contract import FINAL_JOB_STATES, EventKind, JobState
from ..errors import BadRequest, BundleError, Busy, Cancelled, Rejected, RequestError, SignatureError, StoreError
from ..profiles import Profile
from ..runtime import Runtime
from ..smoke import check_bundle
from ..store import ModelStore
from ..system import rss_mb
from .protocol import InstallSpec, Request, Topics, event, result_event

__all__ = ["Installer", "CRASH_ENV", "CRASH_POINTS", "frame_chunk"]

log = logging.getLogger(__name__)

WINDOW = 16                 # chunks asked for at a time
KEEP_FINISHED = 32          # finished job records kept (a re-sent install gets its final answer)
DIGEST = 32                 # a chunk starts with the sha256 of the rest
PART, MAP, RECORD = "bundle.part", "chunks.map", "job.json"
MIB = 1 << 20
# Crash tests: SIGKILL the service when the job reaches this point (tests/test_ota_kill.py).
CRASH_ENV = "EDGE_AIGC_CRASH_AT"
CRASH_POINTS = ("queued", "downloading", "verifying", "installed", "activating", "succeeded")


def frame_chunk(data: bytes) -> bytes:
    """A chunk as the device expects it: its sha256, then its bytes."""
    return hashlib.sha256(data).digest() + data


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        log.warning("%s=%s: killing the service here", CRASH_ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Job:
    id: str
    spec: InstallSpec
    reply_to: str
    correlation: str | None = None          # MQTT 5 CorrelationData, hex
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
    # not persisted:
    dir: Path = field(default=Path(), repr=False)
    have: bytearray = field(default_factory=bytearray, repr=False)
    asked: set[int] = field(default_factory=set, repr=False)
    last_activity: float = field(default_factory=time.monotonic, repr=False)
    last_ask: float = 0.0
    last_progress: float = 0.0
    started: float = field(default_factory=time.monotonic, repr=False)

    RECORDED = ("id", "reply_to", "correlation", "state", "model", "version", "previous", "activated",
                "installed_new", "step", "code", "reason", "created", "seconds")

    @property
    def received(self) -> int:
        return self.spec.chunks - self.have.count(0)

    @property
    def final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    def record(self) -> dict[str, Any]:
        return {"spec": asdict(self.spec), **{k: getattr(self, k) for k in self.RECORDED}}

    @classmethod
    def from_record(cls, data: dict[str, Any], directory: Path) -> "Job":
        job = cls(spec=InstallSpec(**data["spec"]), **{k: data[k] for k in cls.RECORDED})
        job.dir = directory
        if not job.final:
            try:
                job.have = bytearray((directory / MAP).read_bytes())
            except FileNotFoundError:
                job.have = bytearray(job.spec.chunks)
        return job


class Installer:
    def __init__(self, state_dir: str | os.PathLike, store: ModelStore, runtime: Runtime, topics: Topics,
                 device_id: str, send: Callable[..., None], between_requests: Callable[[Callable[[], Any]], Any],
                 retry_s: float = 5.0, idle_timeout_s: float = 600.0, max_jobs: int = 4,
                 url_installs: bool = False):
        self.dir = Path(state_dir) / "ota"
        self.store, self.runtime, self.topics, self.device_id = store, runtime, topics, device_id
        self.send, self.between_requests = send, between_requests
        self.retry_s, self.idle_timeout_s, self.max_jobs = retry_s, idle_timeout_s, max_jobs
        self.url_installs = url_installs
        self.jobs: dict[str, Job] = {}          # every job on record, finished ones too
        self._lock = threading.RLock()
        self._verify: list[Job] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ota", daemon=True)

    @property
    def profile(self) -> Profile | None:
        return self.runtime.profile

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Load the job records; a job that was verifying or activating is checked again. (The
        store itself was recovered before the models loaded: service/app.py.)"""
        for job_dir in sorted(self.dir.glob("*/")):
            if not (job_dir / RECORD).is_file():  # killed before its first record: never accepted
                shutil.rmtree(job_dir, ignore_errors=True)
                continue
            try:
                job = Job.from_record(json.loads((job_dir / RECORD).read_text()), job_dir)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("ignoring unreadable install record %s: %s", job_dir.name, exc)
                continue
            self.jobs[job.id] = job
            if job.state == JobState.QUEUED:  # accepted, then stopped before it asked for anything
                self._set(job, JobState.DOWNLOADING)
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

    def on_connected(self) -> None:
        """Republish every job's status (retained messages do not survive every broker restart)
        and ask again for what downloading jobs miss."""
        with self._lock:
            for job in self.jobs.values():
                self._publish_status(job)
                if job.state == JobState.DOWNLOADING and not job.spec.url:
                    self._ask(job, again=True)

    # -- requests -------------------------------------------------------------------
    def submit(self, req: Request) -> None:
        """An install request (the network thread). A known job id resumes that job, or gets its
        final answer again; raises Busy / Rejected for the client."""
        with self._lock:
            job = self.jobs.get(req.id)
            if job is not None:
                if job.spec != req.install:
                    raise BadRequest(f"install {req.id} exists with another bundle (sha256, size or "
                                     "chunk size differ); use a new id")
                self._publish_status(job)
                if job.final:
                    self._announce_final(job)
                elif job.state in (JobState.QUEUED, JobState.DOWNLOADING) and not job.spec.url:
                    self._ask(job, again=True)
                return
            active = sum(not j.final for j in self.jobs.values())
            if active >= self.max_jobs:
                raise Busy(f"{active} installs are unfinished (limit {self.max_jobs}); try again later")
            spec = req.install
            if spec.url and not self.url_installs:
                raise BadRequest("this device does not fetch bundles from URLs (limits.ota_url_installs is "
                                 "false); send the bundle in chunks instead (edge-aigc push without --url)")
            free = shutil.disk_usage(self.dir.parent if self.dir.parent.exists() else "/").free
            if free < 2 * spec.size:  # the part file, then the extracted version
                raise Rejected("space", f"a {spec.size / MIB:.1f} MB bundle needs {2 * spec.size / MIB:.1f} MB "
                                        f"free on the device; {free / MIB:.1f} MB is")
            job = Job(req.id, spec, req.reply_to, req.correlation.hex() if req.correlation else None)
            job.dir = self.dir / req.id
            job.dir.mkdir(parents=True, exist_ok=True)
            with open(job.dir / PART, "wb") as f:
                f.truncate(spec.size)
            (job.dir / MAP).write_bytes(bytes(spec.chunks))
            job.have = bytearray(spec.chunks)
            self.jobs[job.id] = job
            self._save(job)
            self._reply(job, event(EventKind.ACCEPTED, job.id, action="install", queue_position=0))
            self._publish_status(job)
            _crash_point("queued")
            if spec.url:
                self._set(job, JobState.DOWNLOADING)
                self._start_fetch(job)
            else:
                self._ask(job)

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.state not in (JobState.QUEUED, JobState.DOWNLOADING):
                return False
            self._finish(job, JobState.FAILED, "download", "cancelled", "cancelled")
            return True

    # -- chunks ---------------------------------------------------------------------
    def handles(self, topic: str) -> bool:
        return topic.startswith(self.topics.ota_prefix)

    def on_chunk(self, topic: str, payload: bytes) -> None:
        """A chunk from the network thread: checked, written, and the next ones asked for."""
        job_id, _, index = topic[len(self.topics.ota_prefix):].partition("/")
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.state != JobState.DOWNLOADING or job.spec.url or not index.isdigit():
                return  # a late duplicate, or a stray message: nothing to do
            n, spec = int(index), job.spec
            if n >= spec.chunks or job.have[n]:
                return
            data = payload[DIGEST:]
            expected = min(spec.chunk_bytes, spec.size - n * spec.chunk_bytes)
            if len(data) != expected or hashlib.sha256(data).digest() != payload[:DIGEST]:
                log.warning("install %s: chunk %d is damaged (%d bytes); asking again", job.id, n, len(data))
                job.asked.discard(n)
                self._ask(job)
                return
            job.asked.discard(n)
            if self._store_chunk(job, n, data) and len(job.asked) <= WINDOW // 2:
                self._ask(job)

    def _store_chunk(self, job: Job, n: int, data: bytes) -> bool:
        """Write chunk ``n`` and record it (under the lock); False once the bundle is complete."""
        fd = os.open(job.dir / PART, os.O_WRONLY)
        try:
            os.pwrite(fd, data, n * job.spec.chunk_bytes)
            os.fsync(fd)  # the data is on disk before the map says so
        finally:
            os.close(fd)
        fd = os.open(job.dir / MAP, os.O_WRONLY)
        try:
            os.pwrite(fd, b"\x01", n)
        finally:
            os.close(fd)
        job.have[n] = 1
        job.last_activity = time.monotonic()
        received = job.received
        if received == job.spec.chunks:
            self._progress(job, force=True)
            self._set(job, JobState.VERIFYING)
            self._verify.append(job)
            self._wake.set()
            return False
        if received == job.spec.chunks // 2:
            _crash_point("downloading")
        self._progress(job)
        return True

    # -- fetching from a URL (limits.ota_url_installs) --------------------------------
    def _start_fetch(self, job: Job) -> None:
        threading.Thread(target=self._fetch, args=(job,), name=f"ota-fetch-{job.id}", daemon=True).start()

    def _fetch(self, job: Job) -> None:
        """Download the bundle, resuming with a Range request after a broken connection, until it
        is complete or nothing arrived for ``idle_timeout_s``."""
        while not self._stop.is_set() and job.state == JobState.DOWNLOADING:
            first = job.have.find(0)
            if first == -1:
                return
            try:
                self._fetch_from(job, first)
            except (OSError, ValueError) as exc:  # urllib's errors are OSErrors
                log.warning("install %s: download interrupted at chunk %d (%s); retrying", job.id,
                            job.have.find(0), exc)
            with self._lock:
                idle = time.monotonic() - job.last_activity
                if job.state == JobState.DOWNLOADING and job.have.find(0) != -1 and idle > self.idle_timeout_s:
                    self._finish(job, JobState.FAILED, "download", f"the bundle URL gave nothing for "
                                 f"{idle:.0f} s; {job.spec.chunks - job.received} of {job.spec.chunks} "
                                 "chunks missing", "timeout")
                    return
            self._stop.wait(self.retry_s)

    def _fetch_from(self, job: Job, first: int) -> None:
        spec = job.spec
        offset = first * spec.chunk_bytes
        request = urllib.request.Request(spec.url, headers={"Range": f"bytes={offset}-"} if offset else {})
        with urllib.request.urlopen(request, timeout=30) as response:
            if offset and response.status != 206:  # the server ignored the range: start over
                offset, first = 0, 0
            n = first
            while n < spec.chunks and not self._stop.is_set():
                expected = min(spec.chunk_bytes, spec.size - n * spec.chunk_bytes)
                data = response.read(expected)
                if len(data) != expected:
                    raise ValueError(f"the response ended after {n * spec.chunk_bytes + len(data)} bytes")
                with self._lock:
                    if job.state != JobState.DOWNLOADING:
                        return
                    if not job.have[n] and not self._store_chunk(job, n, data):
                        return
                n += 1

    def _ask(self, job: Job, again: bool = False) -> None:
        """A ``need`` event for the next missing chunks (``again``: also those asked before)."""
        if again:
            job.asked.clear()
        want, i = [], job.have.find(0)
        while i != -1 and len(job.asked) + len(want) < WINDOW:
            if i not in job.asked:
                want.append(i)
            i = job.have.find(0, i + 1)
        if job.state == JobState.QUEUED:
            self._set(job, JobState.DOWNLOADING)
        job.last_ask = time.monotonic()
        if not want:
            return
        job.asked.update(want)
        self._reply(job, event(EventKind.NEED, job.id, chunks=_ranges(want), of=job.spec.chunks,
                               topic=self.topics.ota(job.id)))

    def _progress(self, job: Job, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - job.last_progress >= 0.5:
            job.last_progress = now
            self._reply(job, event(EventKind.PROGRESS, job.id, step=job.received, total=job.spec.chunks,
                                   message="downloading"))
            self._publish_status(job)

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
                        self._undo(job)
                        self._finish(job, JobState.FAILED, "verify", "unexpected error; the device log "
                                                                     "has the details", "internal")
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
                    self._finish(job, JobState.FAILED, "download", f"no chunk arrived for {idle:.0f} s; "
                                 f"{missing} of {job.spec.chunks} chunks missing", "timeout")
                elif idle > self.retry_s and now - job.last_ask > self.retry_s:
                    self._ask(job, again=True)

    def _check_and_activate(self, job: Job) -> None:
        if job.state == JobState.DOWNLOADING:  # every chunk was in when the service stopped
            with self._lock:
                self._set(job, JobState.VERIFYING)
        _crash_point("verifying")
        try:
            manifest_path = self._check(job)
        except Rejected as exc:
            with self._lock:
                self._undo(job)
                self._finish(job, JobState.FAILED, exc.step, str(exc).split(": ", 1)[-1], exc.code)
            return
        if manifest_path is None:  # nothing to switch: already active, or activate = false
            self._succeed(job)
            return
        with self._lock:
            self._set(job, JobState.ACTIVATING)
        try:
            self.store.activate(job.model, job.version)
            _crash_point("activating")
            self.between_requests(lambda: self.runtime.reload(job.model))
        except Cancelled:  # the service is stopping: the next start finishes this job
            log.warning("install %s: stopping before %s %s was swapped in; resuming on restart", job.id,
                        job.model, job.version)
            return
        except Exception as exc:
            log.error("install %s: activating %s %s failed (%s); rolling back", job.id, job.model,
                      job.version, exc)
            with self._lock:
                self._restore(job)
                self._finish(job, JobState.ROLLED_BACK, "activate", f"the new version did not start "
                             f"({type(exc).__name__}); {job.previous or 'no version'} is active again", "internal")
            return
        job.activated = True
        self.store.prune(job.model)
        self._succeed(job)

    def _check(self, job: Job) -> Path | None:
        """Every check before the switch; returns the installed version's path, or None when no
        switch is needed. Raises Rejected naming the step."""
        part, spec = job.dir / PART, job.spec
        size = part.stat().st_size
        if size != spec.size:
            raise Rejected("size", f"received {size} bytes, the install announced {spec.size}")
        digest = sha256_file(part)
        if digest != spec.sha256:
            raise Rejected("sha256", f"the bundle received hashes to {digest[:16]}…, not the announced "
                                     f"{spec.sha256[:16]}… (a chunk was altered, or the announcement is wrong)")
        budget = self.profile.budget if self.profile else None
        if budget and size > budget.max_bundle_mb * MIB:
            raise Rejected("budget", f"the bundle is {size / MIB:.1f} MB, over profile {self.profile.name}'s "
                                     f"{budget.max_bundle_mb} MB bundle budget")
        before = self.store.summary()
        try:
            installed = self.store.install(part, activate=False)
        except SignatureError as exc:
            raise Rejected("signature", self._scrub(exc, part)) from None
        except BundleError as exc:
            raise Rejected("contents", self._scrub(exc, part)) from None
        except StoreError as exc:
            raise Rejected("store", self._scrub(exc, part)) from None
        m = installed.manifest
        old = before.get(m.name, {})
        with self._lock:
            if job.model is None:  # the first run; a run after a restart keeps what it recorded
                job.model, job.version, job.previous = m.name, m.version, old.get("active")
                job.installed_new = m.version not in old.get("versions", [])
            self._save(job)
        _crash_point("installed")
        if budget:
            estimate = (rss_mb() or 0.0) + m.size_bytes / MIB  # both versions are open during the switch
            if estimate > budget.max_rss_mb:
                raise Rejected("budget", f"serving {m.name} {m.version} beside what runs now needs about "
                                         f"{estimate:.0f} MB, over profile {self.profile.name}'s "
                                         f"{budget.max_rss_mb} MB RSS budget")
        check_bundle(installed.path, m, self.profile, self.runtime.threads)
        if job.previous == m.version or not spec.activate:  # active before this job, or not to be
            return None
        return installed.path

    def _scrub(self, exc: Exception, part: Path) -> str:
        """An error's message without device paths."""
        return str(exc).replace(str(part), "the bundle").replace(str(self.store.root), "the store")

    def _undo(self, job: Job) -> None:
        """Remove a version this job installed and never activated."""
        if job.model and job.installed_new:
            try:
                if self.store.summary().get(job.model, {}).get("active") is None:
                    self.store.remove(job.model)
                else:
                    self.store.remove(job.model, job.version)
            except (StoreError, RequestError) as exc:
                log.error("install %s: could not remove %s %s: %s", job.id, job.model, job.version, exc)

    def _restore(self, job: Job) -> None:
        """After a failed switch: the previous version active again, the new one removed."""
        try:
            if job.previous:
                self.store.activate(job.model, job.previous)
                self.store.remove(job.model, job.version)
            else:
                self.store.remove(job.model)
        except (StoreError, RequestError) as exc:
            log.error("install %s: rollback of %s failed: %s", job.id, job.model, exc)

    def _succeed(self, job: Job) -> None:
        with self._lock:
            self._finish(job, JobState.SUCCEEDED, None, None, None)
        _crash_point("succeeded")

    # -- records and announcements ----------------------------------------------------
    def _set(self, job: Job, state: str) -> None:
        job.state = state
        self._save(job)
        self._publish_status(job)

    def _save(self, job: Job) -> None:
        tmp = job.dir / (RECORD + ".tmp")
        tmp.write_text(json.dumps(job.record(), indent=1) + "\n")
        os.replace(tmp, job.dir / RECORD)

    def _finish(self, job: Job, state: str, step: str | None, reason: str | None, code: str | None) -> None:
        job.step, job.reason, job.code = step, reason, code
        job.seconds = round(time.monotonic() - job.started, 3)
        self._set(job, state)
        for name in (PART, MAP):
            (job.dir / name).unlink(missing_ok=True)
        log.log(logging.INFO if state == JobState.SUCCEEDED else logging.WARNING, "install %s: %s%s", job.id,
                state, f" at {step}: {reason}" if step else f" ({job.model} {job.version})")
        self._announce_final(job)
        self._forget_old()

    def _forget_old(self) -> None:
        done = sorted((j for j in self.jobs.values() if j.final), key=lambda j: j.created)
        for job in done[:-KEEP_FINISHED]:
            del self.jobs[job.id]
            shutil.rmtree(job.dir, ignore_errors=True)
            self.send(self.topics.jobs(job.id), b"", retain=True)  # clears the retained status

    def _announce_final(self, job: Job) -> None:
        if job.state == JobState.SUCCEEDED:
            payload = result_event(job.id, [], device=self.device_id, state=job.state, model=job.model,
                                   version=job.version, previous=job.previous, activated=job.activated,
                                   seconds=job.seconds)
        else:
            payload = event(EventKind.ERROR, job.id, code=job.code, message=f"{job.step}: {job.reason}",
                            state=job.state, step=job.step, device=self.device_id)
        self._reply(job, payload)

    def status(self, job: Job) -> dict[str, Any]:
        return {"job": job.id, "state": job.state, "device": self.device_id, "model": job.model,
                "version": job.version, "previous": job.previous, "activated": job.activated,
                "sha256": job.spec.sha256, "size": job.spec.size, "chunks": job.spec.chunks,
                "received": job.received,
                "step": job.step, "reason": job.reason, "seconds": job.seconds, "ts": round(time.time(), 3)}

    def _publish_status(self, job: Job) -> None:
        self.send(self.topics.jobs(job.id), json.dumps(self.status(job)).encode(), retain=True)

    def _reply(self, job: Job, payload: bytes) -> None:
        self.send(job.reply_to, payload, correlation=bytes.fromhex(job.correlation) if job.correlation else None)


def _ranges(indices: list[int]) -> list[list[int]]:
    """Sorted chunk indices as inclusive [first, last] runs: [0, 1, 2, 5] -> [[0, 2], [5, 5]]."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs
