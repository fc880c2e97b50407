"""``edge-aigc push BUNDLE --device ID | --pool NAME``: install a bundle over MQTT.

One device, or a pool's members (the online devices whose retained status names the
pool) in batches that advance only while the success share holds and the failures stay
within the threshold. Prints each device's progress; ``--dry-run`` prints the plan and
sends nothing. Exit 0 when every device succeeded, 7 when one failed or the rollout
stopped. Device side and topics: edge_aigc/lifecycle/ota/, docs/deploy.md.
"""
from __future__ import annotations

import argparse
import sys
import threading
import uuid

from ..contract import JobState
from ..errors import RequestError, UsageError
from ..lifecycle.ota.job import CHUNK_BYTES_RANGE
from ..remote.push import BundleFile, PushResult, batches, pool_members, push, rollout
from .broker_options import add_broker_options, client_from_args

__all__ = ["register"]

MIB = 1 << 20


class ProgressLines:
    """One line per device each time its state changes or its download passes a tenth."""

    def __init__(self, width: int):
        self.width = width
        self._last: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, device: str, state: str, got: int, total: int) -> None:
        tenth = got * 10 // total if total else 0
        with self._lock:
            if self._last.get(device) == (state, tenth):
                return
            self._last[device] = (state, tenth)
            bar = "#" * (tenth * 2) + "-" * (20 - tenth * 2)
            print(f"{device:<{self.width}}  [{bar}] {tenth * 10:3d}%  {state}", flush=True)

    def done(self, result: PushResult) -> None:
        with self._lock:
            print(f"{result.device:<{self.width}}  {result.describe()}", flush=True)


def _push(args: argparse.Namespace) -> int:
    if not CHUNK_BYTES_RANGE[0] <= args.chunk_kb * 1024 <= CHUNK_BYTES_RANGE[1]:
        raise UsageError(f"--chunk-kb must be in [{CHUNK_BYTES_RANGE[0] // 1024}, {CHUNK_BYTES_RANGE[1] // 1024}]")
    if args.batch < 1 or not 0 <= args.success <= 1 or args.max_failures < 0:
        raise UsageError("--batch must be at least 1, --success in [0, 1], --max-failures at least 0")
    bundle = BundleFile.read(args.bundle)
    chunk = args.chunk_kb * 1024
    m = bundle.manifest
    print(f"push {m.name} {m.version} ({bundle.size / MIB:.2f} MB, sha256 {bundle.sha256[:16]}…, "
          f"{-(-bundle.size // chunk)} chunks of {args.chunk_kb} KiB){'' if args.activate else ', not activated'}")
    if args.device:
        devices = [args.device]
    else:
        with client_from_args(args) as client:
            devices = pool_members(client, args.pool, args.discover_s)
        if not devices:
            raise RequestError(f"no online device names pool {args.pool!r} in its retained status")
    plan = batches(devices, args.batch)
    where = f"device {args.device}" if args.device else f"pool {args.pool}: {len(devices)} device(s)"
    print(f"  {where} in {len(plan)} batch(es) of up to {args.batch}; stop past {args.max_failures} "
          f"failure(s) or below {args.success:.0%} success")
    for n, group in enumerate(plan, 1):
        print(f"  batch {n}: {' '.join(group)}")
    if args.dry_run:
        print("dry run: nothing sent")
        return 0
    progress = ProgressLines(max(len(d) for d in devices))
    run = uuid.uuid4().hex[:8]

    def push_one(device: str) -> PushResult:
        with client_from_args(args) as client:
            result = push(client, device, bundle, f"push-{run}-{device}"[:64], chunk, args.activate,
                          args.timeout, on_status=progress, url=args.url)
        progress.done(result)
        return result

    report = rollout(devices, push_one, args.batch, args.success, args.max_failures)
    ok = sum(r.ok for r in report.results)
    print(f"{ok} of {len(devices)} device(s) succeeded", end="")
    if report.stopped:
        print(f"; stopped: {report.stopped}; not sent to: {', '.join(report.skipped) or 'none'}", end="")
    print()
    failed = [r for r in report.results if r.state != JobState.SUCCEEDED]
    for r in failed:
        print(f"edge-aigc push: {r.device}: {r.describe()}", file=sys.stderr)
    return 0 if report.ok else RequestError.exit_code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="install a bundle on a device or a pool over MQTT (staged rollout)",
                       description="Send a bundle to `edge-aigc serve` devices: each verifies it (sha256, "
                                   "signature, budgets, a smoke generation) before it activates it, and "
                                   "keeps the old version otherwise. See docs/deploy.md.")
    p.add_argument("bundle", help="the .eaigc file to install")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--device", help="one device id")
    to.add_argument("--pool", help="every online device whose status names this pool")
    p.add_argument("--batch", type=int, default=1, help="devices updated at once (default 1)")
    p.add_argument("--success", type=float, default=0.9,
                   help="stop when the share of succeeded devices falls below this (default 0.9)")
    p.add_argument("--max-failures", type=int, default=0,
                   help="stop when more devices than this have failed (default 0)")
    p.add_argument("--no-activate", dest="activate", action="store_false",
                   help="install and check, but leave the current version active")
    p.add_argument("--url", help="have each device fetch the bundle from this http(s) URL (the same file; "
                                 "needs limits.ota_url_installs on the device) instead of sending chunks")
    p.add_argument("--chunk-kb", type=int, default=64, help="chunk size in KiB (1-1024, default 64)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one device may take (default 600)")
    p.add_argument("--discover-s", type=float, default=1.5, help="seconds to collect a pool's statuses")
    p.add_argument("--dry-run", action="store_true", help="print the plan (devices, batches) and send nothing")
    add_broker_options(p)
    p.set_defaults(func=_push)
