"""The Ollama-compatible routes (``/api/...``) beside the OpenAI ones, on the same server, auth,
limits and queue: what Home Assistant's Ollama integration and the ``ollama`` client call.

    GET  /api/version, /api/tags, /api/ps      POST /api/show, /api/chat, /api/generate, /api/pull

Errors are Ollama's ``{"error": "…"}`` with the HTTP status our codes map to. Streaming is
Ollama's NDJSON: one JSON object a line, the last with ``done: true`` and the counts.
Reference: docs/homeassistant.md.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from typing import Any, AsyncIterator

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..._version import __version__
from ...contract import Action, Task
from ...errors import BadRequest, RequestError, UnknownModel
from ...tasks.base import Result, Token
from ..worker import Done, Job, JobEvents
from . import ollama as ol
from .api import Api
from .common import STATUS
from .openai import Call

__all__ = ["OllamaRoutes", "ollama_error"]

NDJSON = "application/x-ndjson"


def ollama_error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=headers)


class OllamaRoutes:
    def __init__(self, api: Api):
        self.api, self.rt = api, api.rt

    def routes(self) -> list[tuple[str, Any, str, Any]]:
        return [(path, handler, method, ollama_error) for path, handler, method in (
            ("/api/version", self.version, "GET"), ("/api/tags", self.tags, "GET"), ("/api/ps", self.ps, "GET"),
            ("/api/show", self.show, "POST"), ("/api/chat", self.chat, "POST"),
            ("/api/generate", self.generate, "POST"), ("/api/pull", self.pull, "POST"))]

    # -- models ---------------------------------------------------------------------------
    def _text_models(self) -> list[str]:
        return [n for n in self.rt.loaded() if self.rt.info(n)["task"] == Task.TEXT]

    def _entry(self, name: str, running: bool = False) -> dict[str, Any]:
        manifest = self.rt.model(name).bundle.manifest
        digest = hashlib.sha256(json.dumps(sorted(manifest.files.items())).encode()).hexdigest()
        return ol.model_entry(self.rt.info(name), manifest.size_bytes, digest, manifest.created, running)

    async def version(self, request: HttpRequest) -> Response:
        return JSONResponse({"version": __version__})

    async def tags(self, request: HttpRequest) -> Response:
        return JSONResponse({"models": [self._entry(n) for n in self._text_models()]})

    async def ps(self, request: HttpRequest) -> Response:
        return JSONResponse({"models": [self._entry(n, running=True) for n in self._text_models()]})

    async def show(self, request: HttpRequest) -> Response:
        body = await self.api.body(request)
        name = self._text_model(body.get("model") if isinstance(body, dict) else None)
        model = self.rt.model(name)
        cfg, entry = model.bundle.manifest.config, self._entry(name)
        return JSONResponse({"modelfile": "", "parameters": "", "template": cfg.chat_template,
                             "details": entry["details"], "modified_at": entry["modified_at"],
                             "model_info": {"general.architecture": cfg.architecture,
                                            "context_length": model.task.max_context},
                             "capabilities": ["completion"]})

    def _text_model(self, given: Any) -> str:
        name = ol.model_name(given)
        if name not in self.rt.loaded():
            raise UnknownModel(f"model {name!r} not found (GET /api/tags lists them)")
        if self.rt.info(name)["task"] != Task.TEXT:
            raise BadRequest(f"model {name!r} is a {self.rt.info(name)['task']} model, not a chat model")
        return name

    async def pull(self, request: HttpRequest) -> Response:
        """The device downloads nothing itself: a loaded model is there already, an installed one
        is loaded (through the worker), anything else is a 404 saying how to install it."""
        body = await self.api.body(request)
        if not isinstance(body, dict):
            raise BadRequest("pull: the body must be a JSON object")
        name = ol.model_name(body.get("model") or body.get("name"))
        if name not in self.rt.loaded():
            store = self.rt.store
            if store is None or name not in store.names():
                raise UnknownModel(f"pull model manifest: {name!r} is not installed on this device, which downloads "
                                   "nothing itself (install it with edge-aigc push or POST /v1/installs)")
            events = JobEvents(asyncio.get_running_loop())
            self.api.worker.submit(Job(f"http-{uuid.uuid4().hex}", Action.LOAD, name, events))
            while not isinstance(event := await events.next(), (Done, RequestError)):
                pass
            if isinstance(event, RequestError):
                raise event
        lines = [{"status": "pulling manifest"}, {"status": "success"}]
        if body.get("stream", True) is False:
            return JSONResponse(lines[-1])
        return Response("".join(json.dumps(line) + "\n" for line in lines), media_type=NDJSON)

    # -- generation ---------------------------------------------------------------------------
    async def chat(self, request: HttpRequest) -> Response:
        return await self._answer(request, ol.chat_call(await self.api.body(request)), chat=True)

    async def generate(self, request: HttpRequest) -> Response:
        body = await self.api.body(request)
        model = self._text_model(body.get("model") if isinstance(body, dict) else None)
        template = bool(getattr(self.rt.model(model).bundle.manifest.config, "chat_template", ""))
        return await self._answer(request, ol.generate_call(body, template), chat=False)

    async def _answer(self, request: HttpRequest, call: Call, chat: bool) -> Response:
        start = time.perf_counter()
        call = Call(self._text_model(call.model), call.task, call.params, call.stream)
        if not call.params:  # nothing to say: Ollama's way to load a model, and ours is loaded
            line = ol.final(call.model, None, chat, time.perf_counter() - start)
            return Response(json.dumps(line) + "\n", media_type=NDJSON) if call.stream else JSONResponse(line)
        req, job = self.api.submit(call, request)
        if not call.stream:
            result = await self.api.result(request, req, job)
            return JSONResponse(ol.final(call.model, result, chat, time.perf_counter() - start, result.text or ""))
        events = self.api.events(request, req, job)
        first = await events.__anext__()  # an error before the first token is a plain HTTP error
        await events.aclose()  # from here on Starlette watches for the client going away
        return StreamingResponse(self._lines(req, job, first, call.model, chat, start), media_type=NDJSON)

    async def _lines(self, req: Job, job: JobEvents, first: Any, model: str, chat: bool,
                     start: float) -> AsyncIterator[bytes]:
        try:
            event = first
            while True:
                if isinstance(event, Token) and event.text:
                    yield _line(ol.chunk(model, event.text, chat))
                elif isinstance(event, Result):
                    yield _line(ol.final(model, event, chat, time.perf_counter() - start))
                    break
                elif isinstance(event, RequestError):
                    yield _line({"error": str(event), "status": STATUS.get(event.code, 500)})
                    break
                event = await job.next()
        finally:
            if not job.done:  # the client went away mid-stream: stop generating
                self.api.worker.cancel(req.id)


def _line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False) + "\n").encode()
