"""``edge-aigc forget --config device.toml``: remove a device from Home Assistant and the broker.

Publishes the empty retained payloads that delete what the service leaves retained: the
Home Assistant discovery message (Home Assistant then removes the device and its
entities), the entities' last values and the device's ``status``. Stop the service
first, or it publishes them again when it reconnects.
"""
from __future__ import annotations

import argparse

from ..errors import BrokerError
from ..serve.config import load_config, rooted
from ..serve.homeassistant import HaTopics
from ..serve.mqtt.protocol import Topics
from ..serve.mqtt.transport import MqttTransport

TIMEOUT_S = 10.0


def _forget(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.root:
        cfg = rooted(cfg, args.root)
    topics = Topics(cfg.root, cfg.mqtt.topic_root, cfg.mqtt.pool)
    ha = HaTopics(cfg.homeassistant, cfg.device_id, topics)
    retained = [*ha.retained_topics(), topics.status]
    transport = MqttTransport(cfg.mqtt, f"edge-aigc-{cfg.device_id}-forget", [], lambda msg: None, None)
    transport.start()
    try:
        if not transport.wait_connected(TIMEOUT_S):
            raise BrokerError(f"could not reach the broker at {cfg.mqtt.host}:{cfg.mqtt.port} within "
                              f"{TIMEOUT_S:g} s ({transport.last_refusal or 'no answer'})")
        for topic in retained:
            transport.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(TIMEOUT_S)
    finally:
        transport.stop()
    print(f"forgot {cfg.device_id}: cleared {len(retained)} retained topics "
          f"(Home Assistant discovery: {ha.discovery_topic})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forget", help="remove a device from Home Assistant and clear its retained topics",
                       description="Clear the device's retained MQTT topics: its Home Assistant discovery "
                                   "message (the device disappears from Home Assistant), the entities' last "
                                   "values and its status. Stop the service first. See docs/deploy.md.")
    p.add_argument("--config", required=True, help="the device's config (TOML): broker, credentials, device id")
    p.add_argument("--root", help="resolve the config's absolute paths inside this directory")
    p.set_defaults(func=_forget)
