"""The host side of over-the-air installs: one bundle to one device, and staged rollouts.

:func:`push` runs one install job (lifecycle/ota/ is the device side): it announces the
bundle, answers each ``need`` event with the chunks it names, and follows the job's
retained status until it is final. When the device goes quiet it sends the announcement
again, which resumes the job where it stopped (after a broker restart, say).

:func:`rollout` sends to a pool's members in batches, as hawkBit's staged rollouts do:
the next batch starts only while the success share holds and the failures stay within
the threshold; otherwise it stops and reports which devices it never touched.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..bundle.archive import read_member
from ..contract import FINAL_JOB_STATES, MANIFEST, Action, EventKind, JobState
from ..errors import CorruptBundle
from ..bundle.manifest import Manifest
from .client import DeviceClient
from ..serve.mqtt.protocol import CHUNK_BYTES, Topics, frame_chunk

__all__ = ["BundleFile", "PushResult", "Rollout", "push", "rollout", "pool_members", "batches"]

TIMED_OUT = "timed-out"  # a push's own outcome when the device never finished: not a device state


@dataclass(frozen=True)
class BundleFile:
    path: Path
    data: bytes
    sha256: str
    manifest: Manifest

    @classmethod
    def read(cls, path: str | Path) -> "BundleFile":
        path = Path(path)
        raw = read_member(path, MANIFEST)
        if raw is None:
            raise CorruptBundle(f"{path}: no {MANIFEST} in it; not a bundle")
        data = path.read_bytes()
        return cls(path, data, hashlib.sha256(data).hexdigest(), Manifest.from_json(raw))

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class PushResult:
    device: str
    job: str
    state: str                     # a final JobState, or TIMED_OUT
    step: str | None = None
    reason: str | None = None
    version: str | None = None
    previous: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state == JobState.SUCCEEDED

    def describe(self) -> str:
        if self.ok:
            was = f" (was {self.previous})" if self.previous and self.previous != self.version else ""
            return f"succeeded: {self.version} active{was} in {self.seconds:.1f} s"
        return f"{self.state}" + (f" at {self.step}: {self.reason}" if self.step else f": {self.reason}")


# on_status(device, state, received_chunks, total_chunks)
StatusCallback = Callable[[str, str, int, int], None]


def push(client: DeviceClient, device: str, bundle: BundleFile, job: str | None = None,
         chunk_bytes: int = CHUNK_BYTES, activate: bool = True, timeout: float = 600.0,
         quiet_s: float = 10.0, on_status: StatusCallback | None = None,
         send_chunk: Callable[[str, bytes], None] | None = None, url: str | None = None) -> PushResult:
    """Install ``bundle`` on ``device`` and wait for the job to end (or ``timeout``).
    With ``url`` the device fetches the bundle there itself (the same bytes as ``bundle``);
    else it asks for chunks. ``send_chunk(topic, framed)`` publishes one chunk (tests swap it
    to damage chunks)."""
    job = job or f"push-{uuid.uuid4().hex[:12]}"
    topics = Topics.for_device(client.root, device)
    reply, status_topic = topics.reply(job), topics.jobs(job)
    client.subscribe(reply)
    client.subscribe(status_topic)
    send_chunk = send_chunk or client.publish
    announce = json.dumps({"id": job, "action": Action.INSTALL, "sha256": bundle.sha256, "size": bundle.size,
                           "chunk_bytes": chunk_bytes, "activate": activate, **({"url": url} if url else {})}).encode()
    started = time.monotonic()
    deadline, heard = started + timeout, started
    client.publish(topics.cmd, announce)
    state, final_status = JobState.QUEUED, None
    while time.monotonic() < deadline:
        msg = client.next_message(min(1.0, deadline - time.monotonic()))
        now = time.monotonic()
        if msg is None:
            if final_status is not None and now - heard > 2.0:  # the final event was lost: the status says
                return _from_status(device, job, final_status, now - started)
            if now - heard > quiet_s:
                client.publish(topics.cmd, announce)  # resumes the job, or repeats its final answer
                heard = now
            continue
        if msg.topic not in (reply, status_topic) or not msg.payload:
            continue
        heard = now
        body = json.loads(msg.payload)
        if msg.topic == status_topic:
            state = body.get("state", state)
            if on_status:
                on_status(device, state, body.get("received") or 0, body.get("chunks") or 0)
            if state in FINAL_JOB_STATES:
                final_status = body
            continue
        kind = body.get("event")
        if kind == EventKind.NEED:
            for first, last in body["chunks"]:
                for i in range(first, last + 1):
                    send_chunk(topics.ota(job, i), frame_chunk(bundle.data[i * chunk_bytes:(i + 1) * chunk_bytes]))
        elif kind == EventKind.PROGRESS and on_status:
            on_status(device, JobState.DOWNLOADING, body["step"], body["total"])
        elif kind == EventKind.RESULT:
            return PushResult(device, job, body["state"], version=body.get("version"),
                              previous=body.get("previous"), seconds=round(now - started, 3))
        elif kind == EventKind.ERROR:
            return PushResult(device, job, body.get("state", JobState.FAILED), body.get("step"),
                              f"{body['code']}: {body['message']}", seconds=round(now - started, 3))
    return PushResult(device, job, TIMED_OUT, reason=f"the job did not end within {timeout:.0f} s "
                      f"(last state: {state})", seconds=round(time.monotonic() - started, 3))


def _from_status(device: str, job: str, status: dict, seconds: float) -> PushResult:
    return PushResult(device, job, status["state"], status.get("step"), status.get("reason"),
                      status.get("version"), status.get("previous"), round(seconds, 3))


def pool_members(client: DeviceClient, pool: str, wait_s: float = 1.5) -> list[str]:
    """The online devices whose retained status names ``pool`` (sorted by id)."""
    client.subscribe(f"{client.root}/+/status")
    members, deadline = set(), time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        msg = client.next_message(left)
        if msg is None or not msg.topic.endswith("/status") or not msg.payload:
            continue
        try:
            status = json.loads(msg.payload)
        except ValueError:
            continue
        if isinstance(status, dict) and status.get("pool") == pool and status.get("state") == "online":
            members.add(status.get("device") or msg.topic.split("/")[-2])
    return sorted(members)


def batches(devices: list[str], size: int) -> list[list[str]]:
    return [devices[i:i + size] for i in range(0, len(devices), size)]


@dataclass
class Rollout:
    results: list[PushResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # devices never sent to, once stopped
    stopped: str | None = None                         # why the rollout stopped early

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(r.ok for r in self.results)


def rollout(devices: list[str], push_one: Callable[[str], PushResult], batch: int = 1,
            success: float = 0.9, max_failures: int = 0,
            on_batch: Callable[[int, list[PushResult]], None] | None = None) -> Rollout:
    """Push to ``devices`` ``batch`` at a time; stop after a batch that leaves more than
    ``max_failures`` failed devices or a success share below ``success``."""
    report, plan = Rollout(), batches(devices, batch)
    for n, group in enumerate(plan):
        with ThreadPoolExecutor(max_workers=len(group)) as pool:
            done = list(pool.map(push_one, group))
        report.results += done
        if on_batch:
            on_batch(n, done)
        failed = sum(not r.ok for r in report.results)
        share = 1 - failed / len(report.results)
        if failed > max_failures or share < success:
            report.skipped = [d for g in plan[n + 1:] for d in g]
            report.stopped = (f"{failed} device(s) failed (threshold {max_failures}), success share "
                              f"{share:.0%} (needs {success:.0%})")
            break
    return report
