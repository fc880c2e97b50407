"""What the MQTT front end sends back: a job's events as replies, and the installer's voice.

:class:`MqttReplies` is the worker's :class:`~.worker.Listener` for one MQTT request: tokens,
progress and chunks go to the request's reply topic as they come; binary outputs go on their
own data topics before the result event that names them; the final replies are kept in the
ledger first, so a re-sent request id gets them again. :class:`MqttInstallEvents` speaks for
the transport-free installer (ota/) on the job's reply topic and its retained status topic.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from ...contract import EventKind
from ...errors import RequestError
from ...tasks.base import Chunk, Progress, Result, Token
from ..ledger import Reply, RequestLedger
from ...lifecycle.ota import InstallJob
from .protocol import Request, Topics, data_ref, error_event, event, result_event
from ..worker import Done

__all__ = ["MqttReplies", "MqttInstallEvents", "Send"]

Send = Callable[[Reply], None]


class MqttReplies:
    def __init__(self, req: Request, topics: Topics, device_id: str, ledger: RequestLedger, send: Send):
        self.req, self.topics, self.device_id, self.ledger, self.send = req, topics, device_id, ledger, send

    def __call__(self, ev: Any) -> None:
        req = self.req
        if isinstance(ev, Token):
            self.reply(event(EventKind.TOKEN, req.id, text=ev.text, index=ev.index))
        elif isinstance(ev, Progress):
            self.reply(event(EventKind.PROGRESS, req.id, step=ev.step, total=ev.total, message=ev.message))
        elif isinstance(ev, Chunk):  # its payload on its own data topic, then the event naming it
            topic, out = self.topics.chunk(req.id, ev.index), ev.output
            self.send(Reply(topic, out.data, out.content_type, req.correlation))
            self.reply(event(EventKind.CHUNK, req.id, index=ev.index, meta=ev.meta,
                             data=data_ref(topic, out.content_type, out.data, out.name)))
        elif isinstance(ev, Result):
            self._deliver(ev)
        elif isinstance(ev, Done):
            self.finish([self.result([], **ev.fields)])
        elif isinstance(ev, RequestError):
            self.finish([Reply(req.reply_to, error_event(req.id, ev), None, req.correlation)])

    def reply(self, payload: bytes) -> None:
        self.send(Reply(self.req.reply_to, payload, None, self.req.correlation))

    def result(self, data: list, **fields: Any) -> Reply:
        """The result event; ``device`` says which device (of a pool) answered."""
        payload = result_event(self.req.id, data, device=self.device_id, **fields)
        return Reply(self.req.reply_to, payload, None, self.req.correlation)

    def finish(self, replies: list[Reply]) -> None:
        """The final replies: in the ledger first (a client may re-send the id at once), then out."""
        self.ledger.finish(self.req.id, replies)
        for reply in replies:
            self.send(reply)

    def _deliver(self, result: Result) -> None:
        """Binary outputs on the data topic first, then the result event that names them."""
        replies, data = [], []
        for i, out in enumerate(result.outputs):
            topic = self.topics.data(self.req.id, i)
            replies.append(Reply(topic, out.data, out.content_type, self.req.correlation))
            data.append((topic, out.content_type, out.data, out.name))
        fields: dict[str, Any] = {"model": result.model, "task": result.task, "meta": result.summary()}
        if result.text is not None:
            fields["text"] = result.text
        replies.append(self.result(data, **fields))
        self.finish(replies)


class MqttInstallEvents:
    """The installer's :class:`~.ota.InstallEvents` over MQTT. A job's ``reply`` address is the
    request's reply topic and its MQTT 5 correlation data (hex)."""

    def __init__(self, topics: Topics, publish: Callable[..., None]):
        self.topics, self.publish = topics, publish

    @staticmethod
    def address(req: Request) -> dict[str, str]:
        reply = {"topic": req.reply_to}
        if req.correlation:
            reply["correlation"] = req.correlation.hex()
        return reply

    def reply(self, job: InstallJob, kind: EventKind, **fields: Any) -> None:
        if "topic" not in job.reply:  # not an MQTT request's job (HTTP's clients read its status)
            return
        if kind == EventKind.NEED:  # where to send the chunks asked for
            fields["topic"] = self.topics.ota(job.id)
        payload = result_event(job.id, [], **fields) if kind == EventKind.RESULT else event(kind, job.id, **fields)
        correlation = job.reply.get("correlation")
        self.publish(job.reply["topic"], payload,
                     correlation=bytes.fromhex(correlation) if correlation else None)

    def status(self, job_id: str, status: dict[str, Any] | None) -> None:
        self.publish(self.topics.jobs(job_id), json.dumps(status).encode() if status else b"", retain=True)
