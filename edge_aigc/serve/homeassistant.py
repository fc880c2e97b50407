"""Home Assistant MQTT discovery: the device, its sensors, a prompt box and buttons.

One retained device-based discovery message, ``<prefix>/device/<object id>/config``
(``dev``, ``o``, ``cmps``), describes every entity; availability is bound to the device's
own retained ``status`` (``online``/``offline``, the MQTT Will). The message is published
on every connect and again whenever Home Assistant announces itself on
``<prefix>/status`` (``online``); ``edge-aigc forget`` publishes the empty retained
payload that removes the device. Entities:

- sensors from the ``metrics`` topic: queue depth, last latency, RSS, CPU temperature
  (where the board has one);
- a ``text`` entity whose value is sent to the text model as a prompt, and a sensor with
  the last answer (state: its first 255 characters; attribute ``text``: all of it);
- a button per generator (draw digits, play a tune), the last image as an ``image``
  entity (``image_topic``, PNG bytes), the last tune as WAV bytes on ``ha/audio``.

Requests from Home Assistant are jobs on the device's one worker (worker.py), in the same
queue as MQTT and HTTP ones. Reference: docs/deploy.md, "Home Assistant".
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any, Callable

from .._version import __version__
from ..contract import Action, Task
from ..errors import RequestError
from ..runtime.runtime import Runtime
from ..tasks.base import Result
from .config import HomeAssistantConfig
from .mqtt.protocol import Topics
from .worker import Job

__all__ = ["HaTopics", "HomeAssistant", "TUNE"]

log = logging.getLogger(__name__)

TUNE = "C4:0.25 E4:0.25 G4:0.25 C5:0.5"  # what the "play a tune" button asks the audio model for
ANSWER_CHARS = 255                     # Home Assistant keeps at most 255 characters of a state


class HaTopics:
    """Every topic Home Assistant's side of the device uses, from the config alone (``forget``
    clears the retained ones without a running service)."""

    def __init__(self, cfg: HomeAssistantConfig, device_id: str, topics: Topics):
        self.object_id = "edge_aigc_" + re.sub(r"[^A-Za-z0-9_-]", "_", device_id)
        base = f"{topics.root}/ha"
        self.prompt_set, self.prompt_state, self.answer = f"{base}/prompt/set", f"{base}/prompt", f"{base}/answer"
        self.draw, self.play = f"{base}/draw/press", f"{base}/play/press"
        self.image, self.audio = f"{base}/image", f"{base}/audio"
        self.ha_status = f"{cfg.discovery_prefix}/status"
        self.discovery_topic = f"{cfg.discovery_prefix}/device/{self.object_id}/config"

    @property
    def subscriptions(self) -> list[str]:
        return [self.ha_status, self.prompt_set, self.draw, self.play]

    def retained_topics(self) -> list[str]:
        """Everything Home Assistant's side leaves retained on the broker (``forget`` clears them)."""
        return [self.discovery_topic, self.prompt_state, self.answer, self.image, self.audio]


