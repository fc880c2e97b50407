"""``edge-aigc run``: offline generation from a bundle or an installed model.

Options come from the parameter specs in ``tasks/params.py`` (one declaration serves the
CLI, the API and the MQTT service). Text streams to stdout; images and audio go to files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..bundle import signing
from ..bundle.load import is_bundle_path
from ..contract import Task
from ..errors import BackendUnavailable, BadRequest
from ..runtime.runtime import Runtime
from ..bundle.store import ModelStore, default_state_dir
from ..tasks.base import Progress, Result, Token
from ..tasks.spec import get_spec
from .output import numbered
from .params import add_param_options, given_params, option_name


def _play(data: bytes) -> None:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise BackendUnavailable("--play needs the audio extra and PortAudio: "
                                 f"pip install 'edge-aigc[audio]' and apt-get install libportaudio2 ({exc})") from None
    import io
    import wave

    import numpy as np

    with wave.open(io.BytesIO(data)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        rate = w.getframerate()
    try:
        sounddevice.play(pcm, rate, blocking=True)
    except Exception as exc:  # PortAudio raises its own error types for missing devices
        raise BackendUnavailable(f"--play: no usable audio output device ({exc}); the WAV file was written") from None


def _write(result: Result, out: str | None) -> list[Path]:
    paths = []
    for i, item in enumerate(result.outputs):
        path = numbered(Path(out) if out else Path(f"{result.model}{Path(item.name).suffix}"), i,
                        len(result.outputs))
        path.write_bytes(item.data)
        paths.append(path)
    return paths


def _run(args: argparse.Namespace) -> int:
    key = signing.load_public_key(args.pubkey) if args.pubkey else None
    store = None if is_bundle_path(args.model) else ModelStore(args.state_dir or default_state_dir(), public_key=key)
    with Runtime(store, args.profile, state_dir=args.state_dir, threads=args.threads,
                 public_key=key) as rt:
        name = rt.load(args.model)
        task = rt.model(name).runner(args.task).task
        given = given_params(args)
        names = {p.name for p in get_spec(task).params}
        for n in given:
            if n not in names:
                raise BadRequest(f"{option_name(n)} does not apply to {task} models")
        if args.chat:
            return _chat(rt, name, task, given, args.system)
        _show(rt.stream(name, task=task, **given), args)
    return 0


def _show(events, args: argparse.Namespace | None) -> Result | None:
    """Stream tokens to stdout and progress to a terminal; ``_finish`` the result unless args is None."""
    result = None
    for event in events:
        if isinstance(event, Token):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, Progress) and sys.stderr.isatty():
            print(f"\r{event.message} {event.step}/{event.total}", end="", file=sys.stderr, flush=True)
        elif isinstance(event, Result):
            result = event
            if args is not None:
                _finish(event, args)
    return result


def _chat(rt: Runtime, name: str, task: str, given: dict, system: str | None) -> int:
    """An interactive chat, like ``ollama run``: one user turn per line, EOF or an empty line ends it."""
    if task != Task.TEXT:
        raise BadRequest(f"--chat applies to text models; {name} is {task}")
    if given.pop("prompt", None) is not None:
        raise BadRequest("--chat reads its turns from standard input; drop --prompt")
    if rt.model(name).task.chat is None:
        raise BadRequest(f"{name} has no chat template; use --prompt")
    messages = [{"role": "system", "content": system}] if system else []
    # one chat session: each turn prefills only its new tokens (beam search keeps no session)
    session = {"session": "cli"} if given.get("num_beams", 1) == 1 else {}
    tty = sys.stdin.isatty()
    while True:
        if tty:
            print(">>> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line.strip():
            return 0
        messages.append({"role": "user", "content": line.rstrip("\n")})
        result = _show(rt.stream(name, messages=messages, **session, **given), None)
        print()
        messages.append({"role": "assistant", "content": result.text if result else ""})


def _finish(result: Result, args: argparse.Namespace) -> None:
    if sys.stderr.isatty():
        print("\r", end="", file=sys.stderr)
    meta = result.summary()
    if result.text is not None:
        print()
    for path in _write(result, args.output):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)", file=sys.stderr)
    print(" ".join(f"{k}={v}" for k, v in meta.items()), file=sys.stderr)
    if args.play:
        wavs = [o for o in result.outputs if o.content_type == "audio/wav"]
        if not wavs:
            raise BadRequest("--play applies to audio models")
        _play(wavs[0].data)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate text, an image, a video or a WAV offline from a bundle or installed model",
                       description="Offline generation. Text streams to stdout; images, videos and audio are "
                                   "written to -o (default: ./<model>.png, .gif, .mp4 or .wav).")
    p.add_argument("model", help="path to a .eaigc bundle, or the name of an installed model")
    p.add_argument("--task", choices=tuple(Task),
                   help="one the model also serves (video-generation from an image model); default: its own")
    p.add_argument("-o", "--output", help="output file for images/audio")
    p.add_argument("--profile", help="device profile (default: detected)")
    p.add_argument("--threads", type=int, help="override the profile's thread count")
    p.add_argument("--state-dir", help="model store location (see edge-aigc models --help)")
    p.add_argument("--pubkey", help="Ed25519 public key the bundle must be signed with")
    p.add_argument("--play", action="store_true", help="play generated audio (needs the audio extra)")
    p.add_argument("--chat", action="store_true",
                   help="chat with a text model: one turn per line on standard input (an empty line ends it)")
    p.add_argument("--system", help="with --chat: a system message to start the conversation")
    add_param_options(p)
    p.set_defaults(func=_run)
