"""The HTTP server: the routes of api.py (OpenAI's), ollama_routes.py (Ollama's) and installs.py
under one auth, served by uvicorn in a thread of the service process.

Why Starlette + uvicorn: both pure Python (no compiled extras with plain ``uvicorn``),
maintained, and SSE is a plain ``StreamingResponse``; the service idles at a few MB more
with the server on (benchmarks/http.py measures it). Every answer, down to a request too
malformed to reach the app (a NUL in a header, headers over h11's 16 KiB), is in OpenAI's
error shape, or Ollama's under ``/api/``. Reference: docs/http.md.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, Callable

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from ...errors import ConfigError, RequestError
from ..config import HttpConfig
from ..listen import bind_tcp
from ..worker import Submitter
from . import openai as oa
from .api import OPEN, Api
from .common import STATUS, Failed, admitted, error
from .ollama_routes import OllamaRoutes, ollama_error

__all__ = ["HttpServer", "build_app"]

log = logging.getLogger(__name__)


def build_app(api: Api, cfg: HttpConfig, tokens: frozenset[str],
              extra: list[tuple[str, Any, str]] = ()) -> Starlette:
    """The API's routes, and ``extra`` ones (path, handler, method) under the same auth and errors."""

    networks = cfg.networks()

    def route(path: str, handler: Any, method: str, error: Callable[..., Response] = error) -> Route:
        async def endpoint(request: HttpRequest) -> Response:
            if request.url.path not in OPEN and not admitted(request, tokens, networks):
                return error(401, "a valid bearer token is required (Authorization: Bearer …)",
                             "invalid_api_key", {"WWW-Authenticate": "Bearer"})
            try:
                return await handler(request)
            except Failed as failed:
                return failed.response
            except RequestError as exc:
                status = STATUS.get(exc.code, 500)
                headers = {"Retry-After": str(api.worker.retry_after_s())} if status == 429 else None
                if status == 500:
                    log.error("HTTP %s failed: %s", path, exc)
                return error(status, str(exc), exc.code, headers)
            except Exception:  # a bug answers 500 and never takes the server down
                log.exception("HTTP %s failed", path)
                return error(500, f"{path} failed on the device; the device log has the details", "internal")
        return Route(path, endpoint, methods=[method])

    async def http_error(request: HttpRequest, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        shape = ollama_error if request.url.path.startswith("/api/") else error
        return shape(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code)

    routes = [route("/v1/models", api.models, "GET"), route("/healthz", api.health, "GET"),
              route("/metrics", api.metrics, "GET"), route("/v1/chat/completions", api.chat, "POST"),
              route("/v1/completions", api.completions, "POST"),
              route("/v1/images/generations", api.images, "POST"), route("/v1/audio/speech", api.speech, "POST"),
              *(route(*spec) for spec in OllamaRoutes(api).routes()),
              *(route(path, handler, method) for path, handler, method in extra)]
    middleware = [Middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST", "PUT"],
                             allow_headers=["Authorization", "Content-Type"])] if cfg.cors_origins else []
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})
    app.router.redirect_slashes = False  # its redirect is built from the Host header: a 404 instead
    return app


class _Http11(H11Protocol):
    """uvicorn's HTTP/1.1 (h11), answering a request too malformed to reach the app (a NUL or
    a bad character in a header, headers over h11's 16 KiB, broken framing) in the API's JSON
    error shape where uvicorn writes plain text."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(oa.error_body(400, "malformed HTTP request: a header with a character "
                                        "HTTP forbids, headers over 16 KiB, or broken framing", "bad_request"))
        head = h11.Response(status_code=400, reason=b"Bad Request",
                            headers=[(b"content-type", b"application/json"), (b"connection", b"close")])
        for event in (head, h11.Data(data=body.encode()), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


class HttpServer:
    """uvicorn serving :func:`build_app` in a thread of its own; ``port`` is the bound port
    (``listen = "127.0.0.1:0"`` picks a free one)."""

    def __init__(self, worker: Submitter, metrics: Callable[[], dict[str, Any]], max_bytes: int,
                 cfg: HttpConfig, tokens: frozenset[str], extra: list[tuple[str, Any, str]] = ()):
        if not tokens and not cfg.loopback and not cfg.allow_from:
            raise ConfigError(f"http.listen = {cfg.listen!r} is reachable from other machines: give "
                              "bearer tokens (http.tokens_file or $CREDENTIALS_DIRECTORY/http-tokens), "
                              "list the clients that need none (http.allow_from), or listen on 127.0.0.1")
        self._sock = bind_tcp(cfg.address, "http.listen", cfg.listen)
        self.port = self._sock.getsockname()[1]
        self.tls = bool(cfg.cert_file)
        app = build_app(Api(worker, metrics, max_bytes, tokens), cfg, tokens, list(extra))
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", http=_Http11,
                                ssl_certfile=cfg.cert_file or None, ssl_keyfile=cfg.key_file or None,
                                timeout_graceful_shutdown=5)
        try:
            config.load()  # reads the TLS files now, so a bad one is a config error at start
        except (OSError, ValueError) as exc:
            self._sock.close()
            raise ConfigError(f"http: cannot use the TLS certificate or key: {exc}") from None
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise ConfigError("the HTTP server did not start (see the log)")
        log.info("OpenAI-compatible API on %s://%s:%d/v1", "https" if self.tls else "http", *self._sock.getsockname()[:2])

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()
