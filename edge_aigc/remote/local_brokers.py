"""Local MQTT brokers for single-box use (the demo) and tests, on loopback only.

``Mosquitto`` runs the real broker as a child process with its own config on a free
127.0.0.1 port and stops it by PID; ``EmbeddedBroker`` runs amqtt (the ``broker`` extra)
in a thread when no Mosquitto is installed — it speaks MQTT 3.1.1 only.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import BrokerError


def find_mosquitto() -> str | None:
    # Debian installs the broker in /usr/sbin, which is not on every user's PATH.
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """``with Mosquitto(tmpdir) as broker: broker.port`` — a broker listening on 127.0.0.1 only."""

    protocol = 5

    def __init__(self, workdir: Path, extra_config: str = "", port: int | None = None,
                 anonymous: bool = True):
        self.workdir = Path(workdir)
        self.anonymous = anonymous
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra_config = extra_config
        self.host, self.port = "127.0.0.1", port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        binary = find_mosquitto()
        if binary is None:
            raise BrokerError("mosquitto not found on PATH or in /usr/sbin; "
                               "install it with `apt-get install -y mosquitto` (.ci/run does)")
        conf = self.workdir / "mosquitto.conf"
        # Listener options (TLS files) follow the listener line; as root, stay root so the
        # broker can read the test's 0600 key and password files.
        user = "user root\n" if os.geteuid() == 0 else ""
        # set_tcp_nodelay: Mosquitto leaves Nagle's algorithm on by default, and a request's
        # small replies then wait for delayed ACKs (the benchmark: 44 ms per request → 2 ms).
        conf.write_text(f"{user}persistence false\nlog_dest stdout\nset_tcp_nodelay true\n"
                        f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
                        f"listener {self.port} {self.host}\n{self.extra_config}\n")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port}:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker:
    """amqtt in a background thread on 127.0.0.1 (MQTT 3.1.1 only)."""

    protocol = 311

    def __init__(self, port: int | None = None):
        self.host, self.port = "127.0.0.1", port or free_port()
        self._loop = None
        self._thread = None
        self._broker = None

    def start(self, timeout: float = 10.0) -> "EmbeddedBroker":
        import asyncio
        import threading

        try:
            from amqtt.broker import Broker
        except ImportError:
            raise BrokerError("no MQTT broker available: install mosquitto, "
                               "or the embedded one with pip install 'edge-aigc[broker]'") from None
        config = {"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise BrokerError("the embedded amqtt broker did not start")
        return self

    def stop(self) -> None:
        import asyncio

        if self._broker is None:
            return
        asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._broker = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
