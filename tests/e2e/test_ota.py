"""Over-the-air installs against a real Mosquitto: a push that succeeds and serves, and every
refusal, each leaving the old version serving."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_aigc.device.profiles import get_profile
from edge_aigc import load_bundle
from edge_aigc.contract import JobState
from edge_aigc.remote.client import DeviceClient
from edge_aigc.serve.mqtt.protocol import frame_chunk
from edge_aigc.remote.push import BundleFile, push
from tests.helpers.ota import MIB, active_versions, device, push_file, served_version, versioned
from tests.helpers.service import running_service


@pytest.fixture
def v1(bundles, tmp_path):
    return versioned(bundles["image"], tmp_path, "1.0.0")


def test_a_5_mb_push_succeeds_and_the_new_version_serves(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", pad_bytes=5 * MIB)
    cfg = device(tmp_path, broker.port, "ota-ok", [v1])
    seen = []
    with running_service(cfg) as service:
        assert served_version(broker, "ota-ok") == "1.0.0"
        result = push_file(broker, "ota-ok", v2, on_status=lambda d, s, got, n: seen.append((s, got, n)))
        assert result.ok, result.describe()
        assert (result.version, result.previous) == ("2.0.0", "1.0.0")
        assert served_version(broker, "ota-ok") == "2.0.0"
        status = json.loads(service.mqtt.status_payload("online"))
        assert status["installed"]["tiny-dcgan"] == {"active": "2.0.0", "versions": ["1.0.0", "2.0.0"]}
    states = [s for s, _, _ in seen]
    assert states[0] in (JobState.QUEUED, JobState.DOWNLOADING) and states[-1] == JobState.SUCCEEDED
    assert JobState.VERIFYING in states and JobState.ACTIVATING in states
    chunks = BundleFile.read(v2).size // (64 << 10) + 1
    assert (JobState.DOWNLOADING, chunks, chunks) in seen  # every chunk arrived and was counted
    assert active_versions(tmp_path / "state-ota-ok") == {"tiny-dcgan": "2.0.0"}


def test_a_damaged_chunk_is_asked_for_again_and_the_install_still_succeeds(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", pad_bytes=MIB)
    cfg = device(tmp_path, broker.port, "ota-damaged", [v1])
    sent: dict[str, int] = {}

    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        def damage_first_send(topic: str, framed: bytes) -> None:
            sent[topic] = sent.get(topic, 0) + 1
            if topic.endswith("/3") and sent[topic] == 1:  # its digest no longer matches its bytes
                framed = framed[:40] + bytes([framed[40] ^ 0xFF]) + framed[41:]
            client.publish(topic, framed)

        result = push(client, "ota-damaged", BundleFile.read(v2), send_chunk=damage_first_send)
    assert result.ok, result.describe()
    assert sent[next(t for t in sent if t.endswith("/3"))] == 2


def refused(broker, tmp_path, device_id: str, cfg, bundle, step: str, **kwargs):
    """Push ``bundle``: it must fail at ``step`` while 1.0.0 keeps serving, and the store must
    hold exactly what it held before."""
    with running_service(cfg):
        result = push_file(broker, device_id, bundle, **kwargs)
        assert result.state == JobState.FAILED and result.step == step, result.describe()
        assert served_version(broker, device_id) == "1.0.0"
    assert active_versions(tmp_path / f"state-{device_id}") == {"tiny-dcgan": "1.0.0"}
    assert sorted(p.name for p in (tmp_path / f"state-{device_id}" / "models" / "tiny-dcgan").iterdir()
                  if p.is_dir()) == ["1.0.0"]
    assert str(tmp_path) not in (result.reason or "")  # no device path in what the client reads
    return result


def test_a_tampered_chunk_fails_the_bundle_hash(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", pad_bytes=MIB)
    cfg = device(tmp_path, broker.port, "ota-tampered", [v1])

    def tamper(client):
        def send(topic: str, framed: bytes) -> None:
            data = framed[32:]
            if topic.endswith("/2"):  # altered with a matching chunk digest: only the whole hash tells
                data = data[:10] + bytes([data[10] ^ 1]) + data[11:]
            client.publish(topic, frame_chunk(data))
        return send

    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        result = push(client, "ota-tampered", BundleFile.read(v2), send_chunk=tamper(client))
        assert result.state == JobState.FAILED and result.step == "sha256", result.describe()
        assert "rejected" in result.reason
        assert served_version(broker, "ota-tampered") == "1.0.0"
    assert active_versions(tmp_path / "state-ota-tampered") == {"tiny-dcgan": "1.0.0"}


def test_a_bundle_signed_with_another_key_is_refused(broker, bundles, tmp_path, keypair, other_keypair):
    key, pub = keypair
    v1 = versioned(bundles["image"], tmp_path, "1.0.0", key=key)
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", key=other_keypair[0])
    cfg = device(tmp_path, broker.port, "ota-key", [v1], pub=pub)
    result = refused(broker, tmp_path, "ota-key", cfg, v2, "signature")
    assert "signature" in result.reason


def test_an_unsigned_bundle_is_refused_by_a_device_with_a_key(broker, bundles, tmp_path, keypair):
    key, pub = keypair
    v1 = versioned(bundles["image"], tmp_path, "1.0.0", key=key)
    v2 = versioned(bundles["image"], tmp_path, "2.0.0")
    refused(broker, tmp_path, "ota-unsigned", device(tmp_path, broker.port, "ota-unsigned", [v1], pub=pub),
            v2, "signature")


def test_a_bundle_over_the_profiles_budget_is_refused(broker, bundles, tmp_path, v1):
    small = tmp_path / "x86-small.toml"  # the x86 profile with a 2 MB bundle budget
    text = Path(get_profile("x86-avx2").path).read_text()
    small.write_text(text.replace('name = "x86-avx2"', 'name = "x86-small"')
                     .replace("max_bundle_mb = 1024", "max_bundle_mb = 2"))
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", pad_bytes=3 * MIB)
    cfg = device(tmp_path, broker.port, "ota-budget", [v1], profile=str(small))
    result = refused(broker, tmp_path, "ota-budget", cfg, v2, "budget")
    assert "2 MB bundle budget" in result.reason


def test_a_model_whose_smoke_generation_fails_is_refused(broker, bundles, tmp_path, v1):
    import onnx
    from onnx import TensorProto, helper

    # the real model's inputs and outputs, and a graph that fails when it runs: a Reshape to
    # a shape its input cannot take
    with load_bundle(v1) as b:
        real = onnx.load(b.root / "model.onnx")
    graph = real.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    out = graph.output[0]
    shape = helper.make_tensor("bad_shape", TensorProto.INT64, [3], [7, 7, 7])
    nodes = [helper.make_node("Reshape", [inputs[0].name, "bad_shape"], [out.name])]
    broken = helper.make_model(helper.make_graph(nodes, "broken", list(inputs), [out], [shape]),
                               opset_imports=real.opset_import)
    broken.ir_version = real.ir_version
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", model_bytes=broken.SerializeToString())
    cfg = device(tmp_path, broker.port, "ota-smoke", [v1])
    result = refused(broker, tmp_path, "ota-smoke", cfg, v2, "smoke")
    assert "failed to generate" in result.reason


def test_a_degraded_bundle_fails_the_fidelity_spot_check(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0",
                   fidelity={"passed": False, "degraded": True, "failures": ["psnr_db 12.0 < 25.0"]})
    result = refused(broker, tmp_path, "ota-fidelity", device(tmp_path, broker.port, "ota-fidelity", [v1]),
                     v2, "fidelity")
    assert "psnr_db 12.0 < 25.0" in result.reason


def test_a_truncated_transfer_times_out_and_keeps_the_old_version(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", pad_bytes=MIB)
    cfg = device(tmp_path, broker.port, "ota-truncated", [v1], limits={"ota_idle_timeout_s": 2})
    cut = 5  # the host sends chunks 0-4 and then never again

    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        def send(topic: str, framed: bytes) -> None:
            if int(topic.rsplit("/", 1)[1]) < cut:
                client.publish(topic, framed)

        result = push(client, "ota-truncated", BundleFile.read(v2), send_chunk=send, quiet_s=60, timeout=30)
        assert result.state == JobState.FAILED and result.step == "download", result.describe()
        assert "timeout" in result.reason and f"{BundleFile.read(v2).size // (64 << 10) + 1 - cut} of" in result.reason
        assert served_version(broker, "ota-truncated") == "1.0.0"
    job_dir = tmp_path / "state-ota-truncated" / "ota" / result.job
    assert sorted(p.name for p in job_dir.iterdir()) == ["job.json"]  # the partial bundle is gone


def test_re_sending_a_finished_install_repeats_its_answer_without_installing_again(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0")
    cfg = device(tmp_path, broker.port, "ota-again", [v1])
    with running_service(cfg):
        first = push_file(broker, "ota-again", v2, job="job-again")
        again = push_file(broker, "ota-again", v2, job="job-again")
    assert first.ok and again.ok and again.version == "2.0.0" and again.previous == "1.0.0"
