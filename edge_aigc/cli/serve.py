"""``edge-aigc serve --config device.toml``: the device service (systemd runs this)."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import replace

from ..errors import ConfigError
from ..serve.app import build_service
from ..serve.config import load_config, parse_listen, rooted
from ..serve.systemd import Watchdog, watchdog_interval

log = logging.getLogger("edge_aigc.serve")


def _serve(args: argparse.Namespace) -> int:
    if not args.verbose:
        logging.getLogger("edge_aigc").setLevel(logging.INFO)
    cfg = load_config(args.config)
    if args.root:
        cfg = rooted(cfg, args.root)
    if args.http:  # quick use: the OpenAI-compatible API on this address, whatever [http] says
        parse_listen(args.http)
        cfg = replace(cfg, http=replace(cfg.http, enabled=True, listen=args.http))
    if args.wyoming:  # the same for the Wyoming voice server
        parse_listen(args.wyoming)
        cfg = replace(cfg, wyoming=replace(cfg.wyoming, enabled=True, listen=args.wyoming))
        if not cfg.wyoming.loopback and not cfg.wyoming.allow_from:
            raise ConfigError(f"--wyoming {args.wyoming} is reachable from other machines and Wyoming has no "
                              "credentials: list the clients that may connect in [wyoming] allow_from")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    rt, service = build_service(cfg)
    with rt:
        service.start()
        log.info("%s: %d model(s) loaded (%s); connecting to %s:%d", cfg.device_id, len(rt.loaded()),
                 ", ".join(rt.loaded()), cfg.mqtt.host, cfg.mqtt.port)
        interval = watchdog_interval()
        watchdog = Watchdog(interval, lambda: service.healthy) if interval else None
        if watchdog:
            watchdog.start()
        stop.wait()
        log.info("stopping: draining the running request")
        if watchdog:
            watchdog.stop()
        service.stop()
    log.info("stopped")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the device service (MQTT, and HTTP when asked)",
                       description="Load the configured models, connect to the broker, serve requests. "
                                   "SIGTERM drains and publishes 'offline'. See docs/deploy.md.")
    p.add_argument("--config", required=True, help="device config (TOML), e.g. /etc/edge-aigc/device.toml")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="also serve the OpenAI-compatible HTTP API there, e.g. 127.0.0.1:8080 (turns "
                        "[http] on and overrides its listen; see docs/http.md)")
    p.add_argument("--wyoming", metavar="HOST:PORT",
                   help="also serve the loaded voices over Wyoming there, e.g. 127.0.0.1:10200 (turns "
                        "[wyoming] on and overrides its listen; see docs/homeassistant.md)")
    p.add_argument("--root", help="resolve the config's absolute paths inside this directory "
                                  "(serve a flashed device root from the host)")
    p.set_defaults(func=_serve)
