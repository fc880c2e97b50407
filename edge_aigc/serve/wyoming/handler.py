"""One Wyoming connection: ``describe``, ``synthesize`` and the streaming
``synthesize-start`` / ``-chunk`` / ``-stop``, each spoken through the device's one worker.

A request is a speech job like any MQTT or HTTP one (same queue, limits, cancel). Its
sentences come back as the task's chunks; each is sent as ``audio-chunk`` events of
:data:`SAMPLES_PER_CHUNK` samples (wyoming-piper's size) between ``audio-start`` and
``audio-stop``. In a stream, text is spoken sentence by sentence as it arrives, each sentence
its own ``audio-start`` … ``audio-stop`` as wyoming-piper does, then ``synthesize-stopped``.
A client's mistake is an ``error`` event and the connection goes on; a client that goes away
cancels its request.
"""
from __future__ import annotations

import asyncio
import io
import logging
import re
import uuid
import wave

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from ...contract import Action
from ...errors import BadRequest, RequestError
from ...tasks.base import Chunk, Result
from ...tasks.speech import MAX_SPEECH_CHARS
from ..worker import Job, JobEvents, Submitter
from .events import Malformed, read_event
from .voices import check_voice, describe, pick_voice, voice_params

__all__ = ["VoiceHandler", "SAMPLES_PER_CHUNK"]

log = logging.getLogger(__name__)

SAMPLES_PER_CHUNK = 1024
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"')\]]*\s+")  # the end of a sentence, then space


class VoiceHandler:
    """The events of one client connection, answered in order."""

    def __init__(self, worker: Submitter, default_voice: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, owner: str):
        self.worker, self.rt, self.default = worker, worker.rt, default_voice
        self.reader, self.writer, self.owner = reader, writer, owner
        self.stream: SynthesizeVoice | None = None   # the voice of the text stream in progress
        self.streaming, self.pending = False, ""      # and its text not yet spoken

    async def run(self) -> None:
        try:
            while True:
                try:
                    event = await read_event(self.reader)
                except Malformed as bad:
                    await self.error(str(bad), "bad_request")
                    if bad.fatal:
                        return
                    continue
                if event is None:
                    return
                await self.handle(event)
        except (ConnectionError, asyncio.IncompleteReadError):
            log.debug("wyoming: %s went away", self.owner)
        finally:
            self.writer.close()

    async def handle(self, event: Event) -> None:
        try:
            await self.dispatch(event)
        except RequestError as exc:
            await self.error(str(exc), exc.code)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # fields of the wrong shape
            await self.error(f"{event.type}: malformed event data ({type(exc).__name__}: {exc})", "bad_request")

    async def dispatch(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.send(describe(self.rt).event())
        elif Ping.is_type(event.type):
            await self.send(Pong(text=Ping.from_event(event).text).event())
        elif Synthesize.is_type(event.type):
            check_voice(event.data)
            if not self.streaming:  # in a stream it repeats the text for old servers: skip it
                await self.synthesize(Synthesize.from_event(event))
        elif SynthesizeStart.is_type(event.type):
            check_voice(event.data)
            self.stream, self.streaming, self.pending = SynthesizeStart.from_event(event).voice, True, ""
        elif SynthesizeChunk.is_type(event.type):
            await self.chunk(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(event.type):
            await self.stop_stream()
        else:
            log.debug("wyoming: %s sent %r, which a voice server ignores", self.owner, event.type)

    async def synthesize(self, request: Synthesize) -> None:
        if not isinstance(request.text, str):
            raise BadRequest("synthesize: 'text' must be a string")
        await self.speak(request.text, request.voice)

    async def chunk(self, text: str) -> None:
        if not self.streaming:
            raise BadRequest("synthesize-chunk outside a stream: send synthesize-start first")
        if not isinstance(text, str):
            raise BadRequest("synthesize-chunk: 'text' must be a string")
        self.pending += text
        if len(self.pending) > MAX_SPEECH_CHARS:
            self.streaming, self.pending = False, ""
            raise BadRequest(f"synthesize-chunk: over {MAX_SPEECH_CHARS} characters without a sentence end")
        *done, self.pending = _SENTENCE_END.split(self.pending)
        for sentence in done:
            if sentence.strip():
                await self.speak(sentence, self.stream)

    async def stop_stream(self) -> None:
        if not self.streaming:
            raise BadRequest("synthesize-stop outside a stream: send synthesize-start first")
        rest, self.pending, self.streaming = self.pending, "", False
        if rest.strip():
            await self.speak(rest, self.stream)
        await self.send(SynthesizeStopped().event())

    async def speak(self, text: str, voice: SynthesizeVoice | None) -> None:
        """One speech job: its sentences as audio, between audio-start and audio-stop."""
        model = pick_voice(self.rt, voice, self.default)
        events = JobEvents(asyncio.get_running_loop())
        job = Job(f"wyoming-{uuid.uuid4().hex}", Action.GENERATE, model, events, voice_params(text, voice),
                  owner=self.owner)
        self.worker.submit(job)  # BadRequest for bad parameters, Busy when the queue is full
        started = False
        try:
            while not events.done:
                event = await events.next()
                if isinstance(event, RequestError):
                    raise event
                if isinstance(event, Chunk):
                    rate, width, channels, pcm = _pcm(event.output.data)
                    if not started:
                        await self.send(AudioStart(rate=rate, width=width, channels=channels).event())
                        started = True
                    step = SAMPLES_PER_CHUNK * width * channels
                    for at in range(0, len(pcm), step):
                        await self.send(AudioChunk(rate=rate, width=width, channels=channels,
                                                   audio=pcm[at:at + step]).event())
                elif isinstance(event, Result) and started:
                    await self.send(AudioStop().event())
        finally:
            if not events.done:  # the client went away: stop speaking
                self.worker.cancel(job.id)

    async def send(self, event: Event) -> None:
        await async_write_event(event, self.writer)

    async def error(self, text: str, code: str) -> None:
        await self.send(Error(text=text, code=code).event())


def _pcm(wav: bytes) -> tuple[int, int, int, bytes]:
    with wave.open(io.BytesIO(wav)) as w:
        return w.getframerate(), w.getsampwidth(), w.getnchannels(), w.readframes(w.getnframes())
