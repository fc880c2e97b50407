"""Installs driven over HTTP: the same transport-free installer as MQTT's (same checks, same
switch between requests), uploaded with curl and httpx, and every malformed call refused in the
API's error shape with the old version still serving."""
from __future__ import annotations

import hashlib
import json
import subprocess
import time

import httpx
import pytest

from edge_aigc.contract import JobState
from tests.helpers.ota import MIB, active_versions, device, served_version, versioned
from tests.helpers.service import running_service

TOKEN = "install-token-0123456789abcdef"
CHUNK = 64 << 10


@pytest.fixture
def web_device(broker, bundles, tmp_path):
    v1 = versioned(bundles["image"], tmp_path, "1.0.0")
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    cfg = device(tmp_path, broker.port, "ota-web", [v1], http={
        "enabled": True, "listen": "127.0.0.1:0", "tokens_file": str(tmp_path / "tokens")})
    with running_service(cfg) as service, httpx.Client(base_url=f"http://127.0.0.1:{service.http.port}",
                                                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
        yield service, http, tmp_path


def _final(http: httpx.Client, job: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = http.get(f"/v1/installs/{job}").json()
        if status["state"] in (JobState.SUCCEEDED, JobState.FAILED, JobState.ROLLED_BACK):
            return status
        time.sleep(0.1)
    raise AssertionError(f"install {job} did not finish: {status}")


def test_a_bundle_uploaded_over_http_installs_and_serves(broker, bundles, web_device):
    service, http, tmp = web_device
    data = versioned(bundles["image"], tmp, "2.0.0", pad_bytes=MIB).read_bytes()
    spec = {"id": "web-1", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "chunk_bytes": CHUNK}
    created = http.post("/v1/installs", json=spec)
    assert created.status_code == 202 and created.json()["chunks"] == -(-len(data) // CHUNK)
    chunks = list(range(created.json()["chunks"]))
    for n in chunks[1:] + chunks[:1]:  # any order; the first one last
        url = f"http://127.0.0.1:{service.http.port}/v1/installs/web-1/chunks/{n}"
        done = subprocess.run(["curl", "-sS", "--fail-with-body", "-X", "PUT", "-H", f"Authorization: Bearer {TOKEN}",
                               "--data-binary", "@-", url], input=data[n * CHUNK:(n + 1) * CHUNK],
                              capture_output=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    status = _final(http, "web-1")
    assert status["state"] == JobState.SUCCEEDED and status["outcome"]["version"] == "2.0.0", status
    assert served_version(broker, "ota-web") == "2.0.0"
    again = http.post("/v1/installs", json=spec)  # the same job again: its final answer, no second install
    assert again.status_code == 202 and again.json()["state"] == JobState.SUCCEEDED
    assert active_versions(tmp / "state-ota-web") == {"tiny-dcgan": "2.0.0"}


def test_a_bundle_altered_in_transit_fails_its_hash_and_the_old_version_serves(broker, bundles, web_device):
    service, http, tmp = web_device
    data = versioned(bundles["image"], tmp, "2.0.0").read_bytes()
    http.post("/v1/installs", json={"id": "web-bad", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                    "chunk_bytes": CHUNK}).raise_for_status()
    altered = bytearray(data)
    altered[100] ^= 1
    for n in range(-(-len(data) // CHUNK)):
        http.put(f"/v1/installs/web-bad/chunks/{n}", content=bytes(altered[n * CHUNK:(n + 1) * CHUNK])).raise_for_status()
    status = _final(http, "web-bad")
    assert (status["state"], status["step"]) == (JobState.FAILED, "sha256")
    assert status["outcome"]["code"] == "rejected" and str(tmp) not in json.dumps(status)
    assert served_version(broker, "ota-web") == "1.0.0"


def test_malformed_install_calls_get_client_errors_in_the_api_shape(web_device):
    service, http, tmp = web_device
    ok = {"id": "web-x", "sha256": "ab" * 32, "size": 3 * CHUNK, "chunk_bytes": CHUNK}
    cases = [
        (http.post("/v1/installs", content=b"{not json"), 400, "bad_request"),
        (http.post("/v1/installs", json=[1]), 400, "bad_request"),
        (http.post("/v1/installs", json={**ok, "id": "../etc"}), 400, "bad_request"),
        (http.post("/v1/installs", json={**ok, "sha256": "nope"}), 400, "bad_request"),
        (http.post("/v1/installs", json={**ok, "size": -1}), 400, "bad_request"),
        (http.post("/v1/installs", json={**ok, "path": "/tmp/x"}), 400, "bad_request"),
        (http.post("/v1/installs", json={**ok, "url": "file:///etc/passwd"}), 400, "bad_request"),
        (http.get("/v1/installs/nobody"), 404, "unknown_job"),
        (http.put("/v1/installs/nobody/chunks/0", content=b"x"), 404, "unknown_job"),
    ]
    assert http.post("/v1/installs", json=ok).status_code == 202
    cases += [
        (http.put("/v1/installs/web-x/chunks/3", content=b"x" * CHUNK), 400, "bad_request"),
        (http.put("/v1/installs/web-x/chunks/-1", content=b"x" * CHUNK), 400, "bad_request"),
        (http.put("/v1/installs/web-x/chunks/²", content=b"x" * CHUNK), 400, "bad_request"),
        (http.put("/v1/installs/web-x/chunks/0", content=b"x" * 10), 400, "bad_request"),
        (http.put("/v1/installs/web-x/chunks/0", content=b"x" * (CHUNK + 1)), 413, "too_large"),
        (http.post("/v1/installs", json={**ok, "size": 4 * CHUNK}), 400, "bad_request"),  # same id, other bundle
        (httpx.get(f"http://127.0.0.1:{service.http.port}/v1/installs/web-x"), 401, "invalid_api_key"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert response.json()["error"]["code"] == code, response.text
        assert str(tmp) not in response.text
    assert service.healthy
