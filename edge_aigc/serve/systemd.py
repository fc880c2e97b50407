"""systemd's notify protocol: READY=1, WATCHDOG=1, STATUS=…, STOPPING=1 over $NOTIFY_SOCKET.

A datagram to a Unix socket (an abstract one when the path starts with '@'); outside
systemd, with no $NOTIFY_SOCKET, every call is a no-op.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Callable

__all__ = ["notify", "watchdog_interval", "Watchdog"]


def notify(message: str) -> bool:
    """Send one notification; returns whether a socket was there to receive it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


def watchdog_interval() -> float | None:
    """Half of $WATCHDOG_USEC in seconds (systemd's advice), when it is meant for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Watchdog:
    """Pings WATCHDOG=1 while ``healthy()`` says so; a stuck service stops pinging and is restarted."""

    def __init__(self, interval: float, healthy: Callable[[], bool]):
        self.interval, self.healthy = interval, healthy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.healthy():
                notify("WATCHDOG=1")

    def stop(self) -> None:
        self._stop.set()
