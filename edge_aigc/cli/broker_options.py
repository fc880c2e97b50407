"""The MQTT options every client command shares (``send``, ``push``), and the client they make.

The password comes from --password-file or $EDGE_AIGC_MQTT_PASSWORD, never argv.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import ConfigError
from ..remote.client import DeviceClient
from ..serve.config import DEFAULT_BROKER

__all__ = ["add_broker_options", "client_from_args"]


def add_broker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default=os.environ.get("EDGE_AIGC_BROKER", DEFAULT_BROKER),
                   help="mqtt://host:port or mqtts://host:port (default: $EDGE_AIGC_BROKER or local)")
    p.add_argument("--mqtt", choices=("5", "3.1.1"), default="5", help="MQTT protocol version")
    p.add_argument("--topic-root", default="edge-aigc")
    p.add_argument("--username")
    p.add_argument("--password-file", help="file holding the MQTT password")
    p.add_argument("--ca-file", help="CA certificate for mqtts://")
    p.add_argument("--cert-file", help="client certificate for mqtts://")
    p.add_argument("--key-file", help="client key for mqtts://")


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file:
        try:
            return Path(args.password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"--password-file {args.password_file}: {exc.strerror}") from None
    return os.environ.get("EDGE_AIGC_MQTT_PASSWORD")


def client_from_args(args: argparse.Namespace) -> DeviceClient:
    """A client configured from the options above (not connected yet)."""
    return DeviceClient(args.broker, 311 if args.mqtt == "3.1.1" else 5, args.topic_root, args.username,
                        _password(args), args.ca_file, args.cert_file, args.key_file)
