"""Device service configuration (``/etc/edge-aigc/device.toml``), validated with named keys.

Bundles must be signed unless the config says ``allow_unsigned = true``: by the key in
``pubkey`` when one is set, else by the zoo's release key (which signs the prebuilt
models; see :func:`ServiceConfig.trusted_key`). Secrets never come from the command line: the MQTT password is read from
``mqtt.password_file`` or, under systemd, from ``$CREDENTIALS_DIRECTORY/mqtt-password``
(``LoadCredential=``). Reference with every key: docs/deploy.md.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..device.tomltable import TomlTable, read_toml
from .mqtt.protocol import parse_broker_url

__all__ = ["ServiceConfig", "MqttConfig", "Limits", "HttpConfig", "HomeAssistantConfig", "WyomingConfig", "load_config",
           "read_password", "read_tokens", "parse_listen", "rooted", "device_toml", "DEFAULT_BROKER"]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CREDENTIAL_NAME = "mqtt-password"
TOKENS_CREDENTIAL = "http-tokens"
MIN_TOKEN_CHARS = 16
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    tls: bool
    protocol: int = 5                 # 5 or 311
    client_id: str = ""
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    topic_root: str = "edge-aigc"
    keepalive: int = 30
    pool: str = ""


@dataclass(frozen=True)
class Limits:
    queue_size: int = 8
    max_payload_bytes: int = 65536
    request_timeout_s: float = 300.0
    metrics_interval_s: float = 30.0
    outbox_messages: int = 1000
    outbox_bytes: int = 32 << 20
    dedup_ids: int = 1024
    drain_timeout_s: float = 10.0
    # chat sessions (edge_aigc/tasks/text/sessions.py): how many, their KV bytes, idle time
    max_sessions: int = 8
    session_mb: int = 256
    session_ttl_s: float = 600.0
    max_prefixes: int = 4            # clients whose last stateless prompt's cache is kept
    # over-the-air installs (edge_aigc/lifecycle/ota/): re-ask for missing chunks after this
    # long without one, give up after this long, and how many installs may be unfinished
    ota_retry_s: float = 5.0
    ota_idle_timeout_s: float = 600.0
    ota_jobs: int = 4
    ota_url_installs: bool = False   # may an install name an http(s) URL the device fetches itself?


@dataclass(frozen=True)
class HttpConfig:
    """``[http]``: the OpenAI-compatible API (docs/http.md). Off unless ``enabled``."""

    enabled: bool = False
    listen: str = "127.0.0.1:8080"
    tokens_file: str = ""             # bearer tokens, one per line; else $CREDENTIALS_DIRECTORY/http-tokens
    cert_file: str = ""               # TLS: both or neither
    key_file: str = ""
    cors_origins: tuple[str, ...] = ()  # CORS off unless origins are listed
    allow_from: tuple[str, ...] = ()  # clients that need no token (e.g. Home Assistant, which sends none)

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(a, strict=False) for a in self.allow_from)

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.address[0])


@dataclass(frozen=True)
class WyomingConfig:
    """``[wyoming]``: the Wyoming voice server Home Assistant adds (docs/homeassistant.md). Off
    unless ``enabled``. Wyoming has no credentials, so a listener other than loopback takes
    only the clients of ``allow_from`` (addresses or networks, e.g. the Home Assistant host)."""

    enabled: bool = False
    listen: str = "127.0.0.1:10200"
    allow_from: tuple[str, ...] = ()
    zeroconf: bool = False            # advertise _wyoming._tcp.local. (the [wyoming] extra has zeroconf)
    name: str = ""                    # the advertised name; default: the device id
    voice: str = ""                   # the voice when a request names none; default: the first loaded

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.address[0])

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(a, strict=False) for a in self.allow_from)


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


@dataclass(frozen=True)
class HomeAssistantConfig:
    """``[homeassistant]``: MQTT discovery (edge_aigc/serve/homeassistant.py). Off unless ``enabled``.
    The model names default to the first loaded model of each task."""

    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    text_model: str = ""
    image_model: str = ""
    audio_model: str = ""


@dataclass(frozen=True)
class ServiceConfig:
    device_id: str
    models: tuple[str, ...]
    mqtt: MqttConfig
    limits: Limits
    profile: str = ""
    state_dir: str = ""
    pubkey: str = ""
    allow_unsigned: bool = False
    path: str = ""
    http: HttpConfig = HttpConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    wyoming: WyomingConfig = WyomingConfig()

    @property
    def root(self) -> str:
        return f"{self.mqtt.topic_root}/{self.device_id}"

    def trusted_key(self) -> str | None:
        """The public key every bundle must be signed by, or None when unsigned ones are allowed."""
        if self.allow_unsigned:
            return None
        if self.pubkey:
            return self.pubkey
        from ..zoo import zoo_public_key_path  # the prebuilt models' signer

        return str(zoo_public_key_path())


def _mqtt(t: TomlTable) -> MqttConfig:
    url = t.get("url", str, DEFAULT_BROKER)
    try:
        broker = parse_broker_url(url)
    except ConfigError as exc:
        raise t.fail("url", str(exc)) from None
    cfg = MqttConfig(
        host=broker.host, port=broker.port, tls=broker.tls,
        protocol=t.get("protocol", int, 5, choices=(5, 311)),
        client_id=t.get("client_id", str, ""), username=t.get("username", str, ""),
        password_file=t.get("password_file", str, ""), ca_file=t.get("ca_file", str, ""),
        cert_file=t.get("cert_file", str, ""), key_file=t.get("key_file", str, ""),
        topic_root=t.get("topic_root", str, "edge-aigc"), keepalive=t.get("keepalive", int, 30, lo=5, hi=3600),
        pool=t.get("pool", str, ""))
    for key in ("topic_root", "pool"):
        value = getattr(cfg, key)
        if value and (any(c in value for c in "+#$") or value.startswith("/") or value.endswith("/")):
            raise t.fail(key, f"{value!r} must be a plain topic level (no + # $ or leading/trailing /)")
    if bool(cfg.cert_file) != bool(cfg.key_file):
        raise t.fail("cert_file" if not cfg.cert_file else "key_file", "cert_file and key_file go together")
    t.finish()
    return cfg


def _limits(t: TomlTable | None) -> Limits:
    if t is None:
        return Limits()
    d = Limits()
    out = Limits(
        queue_size=t.get("queue_size", int, d.queue_size, lo=1, hi=1024),
        max_payload_bytes=t.get("max_payload_bytes", int, d.max_payload_bytes, lo=256, hi=16 << 20),
        request_timeout_s=t.get("request_timeout_s", float, d.request_timeout_s, lo=0.1, hi=86400),
        metrics_interval_s=t.get("metrics_interval_s", float, d.metrics_interval_s, lo=0.1, hi=86400),
        outbox_messages=t.get("outbox_messages", int, d.outbox_messages, lo=1, hi=1_000_000),
        outbox_bytes=t.get("outbox_bytes", int, d.outbox_bytes, lo=1024, hi=1 << 32),
        dedup_ids=t.get("dedup_ids", int, d.dedup_ids, lo=1, hi=1_000_000),
        drain_timeout_s=t.get("drain_timeout_s", float, d.drain_timeout_s, lo=0, hi=3600),
        max_sessions=t.get("max_sessions", int, d.max_sessions, lo=0, hi=1024),
        session_mb=t.get("session_mb", int, d.session_mb, lo=0, hi=1 << 20),
        session_ttl_s=t.get("session_ttl_s", float, d.session_ttl_s, lo=1, hi=7 * 86400),
        max_prefixes=t.get("max_prefixes", int, d.max_prefixes, lo=0, hi=1024),
        ota_retry_s=t.get("ota_retry_s", float, d.ota_retry_s, lo=0.1, hi=3600),
        ota_idle_timeout_s=t.get("ota_idle_timeout_s", float, d.ota_idle_timeout_s, lo=1, hi=7 * 86400),
        ota_jobs=t.get("ota_jobs", int, d.ota_jobs, lo=1, hi=64),
        ota_url_installs=t.get("ota_url_installs", bool, d.ota_url_installs))
    t.finish()
    return out


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to (host, port); a ConfigError names what is wrong."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen address {listen!r} must look like 127.0.0.1:8080 or [::1]:8080")
    return host, int(port)


def _http(t: TomlTable | None) -> HttpConfig:
    if t is None:
        return HttpConfig()
    d = HttpConfig()
    origins = t.strings("cors_origins", default=())
    cfg = HttpConfig(enabled=t.get("enabled", bool, d.enabled), listen=t.get("listen", str, d.listen),
                     tokens_file=t.get("tokens_file", str, ""), cert_file=t.get("cert_file", str, ""),
                     key_file=t.get("key_file", str, ""), cors_origins=tuple(origins),
                     allow_from=tuple(t.strings("allow_from", default=())))
    _check_listener(t, cfg)
    if bool(cfg.cert_file) != bool(cfg.key_file):
        raise t.fail("cert_file" if not cfg.cert_file else "key_file", "cert_file and key_file go together")
    t.finish()
    return cfg


def _check_listener(t: TomlTable, cfg: HttpConfig | WyomingConfig) -> None:
    """A listener's ``listen`` and ``allow_from``, each error naming its key."""
    try:
        cfg.address
        cfg.networks()
    except ConfigError as exc:
        raise t.fail("listen", str(exc)) from None
    except ValueError as exc:
        raise t.fail("allow_from", f"{exc} (give addresses or networks such as 192.168.1.10 or 192.168.1.0/24)") from None


