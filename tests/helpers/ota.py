"""Helpers for the over-the-air tests: versioned copies of a real bundle, devices that serve one."""
from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from edge_aigc import load_bundle
from edge_aigc.bundle import signing
from edge_aigc.bundle.load import repack_bundle
from edge_aigc.remote.client import DeviceClient
from edge_aigc.remote.push import BundleFile, push
from edge_aigc.bundle.store import ModelStore
from tests.helpers.service import write_config

MIB = 1 << 20


def versioned(src: Path, out_dir: Path, version: str, key: Path | None = None, pad_bytes: int = 0,
              model_bytes: bytes | None = None, **changes) -> Path:
    """A copy of bundle ``src`` as ``version`` (signed with ``key`` if given), with ``pad_bytes``
    of incompressible data in an extra file, or another model file, or other manifest fields."""
    files = {**({"padding.bin": os.urandom(pad_bytes)} if pad_bytes else {}),
             **({"model.onnx": model_bytes} if model_bytes is not None else {})}
    with load_bundle(src) as b:
        out = out_dir / f"{b.manifest.name}-{version}.eaigc"
        repack_bundle(b, out, signing.load_private_key(key) if key else None, files, version=version, **changes)
    return out


def device(tmp: Path, port: int, device_id: str, installed: list[Path], pub: Path | None = None,
           limits: dict | None = None, pool: str = "", profile: str = "x86-avx2", http: dict | None = None) -> Path:
    """A device.toml whose store already holds ``installed`` (the first one is served)."""
    tmp.mkdir(parents=True, exist_ok=True)
    state = tmp / f"state-{device_id}"
    key = signing.load_public_key(pub) if pub else None
    store = ModelStore(state, public_key=key, require_signature=key is not None)
    names = []
    for path in installed:
        names.append(store.install(path).name)
    mqtt_extra = f'pool = "{pool}"' if pool else ""
    cfg = write_config(tmp / f"{device_id}.toml", port, [], device_id=device_id, allow_unsigned=pub is None,
                       limits="\n".join(f"{k} = {v}" for k, v in {"ota_retry_s": 0.5, "ota_idle_timeout_s": 20,
                                                                   **(limits or {})}.items()), mqtt_extra=mqtt_extra,
                       http=http, **({"pubkey": str(pub)} if pub else {}))
    text = cfg.read_text().replace("models = []", f"models = {json.dumps(names[:1])}")
    text = text.replace('profile = "x86-avx2"', f'profile = "{profile}"')
    cfg.write_text(text)
    return cfg


def push_file(broker, device_id: str, bundle: Path, **kwargs):
    with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        return push(client, device_id, BundleFile.read(bundle), **kwargs)


def active_versions(state: Path) -> dict[str, str]:
    """Each installed model's active version, read from the store as a fresh start would."""
    store = ModelStore(state)
    return {name: store.open(name).manifest.version for name in store.names()}


def served_version(broker, device_id: str, model: str = "tiny-dcgan") -> str:
    """The version that answers a real generate request now (and that it produced an image)."""
    with DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        r = client.request(device_id, "generate", model, {"count": 1, "seed": 1}, timeout=30)
        assert r.ok and r.final["data"][0]["content_type"] == "image/png", r.events[-1]
        models = client.request(device_id, "models", timeout=10).final
    return next(m["version"] for m in models["models"] if m["name"] == model)


class BundleServer(ThreadingHTTPServer):
    """Serves one file at /bundle.eaigc with Range support; ``cut_after`` bytes into the first
    response it closes the connection, as a flaky link would."""

    def __init__(self, path: Path, cut_after: int | None = None):
        self.data, self.cut_after, self.ranges = path.read_bytes(), cut_after, []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/bundle.eaigc"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server: BundleServer = self.server  # type: ignore[assignment]
        if self.path != "/bundle.eaigc":
            self.send_error(404)
            return
        start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if self.headers["Range"] else 0
        server.ranges.append(start)
        body = server.data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:
            cut, server.cut_after = server.cut_after, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)  # the link drops mid-body
            return
        self.wfile.write(body)
