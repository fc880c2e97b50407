"""``edge-aigc send DEVICE ACTION``: a client of the device service.

Publishes a request, prints tokens as they arrive, saves binary results (checked against
their sha256), and exits non-zero (7) on an ``error`` event. DEVICE may be ``pool:NAME``.
The MQTT password comes from --password-file or $EDGE_AIGC_MQTT_PASSWORD, never argv.
Installing a bundle is ``edge-aigc push`` (it sends the chunks).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..contract import Action, EventKind, Task
from ..errors import RequestError
from ..serve.mqtt.protocol import ACTIONS
from .broker_options import add_broker_options, client_from_args
from .output import numbered
from .params import add_param_options, given_params


def _print_event(ev: dict) -> None:
    if ev["event"] == EventKind.TOKEN:
        sys.stdout.write(ev["text"])
        sys.stdout.flush()
    elif ev["event"] == EventKind.PROGRESS and sys.stderr.isatty():
        print(f"\r{ev.get('message', '')} {ev['step']}/{ev['total']}", end="", file=sys.stderr, flush=True)


def _save(response, output: str | None) -> list[Path]:
    paths = []
    entries = response.final.get("data", [])
    for i, d in enumerate(entries):
        path = numbered(Path(output) if output else Path(f"{response.id}-{d['name']}"), i, len(entries))
        path.write_bytes(response.data[d["topic"]])
        paths.append(path)
    return paths


def _send(args: argparse.Namespace) -> int:
    pool = args.device.removeprefix("pool:") if args.device.startswith("pool:") else None
    fields = {k: v for k, v in (("target", args.target), ("timeout_s", args.deadline), ("task", args.task))
              if v is not None}
    with client_from_args(args) as client:
        response = client.request(args.device, args.action, args.model, given_params(args) or None,
                                  request_id=args.id, timeout=args.timeout, pool=pool,
                                  on_event=None if args.json else _print_event, **fields)
    final = response.final
    if args.json:
        print(json.dumps(response.events, indent=2, ensure_ascii=False))
    if final["event"] == EventKind.ERROR:
        print(f"\nedge-aigc send: {final['code']}: {final['message']}", file=sys.stderr)
        return RequestError.exit_code
    if "text" in final and not args.json:
        print()
    for path in _save(response, args.output):
        print(f"wrote {path} ({path.stat().st_size:,} bytes, sha256 verified)", file=sys.stderr)
    if not args.json and args.action in ("status", "models", "cancel", "load", "unload", "rollback"):
        print(json.dumps({k: v for k, v in final.items() if k not in ("event", "id", "data", "ts")},
                         indent=2, ensure_ascii=False))
    elif "meta" in final:
        print(" ".join(f"{k}={v}" for k, v in final["meta"].items()), file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send", help="send a request to a device over MQTT and stream the reply",
                       description="A client of `edge-aigc serve`. See docs/protocol.md.")
    p.add_argument("device", help="device id, or pool:NAME to let one device of a pool answer")
    p.add_argument("action", choices=[a for a in ACTIONS if a != Action.INSTALL],
                   help="(installing a bundle is `edge-aigc push`)")
    p.add_argument("--model", help="model name (generate, load, unload, rollback)")
    p.add_argument("--task", choices=tuple(Task),
                   help="generate: one the model also serves (video-generation from an image model)")
    p.add_argument("--target", help="cancel: the id of the request to stop")
    p.add_argument("--id", help="request id (default: random); re-sending an id is not run twice")
    p.add_argument("-o", "--output", help="where to save a binary result (default: ./<id>-<name>)")
    add_broker_options(p)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the result")
    p.add_argument("--deadline", type=float, help="ask the device to give up after this many seconds")
    p.add_argument("--json", action="store_true", help="print every event as JSON")
    add_param_options(p)
    p.set_defaults(func=_send)