def _wyoming(t: TomlTable | None) -> WyomingConfig:
    if t is None:
        return WyomingConfig()
    d = WyomingConfig()
    cfg = WyomingConfig(enabled=t.get("enabled", bool, d.enabled), listen=t.get("listen", str, d.listen),
                        allow_from=tuple(t.strings("allow_from", default=())), zeroconf=t.get("zeroconf", bool, False),
                        name=t.get("name", str, ""), voice=t.get("voice", str, ""))
    _check_listener(t, cfg)
    if cfg.enabled and not cfg.loopback and not cfg.allow_from:
        raise t.fail("allow_from", f"listen = {cfg.listen!r} is reachable from other machines and Wyoming has no "
                                   "credentials: list the clients that may connect (e.g. the Home Assistant host)")
    t.finish()
    return cfg


def _homeassistant(t: TomlTable | None) -> HomeAssistantConfig:
    if t is None:
        return HomeAssistantConfig()
    cfg = HomeAssistantConfig(
        enabled=t.get("enabled", bool, False), discovery_prefix=t.get("discovery_prefix", str, "homeassistant"),
        text_model=t.get("text_model", str, ""), image_model=t.get("image_model", str, ""),
        audio_model=t.get("audio_model", str, ""))
    prefix = cfg.discovery_prefix
    if not prefix or any(c in prefix for c in "+#$") or prefix.startswith("/") or prefix.endswith("/"):
        raise t.fail("discovery_prefix", f"{prefix!r} must be a plain topic (no + # $ or leading/trailing /)")
    t.finish()
    return cfg


