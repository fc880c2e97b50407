"""The device's one worker: every front end's jobs in one bounded queue, run one at a time.

Models share the CPU, so generation runs on one thread. MQTT, HTTP and Home Assistant are
front ends: each turns its own message into a :class:`Job`, hands it to :meth:`Worker.submit`
(which checks the job's parameters *before* it takes a queue slot, so every front end refuses
a bad request the same way and at once), and listens to the job's events through the job's
:class:`Listener`. The installer's model swaps run here too, between two jobs
(:meth:`Worker.between_requests`), so a request in flight finishes on the version it started on.

The worker knows no transport: it never publishes, it only calls listeners. The shape follows
llama.cpp's server (a queue type the HTTP layer posts to and reads results from) and Frigate's
dispatcher (transports are peers, none hosts the others).
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..contract import Action
from ..errors import BadRequest, Busy, Cancelled, EdgeAigcError, RequestError, StoreError, UnknownModel
from ..runtime.runtime import Runtime
from ..tasks.base import CancelToken, Event, Result
from .ledger import RequestLedger, Stats

__all__ = ["Done", "Job", "JobEvents", "Listener", "Submitter", "Worker", "internal_error"]

log = logging.getLogger(__name__)

RUNS = (Action.GENERATE, Action.LOAD, Action.UNLOAD, Action.ROLLBACK)  # the actions a job can be


@dataclass(frozen=True)
class Done:
    """The end of a job that generates nothing (load, unload, rollback): its result's fields."""

    fields: dict[str, Any]


class Listener(Protocol):
    """Receives a job's events on the worker thread: Token, Progress and Chunk events, then
    exactly one final event, a Result, a Done or the RequestError that ended the job. It must
    not raise and should not block (hand the event to the front end's own thread or outbox)."""

    def __call__(self, event: Event | Done | RequestError) -> None: ...


class JobEvents:
    """A Listener for a front end on an asyncio loop (HTTP, Wyoming): one job's events, carried
    from the worker thread to the loop, read there with ``await events.next()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.events, self.done = loop, asyncio.Queue(), False

    def __call__(self, event: Any) -> None:  # the worker thread: must never raise
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server stopped
            pass

    async def next(self) -> Any:
        event = await self.events.get()
        if isinstance(event, (Result, RequestError)):
            self.done = True
        return event


@dataclass
class Job:
    """One request, as every front end hands it to the worker."""

    id: str
    action: Action
    model: str | None
    listener: Listener
    params: dict[str, Any] = field(default_factory=dict)
    task: str | None = None            # generate: one the model also serves (default: its own)
    owner: str = ""                    # whose chat sessions these are (each front end says)
    timeout_s: float | None = None     # at most limits.request_timeout_s
    received: float = field(default_factory=time.monotonic)


class Submitter(Protocol):
    """What a front end needs of the worker: submit and cancel jobs, the runtime to answer
    questions about models, the ledger for its own idempotency keys, and the queue's state."""

    rt: Runtime
    ledger: RequestLedger

    def submit(self, job: Job) -> int: ...

    def cancel(self, job_id: str) -> bool: ...

    def retry_after_s(self) -> int: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def queue_depth(self) -> int: ...


_Swap = tuple[Callable[[], Any], Future]


