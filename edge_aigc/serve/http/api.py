"""The OpenAI-compatible HTTP API beside MQTT: one runtime, one queue, one set of limits.

The routes' handlers; server.py serves them with Starlette on uvicorn. A request is checked
here (auth, size, JSON, OpenAI fields, model and parameters), then submitted as a job to
the device's one worker (worker.py) with a listener that hands the worker's events back to
this thread's event loop. So MQTT and HTTP requests wait in one line, under one
``queue_size``; a full queue is a 429 with ``Retry-After``. A client that goes away cancels
its request (queued or running) at the next step.
Reference: docs/http.md.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse

from ...contract import Action, Task
from ...errors import BadRequest, RequestError, UnknownModel
from ...tasks.base import Result, Token
from . import openai as oa
from ..ledger import Reply
from ..payload import decode_json
from ..worker import Job, JobEvents, Submitter
from .common import STATUS, Failed, bearer, disconnected, error, read_body
from .prometheus import CONTENT_TYPE, exposition

__all__ = ["Api", "OPEN"]

log = logging.getLogger(__name__)

OPEN = {"/healthz"}  # everything else needs a token when tokens are configured
_KEY_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # an Idempotency-Key: what MQTT allows as an id


class Api:
    """The routes, bound to one service."""

    def __init__(self, worker: Submitter, metrics: Callable[[], dict[str, Any]], max_bytes: int,
                 tokens: frozenset[str]):
        self.worker, self.rt, self.tokens = worker, worker.rt, tokens
        self.device_metrics, self.max_bytes = metrics, max_bytes
        self.created = int(time.time())  # the models' "created": when this server loaded them

    # -- the plumbing every route shares ----------------------------------------------
    def owner(self, request: HttpRequest) -> str:
        """Whose chat sessions: one owner per token (a hash of it), so clients never share."""
        token = bearer(request) or ""
        return "http:" + hashlib.sha256(token.encode()).hexdigest()[:16] if token else "http:local"

    async def body(self, request: HttpRequest) -> Any:
        return decode_json(await read_body(request, self.max_bytes))

    def check(self, call: oa.Call) -> None:
        """The model is loaded and of this endpoint's task (the worker checks the parameters
        when the job is submitted): all answered before the request takes a queue slot."""
        if call.model not in self.rt.loaded():
            raise UnknownModel(f"model {call.model!r} is not loaded (loaded: {', '.join(self.rt.loaded()) or 'none'})")
        info = self.rt.info(call.model)
        if info["task"] != call.task:
            raise BadRequest(f"model {call.model!r} is a {info['task']} model; this endpoint serves "
                             f"{call.task} models")

    def submit(self, call: oa.Call, request: HttpRequest) -> tuple[Job, JobEvents]:
        self.check(call)
        events = JobEvents(asyncio.get_running_loop())
        job = Job(f"http-{uuid.uuid4().hex}", Action.GENERATE, call.model, events, call.params,
                  owner=self.owner(request))
        self.worker.submit(job)  # BadRequest for bad parameters, Busy when the queue is full
        return job, events

    async def events(self, request: HttpRequest, req: Job, job: JobEvents) -> AsyncIterator[Any]:
        """The request's events up to its Result (a RequestError is raised), cancelling the
        request if the client goes away first (while it waits in the queue, too)."""
        gone = asyncio.ensure_future(disconnected(request))
        try:
            while True:
                step = asyncio.ensure_future(job.next())
                await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    self.worker.cancel(req.id)
                    raise Failed(Response(status_code=499))  # nobody is listening any more
                event = step.result()
                if isinstance(event, RequestError):
                    raise event
                yield event
                if isinstance(event, Result):
                    return
        finally:
            gone.cancel()

    async def once(self, request: HttpRequest, call: oa.Call,
                   answer: Callable[[Job, Result], Response]) -> Response:
        """Run a non-streaming call. With an ``Idempotency-Key`` header, a repeat of a finished
        request gets the first answer again instead of a second run, and one of a running
        request a 409: the rule MQTT applies to request ids (the same ledger, per token)."""
        key = request.headers.get("idempotency-key")
        if key is None:
            req, job = self.submit(call, request)
            return answer(req, await self.result(request, req, job))
        if not _KEY_RE.match(key):
            raise BadRequest("Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        ledger, lid = self.worker.ledger, f"http:{self.owner(request)}:{key}"
        seen = ledger.claim(lid)
        if seen is not None and seen.state != "done":
            raise Failed(error(409, "a request with this Idempotency-Key is still running", "conflict"))
        if seen is not None and seen.replies:
            return Response(seen.replies[0].payload, media_type=seen.replies[0].content_type)
        try:  # new, or answered so long ago that the ledger no longer holds the answer
            req, job = self.submit(call, request)
            response = answer(req, await self.result(request, req, job))
        except BaseException:
            ledger.forget(lid)  # refused or failed: the client may try again with the same key
            raise
        ledger.finish(lid, [Reply("", bytes(response.body), response.media_type)])
        return response

    async def result(self, request: HttpRequest, req: Job, job: JobEvents) -> Result:
        events = self.events(request, req, job)
        try:
            async for event in events:
                if isinstance(event, Result):
                    return event
        finally:
            await events.aclose()  # stops its disconnect watcher now, not when it is collected
        raise RequestError("the request ended without a result")  # our bug: code "internal"

    # -- routes ---------------------------------------------------------------------------
    async def models(self, request: HttpRequest) -> Response:
        return JSONResponse(oa.model_list([self.rt.info(n) for n in self.rt.loaded()], self.created))

    async def health(self, request: HttpRequest) -> Response:
        ok = self.worker.healthy
        return JSONResponse({"status": "ok" if ok else "unhealthy", "models": self.rt.loaded(),
                             "queue_depth": self.worker.queue_depth}, 200 if ok else 503)

    async def metrics(self, request: HttpRequest) -> Response:
        return Response(exposition(self.device_metrics(), self.rt.loaded()), media_type=CONTENT_TYPE)

    async def chat(self, request: HttpRequest) -> Response:
        return await self._text(request, oa.chat_call(await self.body(request)), chat=True)

    async def completions(self, request: HttpRequest) -> Response:
        return await self._text(request, oa.completion_call(await self.body(request)), chat=False)

    async def _text(self, request: HttpRequest, call: oa.Call, chat: bool) -> Response:
        prefix, created = "chatcmpl-" if chat else "cmpl-", int(time.time())
        if not call.stream:
            shape = oa.chat_response if chat else oa.completion_response
            return await self.once(request, call, lambda req, result: JSONResponse(
                shape(prefix + req.id[5:], result, created)))
        if "idempotency-key" in request.headers:
            raise BadRequest("Idempotency-Key is honoured on non-streaming requests only")
        req, job = self.submit(call, request)
        rid = prefix + req.id[5:]
        events = self.events(request, req, job)
        first = await events.__anext__()  # an error before the first token is a plain HTTP error
        await events.aclose()  # from here on Starlette watches for the client going away
        return StreamingResponse(self._sse(req, job, first, rid, created, call, chat),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _sse(self, req: Job, job: JobEvents, first: Any, rid: str, created: int, call: oa.Call,
                   chat: bool) -> AsyncIterator[bytes]:
        model = call.model
        chunk = (lambda **kw: oa.chat_chunk(rid, model, created, **kw)) if chat else \
            (lambda **kw: oa.completion_chunk(rid, model, created, **kw))
        try:
            if chat:
                yield _sse(chunk(delta={"role": "assistant", "content": ""}))
            event = first
            while True:
                if isinstance(event, Token) and event.text:
                    yield _sse(chunk(delta={"content": event.text}) if chat else chunk(text=event.text))
                elif isinstance(event, Result):
                    yield _sse(chunk(finish=oa.finish_reason(event)))
                    if call.include_usage:
                        yield _sse(chunk(usage_=oa.usage(event)))
                    break
                elif isinstance(event, RequestError):
                    yield _sse(oa.error_body(STATUS.get(event.code, 500), str(event), event.code))
                    break
                event = await job.next()
            yield b"data: [DONE]\n\n"
        finally:
            if not job.done:  # the client went away mid-stream: stop generating
                self.worker.cancel(req.id)

    async def images(self, request: HttpRequest) -> Response:
        call = oa.image_call(await self.body(request))
        if call.size is not None and call.model in self.rt.loaded() and \
                self.rt.info(call.model)["task"] == Task.IMAGE:  # else submit() says what is wrong
            if "scale" in call.params:
                raise BadRequest("images: give 'size' or 'scale', not both")
            call = oa.Call(call.model, call.task, {**call.params, "scale": self._scale(call)}, size=call.size)
        return await self.once(request, call, lambda req, result: JSONResponse(
            oa.image_response(result, int(time.time()))))

    def _scale(self, call: oa.Call) -> int:
        native = tuple(self.rt.model(call.model).bundle.manifest.config.image_size[-2:])
        w, h = call.size
        if len(native) != 2 or w % native[1] or h % native[0] or w // native[1] != h // native[0] \
                or not 1 <= w // native[1] <= 16:
            what = f"{native[1]}x{native[0]} images, or 2 to 16 times that" if len(native) == 2 else "one size"
            raise BadRequest(f"images: 'size' {w}x{h} is not available; {call.model} draws {what}")
        return w // native[1]

    async def speech(self, request: HttpRequest) -> Response:
        body = await self.body(request)
        name = body.get("model") if isinstance(body, dict) else None
        loaded = isinstance(name, str) and name in self.rt.loaded()
        task = Task(self.rt.info(name)["task"]) if loaded else Task.AUDIO
        speakers = getattr(self.rt.model(name).bundle.manifest.config, "num_speakers", 1) if loaded else 1
        call = oa.speech_call(body, task, speakers)
        return await self.once(request, call,
                               lambda req, result: Response(result.outputs[0].data, media_type="audio/wav"))


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