class HomeAssistant(HaTopics):
    def __init__(self, cfg: HomeAssistantConfig, device_id: str, topics: Topics, runtime: Runtime,
                 submit: Callable[[Job], int], publish: Callable[..., None]):
        super().__init__(cfg, device_id, topics)
        self.cfg, self.device_id, self.topics, self.rt = cfg, device_id, topics, runtime
        self._submit, self._publish = submit, publish

    # -- what the device offers -----------------------------------------------------------
    def model_for(self, task: Task) -> str | None:
        chosen = {Task.TEXT: self.cfg.text_model, Task.IMAGE: self.cfg.image_model,
                  Task.AUDIO: self.cfg.audio_model}[task]
        if chosen:
            return chosen if chosen in self.rt.loaded() else None
        return next((n for n in self.rt.loaded() if self.rt.info(n)["task"] == task), None)

    def discovery(self, cpu_temp: bool) -> dict[str, Any]:
        uid = lambda key: f"{self.object_id}_{key}"  # noqa: E731
        metric = lambda key, name, template, **more: {  # noqa: E731
            "p": "sensor", "name": name, "unique_id": uid(key), "state_topic": self.topics.metrics,
            "value_template": template, "state_class": "measurement", "entity_category": "diagnostic", **more}
        cmps: dict[str, dict[str, Any]] = {
            "queue_depth": metric("queue_depth", "Queue depth", "{{ value_json.queue_depth }}", icon="mdi:tray-full"),
            "last_latency": metric("last_latency", "Last latency", "{{ value_json.last_latency_ms }}",
                                   unit_of_measurement="ms", device_class="duration"),
            "rss": metric("rss", "Memory (RSS)", "{{ value_json.rss_mb }}", unit_of_measurement="MB",
                          device_class="data_size"),
        }
        if cpu_temp:
            cmps["cpu_temperature"] = metric("cpu_temperature", "CPU temperature", "{{ value_json.cpu_temp_c }}",
                                             unit_of_measurement="°C", device_class="temperature")
        if self.model_for(Task.TEXT):
            cmps["prompt"] = {"p": "text", "name": "Prompt", "unique_id": uid("prompt"),
                              "command_topic": self.prompt_set, "state_topic": self.prompt_state,
                              "max": ANSWER_CHARS, "mode": "text", "icon": "mdi:message-question"}
            cmps["answer"] = {"p": "sensor", "name": "Answer", "unique_id": uid("answer"),
                              "state_topic": self.answer, "value_template": "{{ value_json.state }}",
                              "json_attributes_topic": self.answer, "json_attributes_template":
                              "{{ {'text': value_json.text, 'model': value_json.model} | tojson }}",
                              "icon": "mdi:message-reply-text"}
        if self.model_for(Task.IMAGE):
            cmps["draw"] = {"p": "button", "name": "Draw", "unique_id": uid("draw"), "command_topic": self.draw,
                            "icon": "mdi:draw"}
            cmps["last_image"] = {"p": "image", "name": "Last image", "unique_id": uid("last_image"),
                                  "image_topic": self.image, "content_type": "image/png"}
        if self.model_for(Task.AUDIO):
            cmps["play"] = {"p": "button", "name": "Play a tune", "unique_id": uid("play"),
                            "command_topic": self.play, "icon": "mdi:music"}
        return {
            "dev": {"identifiers": [self.object_id], "name": f"edge-aigc {self.device_id}",
                    "manufacturer": "edge-aigc", "model": self.rt.profile.name if self.rt.profile else "device",
                    "sw_version": __version__},
            "o": {"name": "edge-aigc", "sw_version": __version__,
                  "support_url": "https://github.com/edge-aigc/edge-aigc"},
            "availability": [{"topic": self.topics.status, "value_template": "{{ value_json.state }}",
                              "payload_available": "online", "payload_not_available": "offline"}],
            "qos": 1,
            "cmps": cmps,
        }

    def publish_discovery(self, cpu_temp: bool) -> None:
        self._publish(self.discovery_topic, json.dumps(self.discovery(cpu_temp)).encode(), retain=True)

    # -- commands from Home Assistant -------------------------------------------------------
    def handles(self, topic: str) -> bool:
        return topic in self.subscriptions

    def on_message(self, topic: str, payload: bytes, cpu_temp: bool) -> None:
        if topic == self.ha_status:
            if payload.strip() == b"online":  # Home Assistant (re)started: tell it again
                self.publish_discovery(cpu_temp)
            return
        if topic == self.prompt_set:
            prompt = payload.decode("utf-8", "replace").strip()
            if not prompt:
                return
            self._publish(self.prompt_state, prompt.encode(), retain=True)
            model = self.model_for(Task.TEXT)
            chat = model is not None and getattr(self.rt.model(model).task, "chat", None) is not None
            params = {"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt}
            self._run(Task.TEXT, params)
        elif topic == self.draw:
            self._run(Task.IMAGE, {"count": 10, "grid": True, "scale": 4})
        elif topic == self.play:
            self._run(Task.AUDIO, {"notes": TUNE})

    def _run(self, task: Task, params: dict[str, Any]) -> None:
        model = self.model_for(task)
        if model is None:
            log.warning("Home Assistant asked for %s, but no such model is loaded", task)
            return
        job = Job(f"ha-{uuid.uuid4().hex[:16]}", Action.GENERATE, model,
                  lambda ev: self._answer(task, model, ev), params, owner="homeassistant")
        try:
            self._submit(job)
        except RequestError as exc:
            self._answer(task, model, exc)

    def _answer(self, task: Task, model: str, event: Any) -> None:
        """The worker's events for a Home Assistant request: publish what the entities show."""
        if isinstance(event, RequestError):
            log.warning("Home Assistant request for %s failed: %s", model, event)
            if task == Task.TEXT:
                self._publish_answer(model, "", f"({event.code}: {event})")
        elif isinstance(event, Result):
            if task == Task.TEXT:
                self._publish_answer(model, event.text or "", (event.text or "")[:ANSWER_CHARS])
            elif event.outputs:
                self._publish(self.image if task == Task.IMAGE else self.audio, event.outputs[0].data,
                              retain=True, content_type=event.outputs[0].content_type)

    def _publish_answer(self, model: str, text: str, state: str) -> None:
        body = {"state": state or "(empty)", "text": text, "model": model, "ts": round(time.time(), 3)}
        self._publish(self.answer, json.dumps(body, ensure_ascii=False).encode(), retain=True)
