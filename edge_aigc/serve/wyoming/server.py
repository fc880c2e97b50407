"""The Wyoming server: a TCP listener in a thread of the service process, one
:class:`~.handler.VoiceHandler` per connection, and the zeroconf advertisement
(``_wyoming._tcp.local.``) Home Assistant discovers it by.

Wyoming has no credentials. So on loopback any local client may connect; on another address
only the clients of ``[wyoming] allow_from`` may (config.py refuses such a listener without
it), and any other connection is closed at once with a log line.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading

from ...errors import ConfigError
from ..config import WyomingConfig
from ..listen import bind_tcp
from ..worker import Submitter
from .events import MAX_LINE
from .handler import VoiceHandler

__all__ = ["WyomingServer", "SERVICE_TYPE"]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."


class WyomingServer:
    """``start()`` serves until ``stop()``; ``port`` is the bound port (``listen = "127.0.0.1:0"``
    picks a free one)."""

    def __init__(self, worker: Submitter, cfg: WyomingConfig, device_id: str):
        self.worker, self.cfg, self.name = worker, cfg, cfg.name or device_id
        self.default_voice = cfg.voice
        if cfg.voice and cfg.voice not in worker.rt.loaded():
            raise ConfigError(f"wyoming.voice = {cfg.voice!r} is not a loaded model")
        self.networks = cfg.networks()
        self._sock = bind_tcp(cfg.address, "wyoming.listen", cfg.listen)
        self.port = self._sock.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="wyoming", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._started.wait(timeout):
            raise ConfigError("the Wyoming server did not start (see the log)")
        log.info("Wyoming voices on tcp://%s:%d%s", self.cfg.address[0], self.port,
                 " (advertised over zeroconf)" if self.cfg.zeroconf else "")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop already ended
                pass
        self._thread.join(10)
        self._sock.close()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._client, sock=self._sock, limit=MAX_LINE)
        advert = await _advertise(self.name, self.cfg.address[0], self.port) if self.cfg.zeroconf else None
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            if advert is not None:
                await advert.async_close()
            server.close()
            await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = ipaddress.ip_address(peer[0]) if peer else None
        if address is None or not (address.is_loopback or any(address in n for n in self.networks)):
            log.warning("wyoming: refused a connection from %s (not in wyoming.allow_from)", peer[0] if peer else "?")
            writer.close()
            return
        await VoiceHandler(self.worker, self.default_voice, reader, writer, f"wyoming:{peer[0]}").run()


async def _advertise(name: str, host: str, port: int):
    """Register ``name._wyoming._tcp.local.`` at the listen address (the outgoing interface's when
    listening on every address), as wyoming-piper's ``--zeroconf`` does."""
    from zeroconf import InterfaceChoice, IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    if host in ("0.0.0.0", "::", ""):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("224.0.0.251", 5353))  # no packet is sent: it only picks the interface
            host = probe.getsockname()[0]
    address = ipaddress.ip_address(host)
    zc = AsyncZeroconf(interfaces=[host] if address.is_loopback else InterfaceChoice.All,
                       ip_version=IPVersion.V6Only if address.version == 6 else IPVersion.V4Only)
    info = AsyncServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", addresses=[address.packed], port=port)
    await zc.async_register_service(info)
    return zc
