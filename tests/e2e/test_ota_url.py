"""Installs the device fetches itself from an http URL (a loopback server in the test): off
unless the device allows it, resumed with a Range request after a broken connection."""
from __future__ import annotations

import pytest

from edge_aigc.contract import JobState
from edge_aigc.remote.client import DeviceClient
from tests.helpers.ota import MIB, BundleServer, active_versions, device, push_file, served_version, versioned
from tests.helpers.service import running_service


@pytest.fixture
def v1(bundles, tmp_path):
    return versioned(bundles["image"], tmp_path, "1.0.0")


def test_a_device_fetches_the_bundle_from_a_url_and_resumes_after_a_broken_connection(broker, bundles,
                                                                                      tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0", pad_bytes=MIB)
    server = BundleServer(v2, cut_after=300_000)
    cfg = device(tmp_path, broker.port, "ota-url", [v1], limits={"ota_url_installs": "true"})
    try:
        with running_service(cfg):
            result = push_file(broker, "ota-url", v2, url=server.url, timeout=60)
            assert result.ok, result.describe()
            assert served_version(broker, "ota-url") == "2.0.0"
    finally:
        server.shutdown()
    chunk = 64 << 10
    assert server.ranges == [0, 300_000 // chunk * chunk]  # the second request resumed at a chunk edge
    assert active_versions(tmp_path / "state-ota-url") == {"tiny-dcgan": "2.0.0"}


def test_a_url_install_is_refused_unless_the_device_allows_it(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0")
    server = BundleServer(v2)
    cfg = device(tmp_path, broker.port, "ota-url-off", [v1])
    try:
        with running_service(cfg):
            result = push_file(broker, "ota-url-off", v2, url=server.url, timeout=20)
            assert "bad_request" in result.reason and "ota_url_installs" in result.reason
            assert served_version(broker, "ota-url-off") == "1.0.0"
    finally:
        server.shutdown()
    assert server.ranges == []  # the device never fetched anything


def test_a_url_that_serves_another_file_fails_its_hash(broker, bundles, tmp_path, v1):
    v2 = versioned(bundles["image"], tmp_path, "2.0.0")
    (tmp_path / "other").mkdir()
    other = versioned(bundles["image"], tmp_path / "other", "2.0.0", pad_bytes=100_000)  # longer, other bytes
    server = BundleServer(other)
    cfg = device(tmp_path, broker.port, "ota-url-hash", [v1], limits={"ota_url_installs": "true"})
    try:
        with running_service(cfg):
            result = push_file(broker, "ota-url-hash", v2, url=server.url, timeout=30)
            assert result.state == JobState.FAILED and result.step == "sha256", result.describe()
            assert served_version(broker, "ota-url-hash") == "1.0.0"
    finally:
        server.shutdown()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/b.eaigc", "http://user:pw@127.0.0.1/b",
                                 "http:///nohost", "x" * 3000])
def test_only_plain_http_urls_are_accepted(broker, tmp_path, v1, url):
    cfg = device(tmp_path, broker.port, "ota-url-bad", [v1], limits={"ota_url_installs": "true"})
    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        r = client.request("ota-url-bad", "install", timeout=10, sha256="ab" * 32, size=10, url=url)
        assert r.final["code"] == "bad_request" and "'url'" in r.final["message"], r.final
