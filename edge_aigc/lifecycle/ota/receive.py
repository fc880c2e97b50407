"""Receiving a bundle into one part file, from chunks or a URL; no transport here.

Chunks go straight to ``<job dir>/bundle.part`` at their offset, and a one-byte-per-chunk map
says which are in, so a job resumes where it stopped after a restart. Whoever delivers a chunk
(the MQTT front end unframes and checks it first) calls :func:`write_chunk`; :func:`wanted`
says which to ask for next, a window at a time. :func:`fetch_from` reads the bundle from an
http(s) URL, resuming with a Range request.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import urllib.request
from typing import Callable

from ...contract import JobState
from .job import InstallJob

__all__ = ["PART", "MAP", "WINDOW", "create_part", "read_map", "write_chunk", "discard_part", "wanted",
           "ranges", "chunk_size", "fetch_from", "fetch"]

log = logging.getLogger(__name__)

PART, MAP = "bundle.part", "chunks.map"
WINDOW = 16                 # chunks asked for at a time


def create_part(job: InstallJob) -> None:
    """An empty part file of the bundle's size and a map with no chunk in."""
    job.dir.mkdir(parents=True, exist_ok=True)
    with open(job.dir / PART, "wb") as f:
        f.truncate(job.spec.size)
    (job.dir / MAP).write_bytes(bytes(job.spec.chunks))
    job.have = bytearray(job.spec.chunks)


def read_map(job: InstallJob) -> None:
    """Which chunks a recorded job has (none, if its map is gone)."""
    try:
        job.have = bytearray((job.dir / MAP).read_bytes())
    except FileNotFoundError:
        job.have = bytearray(job.spec.chunks)


def chunk_size(job: InstallJob, n: int) -> int:
    return min(job.spec.chunk_bytes, job.spec.size - n * job.spec.chunk_bytes)


def write_chunk(job: InstallJob, n: int, data: bytes) -> None:
    """Chunk ``n`` on disk, then marked in the map (the data is synced before the map says so)."""
    fd = os.open(job.dir / PART, os.O_WRONLY)
    try:
        os.pwrite(fd, data, n * job.spec.chunk_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(job.dir / MAP, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\x01", n)
    finally:
        os.close(fd)
    job.have[n] = 1


def discard_part(job: InstallJob) -> None:
    for name in (PART, MAP):
        (job.dir / name).unlink(missing_ok=True)


def wanted(job: InstallJob, again: bool = False) -> list[int]:
    """The next missing chunks not asked for yet, up to a window in flight (``again``: forget
    what was asked before). Marks them asked."""
    if again:
        job.asked.clear()
    want, i = [], job.have.find(0)
    while i != -1 and len(job.asked) + len(want) < WINDOW:
        if i not in job.asked:
            want.append(i)
        i = job.have.find(0, i + 1)
    job.asked.update(want)
    return want


def ranges(indices: list[int]) -> list[list[int]]:
    """Sorted chunk indices as inclusive [first, last] runs: [0, 1, 2, 5] -> [[0, 2], [5, 5]]."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs


def fetch_from(job: InstallJob, first: int, accept: Callable[[int, bytes], bool],
               stopped: Callable[[], bool]) -> None:
    """Read the bundle's URL from chunk ``first`` on, handing each chunk to ``accept`` (False:
    stop reading). Raises OSError or ValueError when the connection breaks or ends early."""
    spec = job.spec
    offset = first * spec.chunk_bytes
    request = urllib.request.Request(spec.url, headers={"Range": f"bytes={offset}-"} if offset else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        n = first if not offset or response.status == 206 else 0  # a server that ignores ranges: start over
        while n < spec.chunks and not stopped():
            data = response.read(chunk_size(job, n))
            if len(data) != chunk_size(job, n):
                raise ValueError(f"the response ended after {n * spec.chunk_bytes + len(data)} bytes")
            if not accept(n, data):
                return
            n += 1


def fetch(job: InstallJob, accept: Callable[[int, bytes], bool], give_up: Callable[[float], None],
          stop: threading.Event, retry_s: float, idle_timeout_s: float) -> None:
    """Download the bundle, resuming with a Range request after a broken connection, until it is
    complete, ``accept`` refuses, or nothing arrived for ``idle_timeout_s`` (``give_up(idle)``)."""
    while not stop.is_set() and job.state == JobState.DOWNLOADING:
        first = job.have.find(0)
        if first == -1:
            return
        try:
            fetch_from(job, first, accept, stop.is_set)
        except (OSError, ValueError) as exc:  # urllib's errors are OSErrors
            log.warning("install %s: download interrupted at chunk %d (%s); retrying", job.id, job.have.find(0), exc)
        idle = time.monotonic() - job.last_activity
        if job.state == JobState.DOWNLOADING and job.have.find(0) != -1 and idle > idle_timeout_s:
            give_up(idle)
            return
        stop.wait(retry_s)
