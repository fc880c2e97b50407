"""TLS with a CA and client certificates, and password auth, against a broker of the test's own."""
from __future__ import annotations

import subprocess

import pytest

from edge_aigc.errors import ConfigError
from edge_aigc.remote.client import DeviceClient
from edge_aigc.remote.local_brokers import Mosquitto
from tests.helpers.service import running_service, write_config
from tests.helpers.tls_certs import make_pki


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    pki = make_pki(d / "pki")
    passwd = d / "passwd"
    for user, password in (("device", "dev-secret"), ("app", "app-secret")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if not passwd.exists() else []), str(passwd),
                        user, password], check=True, capture_output=True)
    conf = (f"cafile {pki['ca']}\ncertfile {pki['server_crt']}\nkeyfile {pki['server_key']}\n"
            f"require_certificate true\npassword_file {passwd}\n")
    broker = Mosquitto(d / "broker", extra_config=conf, anonymous=False).start()
    yield broker, pki, d
    broker.stop()


def client(broker, pki, password="app-secret", cert="client", user="app"):
    return DeviceClient(f"mqtts://127.0.0.1:{broker.port}", username=user, password=password,
                        ca_file=str(pki["ca"]), cert_file=str(pki[f"{cert}_crt"]), key_file=str(pki[f"{cert}_key"]))


def test_service_over_tls_with_password_serves_a_trusted_client(secure_broker, bundles):
    broker, pki, d = secure_broker
    (d / "device-password").write_text("dev-secret\n")
    (d / "device-password").chmod(0o600)
    cfg = write_config(d / "device.toml", broker.port, [bundles["image"]], device_id="secure", scheme="mqtts",
                       mqtt_extra=f'username = "device"\npassword_file = "{d / "device-password"}"\n'
                                  f'ca_file = "{pki["ca"]}"\ncert_file = "{pki["client_crt"]}"\n'
                                  f'key_file = "{pki["client_key"]}"')
    with running_service(cfg):
        with client(broker, pki) as c:
            r = c.request("secure", "generate", "tiny-dcgan", {"seed": 1})
        assert r.ok and len(r.data) == 1


def test_wrong_password_is_refused(secure_broker):
    broker, pki, _ = secure_broker
    with pytest.raises(ConfigError, match="refused the connection"):
        client(broker, pki, password="guess").connect(timeout=5)


def test_untrusted_client_certificate_is_refused(secure_broker):
    broker, pki, _ = secure_broker
    with pytest.raises(ConfigError, match="closed the connection|cannot reach"):
        client(broker, pki, cert="rogue").connect(timeout=5)


def test_client_that_does_not_trust_the_server_refuses_it(secure_broker, tmp_path):
    broker, pki, _ = secure_broker
    other = make_pki(tmp_path / "other")
    c = DeviceClient(f"mqtts://127.0.0.1:{broker.port}", username="app", password="app-secret",
                     ca_file=str(other["ca"]), cert_file=str(pki["client_crt"]), key_file=str(pki["client_key"]))
    with pytest.raises(ConfigError, match="cannot reach|certificate"):
        c.connect(timeout=5)


def test_service_with_a_wrong_password_never_reports_ready(secure_broker, bundles):
    broker, pki, d = secure_broker
    (d / "bad-password").write_text("nope\n")
    cfg = write_config(d / "bad.toml", broker.port, [bundles["image"]], device_id="badpw", scheme="mqtts",
                       mqtt_extra=f'username = "device"\npassword_file = "{d / "bad-password"}"\n'
                                  f'ca_file = "{pki["ca"]}"\ncert_file = "{pki["client_crt"]}"\n'
                                  f'key_file = "{pki["client_key"]}"')
    from edge_aigc.serve.app import build_service
    from edge_aigc.serve.config import load_config

    runtime, service = build_service(load_config(cfg))
    service.start()
    try:
        assert not service.wait_ready(3)
        assert service.transport.last_refusal and not service.transport.connected
    finally:
        service.stop()
        runtime.close()