def read_tokens(cfg: HttpConfig) -> frozenset[str]:
    """The HTTP API's bearer tokens: ``tokens_file``, else ``$CREDENTIALS_DIRECTORY/http-tokens``
    (systemd LoadCredential); one per line, ``#`` comments. None found: an empty set."""
    candidates = [Path(cfg.tokens_file)] if cfg.tokens_file else []
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        candidates.append(Path(os.environ["CREDENTIALS_DIRECTORY"]) / TOKENS_CREDENTIAL)
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if path == Path(cfg.tokens_file):
                raise ConfigError(f"http.tokens_file {path} does not exist") from None
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read HTTP tokens from {path}: {exc}") from None
        tokens = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        short = [i for i, tok in enumerate(tokens, 1) if len(tok) < MIN_TOKEN_CHARS or not tok.isprintable()
                 or " " in tok]
        if short:
            raise ConfigError(f"HTTP tokens in {path}: token {short[0]} is shorter than {MIN_TOKEN_CHARS} "
                              "characters or holds spaces or control characters")
        if not tokens:
            raise ConfigError(f"HTTP tokens file {path} holds no token")
        return frozenset(tokens)
    return frozenset()


def _under(root: Path, value: str) -> str:
    return str(root / value.lstrip("/")) if value.startswith("/") else value


