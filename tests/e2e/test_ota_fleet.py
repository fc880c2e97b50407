"""Updates beyond one clean transfer: a broker restart mid-transfer, rollback, bad install
requests, and a staged pool rollout through `edge-aigc push` that stops at its threshold."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from contextlib import ExitStack

import pytest

from edge_aigc.contract import JobState
from edge_aigc.remote.local_brokers import Mosquitto
from edge_aigc.remote.client import DeviceClient
from edge_aigc.remote.push import BundleFile, push
from tests.helpers.ota import MIB, active_versions, device, push_file, versioned
from tests.helpers.service import running_service
from tests.helpers.ota import served_version


@pytest.fixture
def v1(bundles, tmp_path):
    return versioned(bundles["image"], tmp_path, "1.0.0")


def test_a_broker_restart_mid_transfer_resumes_the_install(bundles, tmp_path, v1):
    broker = Mosquitto(tmp_path / "broker").start()  # no persistence: sessions and retained are lost
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", pad_bytes=2 * MIB)
    cfg = device(tmp_path, broker.port, "ota-restart", [v1])
    restarted = threading.Event()
    try:
        with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
            def send(topic: str, framed: bytes) -> None:
                client.publish(topic, framed)
                if topic.endswith("/10") and not restarted.is_set():
                    restarted.set()
                    broker.stop()
                    broker.start()  # same port

            result = push(client, "ota-restart", BundleFile.read(v2), send_chunk=send, quiet_s=2, timeout=90)
            assert restarted.is_set()
            assert result.ok, result.describe()
            assert served_version(broker, "ota-restart") == "2.0.0"
    finally:
        broker.stop()


def test_rollback_makes_the_previous_version_serve_again(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0")
    cfg = device(tmp_path, broker.port, "ota-rollback", [v1])
    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        assert push(client, "ota-rollback", BundleFile.read(v2)).ok
        assert served_version(broker, "ota-rollback") == "2.0.0"
        r = client.request("ota-rollback", "rollback", "tiny-dcgan", timeout=20)
        assert r.ok and (r.final["version"], r.final["previous"]) == ("1.0.0", "2.0.0")
        assert served_version(broker, "ota-rollback") == "1.0.0"
        versions = client.request("ota-rollback", "models", timeout=10).final["versions"]
        assert versions["tiny-dcgan"] == {"active": "1.0.0", "previous": "2.0.0", "versions": ["1.0.0", "2.0.0"]}
        again = client.request("ota-rollback", "rollback", "tiny-dcgan", timeout=20)  # back to 2.0.0
        assert again.ok and again.final["version"] == "2.0.0"
        unknown = client.request("ota-rollback", "rollback", "nope", timeout=20)
        assert unknown.final["code"] == "unknown_model"
    assert active_versions(tmp_path / "state-ota-rollback") == {"tiny-dcgan": "2.0.0"}


@pytest.mark.parametrize("fields, says", [
    ({"sha256": "00" * 31, "size": 10}, "'sha256'"),
    ({"sha256": "AB" * 32, "size": 10}, "'sha256'"),
    ({"sha256": "ab" * 32, "size": 0}, "'size'"),
    ({"sha256": "ab" * 32, "size": True}, "'size'"),
    ({"sha256": "ab" * 32, "size": 10, "chunk_bytes": 100}, "'chunk_bytes'"),
    ({"sha256": "ab" * 32, "size": 10, "chunk_bytes": 2 << 20}, "'chunk_bytes'"),
    ({"sha256": "ab" * 32, "size": 10, "activate": "yes"}, "'activate'"),
    ({"sha256": "ab" * 32, "size": 10, "chunks": 3}, "unknown field 'chunks'"),
    ({"sha256": "ab" * 32, "size": 10 * (1 << 40)}, "'size'"),
])
def test_a_malformed_install_is_a_bad_request(broker, tmp_path, fields, says, v1):
    cfg = device(tmp_path, broker.port, "ota-bad", [v1])
    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        r = client.request("ota-bad", "install", timeout=10, **fields)
        assert r.final["code"] == "bad_request" and says in r.final["message"], r.final
        assert served_version(broker, "ota-bad") == "1.0.0"
    assert not (tmp_path / "state-ota-bad" / "ota").exists()  # nothing was written


def test_install_fields_belong_to_install_and_a_job_id_names_no_path(broker, tmp_path, v1):
    cfg = device(tmp_path, broker.port, "ota-fields", [v1])
    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        r = client.request("ota-fields", "status", timeout=10, sha256="ab" * 32)
        assert r.final["code"] == "bad_request" and "unknown field 'sha256'" in r.final["message"]
        for job in ("..", ".hidden", "a:b"):
            r = client.request("ota-fields", "install", request_id=job, timeout=10, sha256="ab" * 32, size=10)
            assert r.final["code"] == "bad_request" and "names the job" in r.final["message"], job
    assert not (tmp_path / "state-ota-fields" / "ota").exists()


def test_a_pool_rollout_stops_at_the_device_that_rejects(broker, bundles, tmp_path, keypair, v1):
    """4 devices in a pool, batches of 1; the second pins a key the bundle is not signed with."""
    pool = f"fleet-{uuid.uuid4().hex[:6]}"
    v2 = versioned(bundles["image"], tmp_path, "2.0.0")
    (tmp_path / "signed").mkdir()
    v1_signed = versioned(bundles["image"], tmp_path / "signed", "1.0.0", key=keypair[0])
    ids = [f"{pool}-{c}" for c in "abcd"]
    cfgs = [device(tmp_path / i, broker.port, i, [v1_signed if n == 1 else v1], pool=pool,
                   pub=keypair[1] if n == 1 else None) for n, i in enumerate(ids)]
    cmd = [sys.executable, "-m", "edge_aigc", "push", str(v2), "--pool", pool, "--batch", "1",
           "--broker", f"mqtt://127.0.0.1:{broker.port}"]
    with ExitStack() as stack:
        for cfg in cfgs:
            stack.enter_context(running_service(cfg))
        plan = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, timeout=60)
        assert plan.returncode == 0, plan.stderr
        assert f"pool {pool}: 4 device(s) in 4 batch(es)" in plan.stdout
        assert [line.split()[-1] for line in plan.stdout.splitlines() if "batch " in line and ":" in line
                and line.strip().startswith("batch")] == ids
        assert not any((tmp_path / i / f"state-{i}" / "ota").exists() for i in ids)  # dry run: nothing sent

        run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        assert run.returncode == 7, run.stdout + run.stderr
        assert "1 of 4 device(s) succeeded; stopped: 1 device(s) failed" in run.stdout
        assert f"not sent to: {ids[2]}, {ids[3]}" in run.stdout
        assert f"{ids[1]}: failed at signature" in run.stderr
        assert "[####################] 100%  succeeded" in run.stdout  # the first device's progress
        assert [served_version(broker, i) for i in ids] == ["2.0.0", "1.0.0", "1.0.0", "1.0.0"]
    assert not (tmp_path / ids[2] / f"state-{ids[2]}" / "ota").exists()


def test_the_job_status_is_retained_for_late_subscribers(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0")
    cfg = device(tmp_path, broker.port, "ota-retained", [v1])
    with running_service(cfg):
        result = push_file(broker, "ota-retained", v2, job="job-retained")
        assert result.ok
        with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as late:
            late.subscribe("edge-aigc/ota-retained/jobs/job-retained")
            msg = late.next_message(5)
    status = json.loads(msg.payload)
    assert msg.retain and status["state"] == JobState.SUCCEEDED
    assert (status["model"], status["version"], status["previous"], status["activated"]) == \
        ("tiny-dcgan", "2.0.0", "1.0.0", True)
    assert status["received"] == status["chunks"] == -(-BundleFile.read(v2).size // (64 << 10))


def test_a_push_can_bring_a_model_the_device_never_had(broker, bundles, tmp_path, v1):
    blend = versioned(bundles["blend"], tmp_path, "1.0.0")
    cfg = device(tmp_path, broker.port, "ota-new-model", [v1])
    with running_service(cfg):
        result = push_file(broker, "ota-new-model", blend)
        assert result.ok and result.previous is None, result.describe()
        assert served_version(broker, "ota-new-model", "tiny-blend") == "1.0.0"
        assert served_version(broker, "ota-new-model") == "1.0.0"  # the other model untouched
    assert active_versions(tmp_path / "state-ota-new-model") == {"tiny-blend": "1.0.0", "tiny-dcgan": "1.0.0"}


def test_a_downloading_install_can_be_cancelled_and_a_full_installer_is_busy(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0")
    cfg = device(tmp_path, broker.port, "ota-cancel", [v1], limits={"ota_jobs": 1})
    outcome = {}
    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        def stalled():  # a host that never sends a chunk
            outcome["r"] = push_file(broker, "ota-cancel", v2, job="job-stalled", send_chunk=lambda t, f: None,
                                     quiet_s=60, timeout=60)

        worker = threading.Thread(target=stalled)
        worker.start()
        status_topic = "edge-aigc/ota-cancel/jobs/job-stalled"
        client.subscribe(status_topic)
        while (msg := client.next_message(10)) is not None and json.loads(msg.payload)["state"] != "downloading":
            pass
        busy = client.request("ota-cancel", "install", timeout=10, sha256=BundleFile.read(v2).sha256, size=10)
        assert busy.final["code"] == "busy" and "limit 1" in busy.final["message"]
        cancel = client.request("ota-cancel", "cancel", target="job-stalled", timeout=10)
        assert cancel.ok and cancel.final["cancelled"] is True
        worker.join(30)
        assert outcome["r"].state == JobState.FAILED and "cancelled" in outcome["r"].reason
        assert served_version(broker, "ota-cancel") == "1.0.0"
        assert push_file(broker, "ota-cancel", v2).ok  # the slot is free again


def test_a_request_in_flight_finishes_before_the_new_version_takes_over(broker, bundles, tmp_path):
    """The switch waits for the running request: its result comes before the install's."""
    slow_v1 = versioned(bundles["slow"], tmp_path, "1.0.0", fidelity={})
    slow_v2 = versioned(bundles["slow"], tmp_path, "2.0.0", fidelity={})
    cfg = device(tmp_path, broker.port, "ota-inflight", [slow_v1])
    finished, first_token, reply = {}, threading.Event(), {}
    with running_service(cfg):
        def generate():
            with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as c:
                reply["r"] = c.request("ota-inflight", "generate", "slow-lm",
                                       {"prompt": "The", "max_new_tokens": 2000, "temperature": 0.0,
                                        "speculation": "off"}, timeout=120,
                                       on_event=lambda ev: ev["event"] == "token" and first_token.set())
            finished["generate"] = time.monotonic()

        worker = threading.Thread(target=generate)
        worker.start()
        assert first_token.wait(30)
        marks = {}
        result = push_file(broker, "ota-inflight", slow_v2,
                           on_status=lambda d, state, got, n: marks.setdefault(state, time.monotonic()))
        finished["push"] = time.monotonic()
        worker.join(120)
        assert result.ok, result.describe()
        assert reply["r"].ok and reply["r"].final["meta"]["generated_tokens"] == 2000
        # the install reached its switch while the request still ran, and waited for it
        assert marks[JobState.ACTIVATING] < finished["generate"] < finished["push"]
        with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as c:
            models = c.request("ota-inflight", "models", timeout=10).final["models"]
        assert [m["version"] for m in models if m["name"] == "slow-lm"] == ["2.0.0"]
