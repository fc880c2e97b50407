"""``edge-aigc demo``: the prebuilt models, served over MQTT: a question answered, then spoken, text, digits, a morph video and a melody.

Broker: ``--broker`` / ``$EDGE_AIGC_BROKER`` if given; else a private Mosquitto on a free
loopback port when one is installed; else the embedded amqtt broker (``broker`` extra).
The service runs with the prebuilt bundles for this machine's profile (signatures
checked against the zoo key), a client sends one request per model exactly as an
application would, and everything is shut down at the end. The voice speaks the chat
model's answer where espeak-ng phonemes are available (the ``speech`` extra, or the
system's espeak-ng); without them the demo says what to install and skips it.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ..tasks import espeak
from .. import zoo
from ..contract import EventKind, Task
from ..device.detect import profile_name_or_detect
from ..errors import ConfigError, RequestError, UnknownModel
from ..serve.app import build_service
from ..remote.local_brokers import EmbeddedBroker, Mosquitto, find_mosquitto
from ..remote.client import DeviceClient
from ..serve.config import Limits, MqttConfig, ServiceConfig
from ..serve.mqtt.protocol import parse_broker_url
from ..bundle.store import ModelStore
from .output import human_bytes, table

DEVICE = "demo"
SPEECH = {m for m, what in zoo.MODELS.items() if what.startswith("speech")}
QUESTION = "What is the capital of France?"
REQUESTS = [  # (what, model, params, file)
    ("chat", "smollm2-135m", {"messages": [{"role": "user", "content": QUESTION}], "max_new_tokens": 48,
                              "temperature": 0}, "answer.txt"),
    ("text", "fortune-gpt", {"prompt": "You will", "max_new_tokens": 48, "temperature": 0.7, "seed": 7},
     "fortune.txt"),
    ("image", "digits", {"count": 16, "seed": 7, "scale": 3}, "digits.png"),
    ("video", "digits-vae", {"labels": [str(d) for d in range(10)], "frames": 60, "fps": 10, "seed": 3},
     "morph.gif"),  # one latent, each digit turning into the next: the VAE's classes blend
    ("audio", "tones", {"notes": "C4:0.25 E4:0.25 G4:0.25 C5:0.5 G4:0.25 E4:0.25 C4:0.75"}, "tones.wav"),
    ("speech", "en_us-joe-medium", {"seed": 1}, "answer.wav"),  # speaks the chat's answer
]


@contextlib.contextmanager
def _broker(url: str | None, workdir: Path, embedded: bool = False) -> Iterator[tuple[str, int, str]]:
    """(url, MQTT protocol, description) of the broker to use, started here if needed."""
    if url:
        yield url, 5, f"configured broker {url}"
    elif find_mosquitto() and not embedded:
        with Mosquitto(workdir / "mosquitto") as b:
            yield f"mqtt://{b.host}:{b.port}", 5, f"mosquitto on 127.0.0.1:{b.port} (pid {b.pid})"
    else:
        broker = EmbeddedBroker().start()
        try:
            yield f"mqtt://{broker.host}:{broker.port}", 311, f"embedded amqtt on 127.0.0.1:{broker.port}"
        finally:
            broker.stop()


def _demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profile = profile_name_or_detect(args.profile)
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="edge-aigc-demo-") as tmp, \
            _broker(args.broker or os.environ.get("EDGE_AIGC_BROKER"), Path(tmp), args.embedded_broker) \
            as (url, protocol, what):
        say(f"broker: {what}")
        store = ModelStore(tmp, public_key=_zoo_key(), require_signature=True)
        models = []
        for model in zoo.MODELS:
            if model in SPEECH and espeak.unavailable():
                say(f"skipping {model}: {espeak.unavailable()}")
                continue
            try:
                store.install(zoo.zoo_bundle(model, profile).path)
                models.append(model)
            except UnknownModel as exc:  # SmolLM2 ships no bundle small enough for rpi-zero-2w
                say(f"skipping {model}: {exc}")
        say(f"installed {', '.join(models)} for profile {profile} (signatures verified)")
        started = time.perf_counter()
        broker = parse_broker_url(url)
        cfg = ServiceConfig(device_id=DEVICE, models=tuple(models), profile=profile, state_dir=tmp,
                            pubkey=str(zoo.zoo_public_key_path()),
                            mqtt=MqttConfig(host=broker.host, port=broker.port, tls=broker.tls, protocol=protocol),
                            limits=Limits(metrics_interval_s=5))
        runtime, service = build_service(cfg)
        service.start()
        try:
            if not service.wait_ready(30):
                raise ConfigError(f"the service could not connect to {url}: {service.transport.last_refusal}")
            digits = runtime.info("digits")
            say(f"service '{DEVICE}' online in {time.perf_counter() - started:.2f} s "
                f"(models on {', '.join(digits['providers'])}, {digits['threads']} threads)\n")
            rows = _requests(url, protocol, out, say, models)
        finally:
            service.stop()
            runtime.close()
    print(table(("REQUEST", "MODEL", "FIRST EVENT", "TOTAL", "ON DEVICE", "OUTPUT"), rows))
    say("\nall done; the service, the broker and the temporary store are shut down")
    return 0


def _zoo_key():
    from ..bundle.signing import load_public_key

    return load_public_key(zoo.zoo_public_key_path())


def _requests(url: str, protocol: int, out: Path, say, models: list[str]) -> list[tuple]:
    rows, answer = [], QUESTION
    with DeviceClient(url, protocol=protocol) as client:
        for what, model, params, filename in (r for r in REQUESTS if r[1] in models):
            if what == "speech":
                params = {**params, "text": answer}
                say(f"> {model}, speaking: {answer!r}")
            first: list[float] = []
            start = time.perf_counter()

            def on_event(ev: dict) -> None:
                if not first:
                    first.append(time.perf_counter() - start)
                if ev["event"] == EventKind.TOKEN:
                    sys.stdout.write(ev["text"])
                    sys.stdout.flush()

            if what == "text":
                say(f"> {model}: {params['prompt']!r}")
                sys.stdout.write(params["prompt"])
            elif what == "chat":
                say(f"> {model}, asked: {params['messages'][-1]['content']!r}")
            fields = {"task": Task.VIDEO} if what == "video" else {}
            response = client.request(DEVICE, "generate", model, params, on_event=on_event, **fields)
            total = time.perf_counter() - start
            final = response.final
            if final["event"] == EventKind.ERROR:
                raise RequestError(f"{model}: {final['code']}: {final['message']}")
            path = out / filename
            if what == "chat":
                answer = final["text"].strip() or QUESTION
            if what in ("text", "chat"):
                print("\n")
                path.write_text(params.get("prompt", "") + final["text"] + "\n")
            else:
                path.write_bytes(response.data[final["data"][0]["topic"]])
            rows.append((what, model, f"{first[0] * 1000:.0f} ms", f"{total * 1000:.0f} ms",
                         f"{final['meta']['seconds'] * 1000:.0f} ms", f"{path} ({human_bytes(path.stat().st_size)})"))
    return rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo: prebuilt models over MQTT, writes text, PNG, GIF and WAV",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", help="use this broker (mqtt://host:port) instead of starting one")
    p.add_argument("--profile", help="device profile whose prebuilt bundles to use (default: detected)")
    p.add_argument("--out", default="demo-out", help="where to write the outputs (default: ./demo-out)")
    p.add_argument("--embedded-broker", action="store_true",
                   help="use the embedded amqtt broker even when Mosquitto is installed")
    p.set_defaults(func=_demo)