def rooted(cfg: ServiceConfig, root: str | os.PathLike) -> ServiceConfig:
    """The config with its absolute paths resolved inside ``root`` (a mounted device image)."""
    root = Path(root)
    mqtt = replace(cfg.mqtt, **{k: _under(root, getattr(cfg.mqtt, k)) for k in
                                ("password_file", "ca_file", "cert_file", "key_file") if getattr(cfg.mqtt, k)})
    http = replace(cfg.http, **{k: _under(root, getattr(cfg.http, k)) for k in
                                ("tokens_file", "cert_file", "key_file") if getattr(cfg.http, k)})
    return replace(cfg, mqtt=mqtt, http=http, state_dir=_under(root, cfg.state_dir) if cfg.state_dir else "",
                   pubkey=_under(root, cfg.pubkey) if cfg.pubkey else "",
                   models=tuple(_under(root, m) for m in cfg.models))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def device_toml(device_id: str, models: list[str], broker: str = DEFAULT_BROKER, *,
                mqtt: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
                http: dict[str, Any] | None = None, homeassistant: dict[str, Any] | None = None,
                wyoming: dict[str, Any] | None = None, header: str = "", **top: Any) -> str:
    """A device.toml that :func:`load_config` reads: top-level keys (``profile``, ``state_dir``,
    ``pubkey``, ``allow_unsigned``, …) then ``[mqtt]``, ``[limits]``, ``[http]``, ``[homeassistant]``,
    ``[wyoming]``. Used by ``flash``, the benchmarks and the tests, so there is one writer of the format."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"device_id = {_toml_value(device_id)}", f"models = {_toml_value(list(models))}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items() if v not in (None, "")]
    lines += ["", "[mqtt]", f"url = {_toml_value(broker)}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (mqtt or {}).items()]
    for table, values in (("limits", limits), ("http", http), ("homeassistant", homeassistant), ("wyoming", wyoming)):
        if values:
            lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def load_config(path: str | os.PathLike) -> ServiceConfig:
    path = Path(path)
    top = TomlTable(read_toml(path, ConfigError, "config"), str(path), error_class=ConfigError)
    device_id = top.get("device_id", str)
    if not _ID_RE.match(device_id):
        raise top.fail("device_id", f"{device_id!r} must match {_ID_RE.pattern} (it is a topic level)")
    mqtt = _mqtt(top.table("mqtt", required=False) or TomlTable({}, str(path), "mqtt.", ConfigError))
    cfg = ServiceConfig(
        device_id=device_id, models=top.strings("models"), mqtt=mqtt,
        limits=_limits(top.table("limits", required=False)),
        http=_http(top.table("http", required=False)),
        homeassistant=_homeassistant(top.table("homeassistant", required=False)),
        wyoming=_wyoming(top.table("wyoming", required=False)),
        profile=top.get("profile", str, ""), state_dir=top.get("state_dir", str, ""),
        pubkey=top.get("pubkey", str, ""), allow_unsigned=top.get("allow_unsigned", bool, False),
        path=str(path))
    if "require_signature" in top.data:
        raise top.fail("require_signature", "signatures are required by default now; remove the key "
                                            "(or set allow_unsigned = true to accept unsigned bundles)")
    top.finish()
    if cfg.allow_unsigned and cfg.pubkey:
        raise top.fail("allow_unsigned", "cannot be true with a pubkey: with a pubkey every bundle "
                                         "must be signed by it")
    return cfg


def read_password(cfg: MqttConfig) -> str | None:
    """From password_file, else $CREDENTIALS_DIRECTORY/mqtt-password (systemd LoadCredential)."""
    candidates = [Path(cfg.password_file)] if cfg.password_file else []
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        candidates.append(Path(os.environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME)
    for path in candidates:
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            if path == Path(cfg.password_file):
                raise ConfigError(f"mqtt.password_file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read MQTT password from {path}: {exc.strerror}") from None
    return None
