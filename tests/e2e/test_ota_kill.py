"""SIGKILL of the service at every step of an install, and 20 update/kill cycles in a row:
each leaves a store that loads on restart with exactly one active version, and the install
finishes after the restart (Mender's torture tests, scaled to a test run)."""
from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest

from edge_aigc.contract import MANIFEST
from edge_aigc.remote.client import DeviceClient
from edge_aigc.lifecycle.ota import CRASH_ENV, CRASH_POINTS
from edge_aigc.remote.push import BundleFile, push
from edge_aigc.bundle.store import ModelStore
from tests.helpers.ota import active_versions, device, versioned
from tests.helpers.service import serve_process
from tests.helpers.ota import served_version
from tests.helpers.ota import BundleServer


def start(cfg, broker, device_id: str, crash_at: str | None = None):
    """The service as its own process (so it can be killed); returns it once it is online."""
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    since = time.time()
    proc = serve_process(cfg, env)
    with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        client.subscribe(f"edge-aigc/{device_id}/status")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = client.next_message(1)
            if msg is not None and msg.payload:
                status = json.loads(msg.payload)
                if status["state"] == "online" and status["ts"] >= since:
                    return proc
            assert proc.poll() is None, f"the service exited with {proc.returncode} before it was online"
    raise AssertionError("the service did not come online within 60 s")


def one_active_version(state) -> dict[str, str]:
    """What a restart finds: every model has exactly one active version, complete and verified,
    and nothing half-written is left to be mistaken for one."""
    store = ModelStore(state)
    found = {}
    for name in store.names():
        bundle = store.open(name)  # re-verifies every file's sha256
        found[name] = bundle.manifest.version
        active = json.loads((store.root / name / "state.json").read_text())["active"]
        assert active == bundle.manifest.version
        for version_dir in (store.root / name).iterdir():
            if version_dir.is_dir():
                assert (version_dir / MANIFEST).is_file(), f"half-installed {version_dir.name} left behind"
    return found


class BackgroundPush(threading.Thread):
    """A push that outlives the device it started on: it announces again while the device is away."""

    def __init__(self, broker, device_id: str, bundle, job: str, url: str | None = None):
        super().__init__(daemon=True)
        self.args, self.result = (broker, device_id, BundleFile.read(bundle), job, url), None

    def run(self) -> None:
        broker, device_id, bundle, job, url = self.args
        with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
            self.result = push(client, device_id, bundle, job, chunk_bytes=16 << 10, quiet_s=1.0, timeout=120,
                               url=url)


def kill_and_restart(broker, cfg, device_id: str, state, bundle, job: str, crash_at: str,
                     url: str | None = None) -> tuple[dict, object]:
    proc = start(cfg, broker, device_id, crash_at)
    pusher = BackgroundPush(broker, device_id, bundle, job, url)
    pusher.start()
    try:
        assert proc.wait(60) == -9, f"the service was not killed at {crash_at}"
        after_kill = one_active_version(state)
        proc = start(cfg, broker, device_id)
        pusher.join(120)
        assert pusher.result is not None, "the push did not end after the restart"
        return after_kill, pusher.result
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_a_kill_at_any_step_leaves_one_active_version_and_the_install_finishes(broker, bundles, tmp_path,
                                                                               crash_at):
    device_id = f"kill-{crash_at}"
    v1 = versioned(bundles["image"], tmp_path, "1.0.0")
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", pad_bytes=256 << 10)
    cfg = device(tmp_path, broker.port, device_id, [v1])
    state = tmp_path / f"state-{device_id}"
    after_kill, result = kill_and_restart(broker, cfg, device_id, state, v2, f"job-{crash_at}", crash_at)
    expected_then = "2.0.0" if crash_at in ("activating", "succeeded") else "1.0.0"
    assert after_kill == {"tiny-dcgan": expected_then}
    assert result.ok, result.describe()
    assert one_active_version(state) == {"tiny-dcgan": "2.0.0"}
    assert not (state / "models" / ".staging").exists()


def test_twenty_update_kill_cycles_in_a_row_lose_nothing(broker, bundles, tmp_path):
    device_id = "kill-cycles"
    rng = random.Random(20)
    v1 = versioned(bundles["image"], tmp_path, "1.0.0")
    cfg = device(tmp_path, broker.port, device_id, [v1])
    state = tmp_path / f"state-{device_id}"
    for cycle in range(1, 21):
        bundle = versioned(bundles["image"], tmp_path, f"1.{cycle}.0")
        crash_at = rng.choice(CRASH_POINTS)
        _, result = kill_and_restart(broker, cfg, device_id, state, bundle, f"cycle-{cycle}", crash_at)
        assert result.ok, f"cycle {cycle} (killed at {crash_at}): {result.describe()}"
        assert one_active_version(state) == {"tiny-dcgan": f"1.{cycle}.0"}
    summary = ModelStore(state).summary()["tiny-dcgan"]
    assert (summary["active"], summary["previous"], summary["versions"]) == ("1.20.0", "1.19.0", ["1.19.0", "1.20.0"])
    proc = start(cfg, broker, device_id)
    try:
        assert served_version(broker, device_id) == "1.20.0"
    finally:
        proc.kill()
        proc.wait(10)
    assert active_versions(state) == {"tiny-dcgan": "1.20.0"}


@pytest.mark.parametrize("crash_at", ["queued", "downloading", "verifying"])
def test_a_url_install_killed_mid_way_resumes_its_download_after_the_restart(broker, bundles, tmp_path, crash_at):
    device_id = f"kill-url-{crash_at}"
    v1 = versioned(bundles["image"], tmp_path, "1.0.0")
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", pad_bytes=256 << 10)
    cfg = device(tmp_path, broker.port, device_id, [v1], limits={"ota_url_installs": "true"})
    state = tmp_path / f"state-{device_id}"
    server = BundleServer(v2)
    try:
        after_kill, result = kill_and_restart(broker, cfg, device_id, state, v2, f"job-url-{crash_at}", crash_at,
                                              url=server.url)
    finally:
        server.shutdown()
    assert after_kill == {"tiny-dcgan": "1.0.0"}
    assert result.ok, result.describe()
    assert one_active_version(state) == {"tiny-dcgan": "2.0.0"}
    if crash_at == "downloading":  # the second process asked for the rest only
        assert len(server.ranges) == 2 and server.ranges[0] == 0 and server.ranges[1] > 0
