"""Over-the-air updates: how long a 5 MB model update takes over loopback MQTT, by chunk size.

A private Mosquitto on a free loopback port; the device runs as its own process
(``edge-aigc serve``) serving the zoo's digits generator (a 5.2 MB bundle). Each timed
push installs a new version of it (the same bundle repacked as 1.<n>.0, unsigned: the
device allows unsigned bundles here so that no release key is needed), so every push
does the whole job: download, verify, smoke test, activate. Chunk sizes are interleaved
push by push. ``download`` runs from the announcement until the device reports
``verifying``; ``verify + activate`` is the rest.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from edge_aigc.serve.config import device_toml

from .common import Report, median, threads
from .service import PROFILE, serve, wait_online

__all__ = ["bench_ota", "CHUNK_KB"]

CHUNK_KB = (16, 64, 256)


def bench_ota(bundle: Path, repeats: int, progress=print) -> tuple[Report, dict]:
    from edge_aigc import load_bundle
    from edge_aigc.bundle.load import repack_bundle
    from edge_aigc.contract import JobState
    from edge_aigc.remote.local_brokers import Mosquitto
    from edge_aigc.remote.client import DeviceClient
    from edge_aigc.remote.push import BundleFile, push
    from edge_aigc.bundle.store import ModelStore

    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        tmp = Path(tmp)
        versions = []
        with load_bundle(bundle) as b:
            name = b.manifest.name
            for n in range(len(CHUNK_KB) * repeats + 1):
                out = tmp / f"{name}-1.{n}.0.eaigc"
                repack_bundle(b, out, version=f"1.{n}.0")
                versions.append(out)
        ModelStore(tmp / "state").install(versions[0])
        config = tmp / "device.toml"
        config.write_text(device_toml("bench", [name], f"mqtt://127.0.0.1:{broker.port}", profile=PROFILE,
                                      state_dir=str(tmp / "state"), allow_unsigned=True,
                                      limits={"metrics_interval_s": 60}))
        proc = serve(config)
        times: dict[int, list[tuple[float, float]]] = {kb: [] for kb in CHUNK_KB}
        try:
            wait_online(broker.port, time.perf_counter())
            pending = iter(versions[1:])
            with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
                for r in range(repeats):
                    for kb in CHUNK_KB:
                        marks: dict[str, float] = {}
                        on_status = lambda d, state, got, total: marks.setdefault(state, time.perf_counter())  # noqa: E731
                        start = time.perf_counter()
                        result = push(client, "bench", BundleFile.read(next(pending)), chunk_bytes=kb << 10,
                                      timeout=300, on_status=on_status)
                        end = time.perf_counter()
                        if not result.ok:
                            raise RuntimeError(f"ota bench: the push failed: {result.describe()}")
                        download = marks.get(JobState.VERIFYING, end) - start
                        times[kb].append((end - start, download))
                    progress(f"ota: round {r + 1}/{repeats} done")
        finally:
            proc.terminate()
            proc.wait(30)
    size = BundleFile.read(bundle).size
    report = Report(f"OTA update — {name} ({size / (1 << 20):.1f} MB) to a device over loopback Mosquitto, "
                    f"median of {repeats}", ["chunk KiB", "chunks", "update s", "download s",
                                             "verify + activate s", "download MB/s"])
    data = {"bundle_bytes": size, "repeats": repeats, "threads": threads(), "chunks": {}}
    for kb, runs in times.items():
        total, download = median([t for t, _ in runs]), median([d for _, d in runs])
        report.add(kb, -(-size // (kb << 10)), total, download, total - download, size / (1 << 20) / download)
        data["chunks"][kb] = {"update_s": [t for t, _ in runs], "download_s": [d for _, d in runs]}
    report.notes.append("verify + activate: whole-file sha256, the store's extract and per-file hashes, two "
                        "smoke generations, the atomic switch and the model swap between requests")
    return report, data