class Worker:
    def __init__(self, runtime: Runtime, queue_size: int, request_timeout_s: float, ledger: RequestLedger):
        self.rt, self.queue_size, self.request_timeout_s = runtime, queue_size, request_timeout_s
        self.ledger, self.stats = ledger, Stats()
        self._queue: queue.Queue[Job | _Swap | None] = queue.Queue(maxsize=queue_size)
        self._cancelled: set[str] = set()
        self._running: tuple[Job, CancelToken] | None = None
        self._stopping = threading.Event()
        self._watchers: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._work, name="worker", daemon=True)

    # -- what front ends read ------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._running is not None

    @property
    def running_id(self) -> str | None:
        running = self._running
        return running[0].id if running is not None else None

    def queued_ids(self) -> list[str]:
        return [j.id for j in list(self._queue.queue) if isinstance(j, Job)]

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def healthy(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the worker thread) whenever a job starts or ends."""
        self._watchers.append(callback)

    def metrics(self) -> dict[str, Any]:
        s = self.stats
        return {"queue_depth": self.queue_depth, "busy": self.busy, "done": s.done, "failed": s.failed,
                "rejected": s.rejected, "latency_ms": s.latency_ms(), "last_latency_ms": s.last_ms,
                "uptime_s": round(time.monotonic() - s.started, 1)}

    def retry_after_s(self) -> int:
        """Seconds a refused client should wait: the queue's length at the median latency."""
        p50 = self.stats.latency_ms().get("p50", 1000.0) / 1000
        return max(1, min(3600, round(p50 * max(self.queue_depth, 1) + 0.5)))

    # -- jobs in ---------------------------------------------------------------------------
    def check(self, job: Job) -> None:
        """Refuse a job the worker would refuse, before it is queued: an action that is not a
        job, an unknown model, parameters out of range (a loaded model's are checked in full)."""
        if job.action not in RUNS:
            raise BadRequest(f"{job.action} is not run on the worker")
        if job.action == Action.GENERATE:
            self.rt.check(job.model, job.task, job.params)

    def submit(self, job: Job) -> int:
        """Check and queue ``job``; returns its queue position. Raises the job's RequestError
        (BadRequest, UnknownModel, …), Busy when the queue is full, Cancelled when stopping."""
        if self._stopping.is_set():
            raise Cancelled("service is stopping")
        try:
            self.check(job)
            self._queue.put_nowait(job)
        except queue.Full:
            self.stats.rejected += 1
            raise Busy(f"the request queue is full ({self.queue_size} waiting); try again later") from None
        except RequestError:
            self.stats.rejected += 1
            raise
        return self._queue.qsize()

    def cancel(self, job_id: str) -> bool:
        """Stop a queued or running job; False when it is not here."""
        running = self._running
        if running is not None and running[0].id == job_id:
            running[1].cancel()
            return True
        if job_id in self.queued_ids():
            self._cancelled.add(job_id)
            return True
        return False

    def between_requests(self, fn: Callable[[], Any], timeout: float = 3600.0) -> Any:
        """Run ``fn`` on the worker between two jobs (a job in flight finishes first)."""
        if self._stopping.is_set():
            raise Cancelled("service is stopping")
        done: Future = Future()
        self._queue.put((fn, done), timeout=timeout)
        return done.result(timeout)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_timeout_s: float) -> None:
        """Refuse queued work, let the running job finish (or cancel it after the timeout)."""
        self._stopping.set()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                item[1].set_exception(Cancelled("service is stopping"))
            elif item is not None:
                self._end(item, Cancelled("service is stopping; request not run"))
        self._queue.put(None)
        self._thread.join(drain_timeout_s)
        running = self._running
        if self._thread.is_alive() and running is not None:
            running[1].cancel()
            self._thread.join(5)
        if self._thread.is_alive():
            log.warning("the worker did not stop within %.1f s of its cancel; going on", drain_timeout_s + 5)

    # -- the worker thread -----------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, tuple):  # a swap: between two jobs, never during one
                fn, done = item
                try:
                    done.set_result(fn())
                except BaseException as exc:
                    done.set_exception(exc)
            elif item.id in self._cancelled:
                self._cancelled.discard(item.id)
                self._end(item, Cancelled("cancelled before it started"))
            else:
                self._start(item)

    def _start(self, job: Job) -> None:
        limit = min(job.timeout_s or self.request_timeout_s, self.request_timeout_s)
        cancel = CancelToken(timeout=max(limit - (time.monotonic() - job.received), 1e-6))
        self._running = (job, cancel)
        self.ledger.set_state(job.id, "running")
        self._notify()
        try:
            self._run(job, cancel)
        except RequestError as exc:
            self._end(job, exc)
        except EdgeAigcError as exc:  # the device's fault (a refused bundle, a missing backend)
            log.error("request %s (%s %s) failed: %s", job.id, job.action, job.model, exc)
            self._end(job, internal_error(job.action, job.model, type(exc).__name__))
        except Exception:  # one failing job never takes the service down
            log.exception("request %s failed", job.id)
            self._end(job, internal_error(job.action, job.model, "unexpected error"))
        finally:
            self._running = None
            self._notify()

    def _run(self, job: Job, cancel: CancelToken) -> None:
        if job.action == Action.LOAD:
            name = self.rt.load_name(job.model)  # installed names only: clients never name device files
            self._end(job, Done({"model": name, "loaded": self.rt.loaded()}))
        elif job.action == Action.UNLOAD:
            self.rt.unload(job.model)
            self._end(job, Done({"model": job.model, "loaded": self.rt.loaded()}))
        elif job.action == Action.ROLLBACK:
            self._end(job, Done(self._rollback(job.model)))
        else:
            for ev in self.rt.stream(job.model, cancel, owner=job.owner, task=job.task, **job.params):
                if isinstance(ev, Result):
                    self._end(job, ev)
                else:
                    job.listener(ev)

    def _rollback(self, name: str) -> dict[str, Any]:
        """The previous version active and serving again."""
        store = self.rt.store
        if store is None or name not in store.names():
            raise UnknownModel(f"model {name!r} is not installed in the store")
        try:
            version = store.rollback(name)
        except StoreError as exc:
            raise BadRequest(str(exc)) from None
        self.rt.reload(name)
        return {"model": name, "version": version, "previous": store.summary()[name]["previous"]}

    def _end(self, job: Job, final: Result | Done | RequestError) -> None:
        # Stats first: a client may read the metrics within a millisecond of the answer.
        self.stats.record(time.monotonic() - job.received, not isinstance(final, RequestError))
        job.listener(final)

    def _notify(self) -> None:
        for callback in self._watchers:
            callback()


def internal_error(action: str, model: str | None, what: str) -> RequestError:
    """Code ``internal``, with a message that names no device path and quotes no device file:
    the details go to the device's log."""
    subject = f"{action} of {model!r}" if model else action
    return RequestError(f"{subject} failed on the device ({what}); the device log has the details")
