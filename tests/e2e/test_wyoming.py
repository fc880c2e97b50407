"""The Wyoming voice server, driven by the ``wyoming`` package's own client against a real
``edge-aigc serve`` process: describe, synthesize, streaming sentence by sentence, and bad
input answered with ``error`` events while the connection and the service go on."""
from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid

import pytest
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from edge_aigc.errors import ConfigError
from edge_aigc.remote.local_brokers import free_port
from edge_aigc.serve.config import load_config
from tests.helpers import tiny_voice
from tests.helpers.service import serve_process, write_config

TIMEOUT = 60.0
NAME = f"edge-aigc-test-{uuid.uuid4().hex[:8]}"   # the zeroconf name: this run's own


@pytest.fixture(scope="module")
def server(broker, voices, bundles, tmp_path_factory):
    """``edge-aigc serve`` with the Wyoming server on a free loopback port: two voices (one with
    three speakers) and an audio model that is not a voice."""
    d = tmp_path_factory.mktemp("wyoming")
    port = free_port()
    cfg = write_config(d / "device.toml", broker.port, [voices["solo"].bundle, voices["trio"].bundle, bundles["audio"]],
                       device_id="voicebox", wyoming={"enabled": True, "listen": f"127.0.0.1:{port}", "zeroconf": True,
                                                      "name": NAME})
    proc = serve_process(cfg, log=d / "serve.log")
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        assert proc.poll() is None, (d / "serve.log").read_text()
        yield port, proc, d / "serve.log"
    finally:
        proc.terminate()
        proc.wait(30)


def talk(port: int, events: list[Event], until: set[str], count: int = 1) -> list[Event]:
    """Send ``events``, then read until ``count`` events of the ``until`` types came back."""
    async def go() -> list[Event]:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            for event in events:
                await client.write_event(event)
            got = []
            while sum(e.type in until for e in got) < count:
                event = await asyncio.wait_for(client.read_event(), TIMEOUT)
                assert event is not None, f"the server closed the connection after {[e.type for e in got]}"
                got.append(event)
            return got
    return asyncio.run(go())


def audio_of(events: list[Event]) -> tuple[AudioStart, bytes]:
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types[-1] == "audio-stop" and set(types[1:-1]) == {"audio-chunk"}, types
    start = AudioStart.from_event(events[0])
    chunks = [AudioChunk.from_event(e) for e in events[1:-1]]
    assert all(c.rate == start.rate and c.width == 2 and c.channels == 1 for c in chunks)
    assert all(len(c.audio) <= 1024 * 2 for c in chunks)  # wyoming-piper's 1024 samples a chunk
    return start, b"".join(c.audio for c in chunks)


def test_describe_lists_each_voice_with_its_languages_and_speakers(server):
    [event] = talk(server[0], [Describe().event()], {"info"})
    [program] = Info.from_event(event).tts
    assert program.supports_synthesize_streaming and program.installed
    voices = {v.name: v for v in program.voices}
    assert set(voices) == {"solo", "trio"}  # tiny-synth makes sounds, not speech: not listed
    assert voices["solo"].languages == ["en_US"] and voices["solo"].speakers is None
    assert [s.name for s in voices["trio"].speakers] == ["speaker_0", "speaker_1", "speaker_2"]
    assert all(v.installed and v.version == "1.0.0" for v in voices.values())


def test_the_server_is_advertised_over_zeroconf_as_home_assistant_looks_for_it(server):
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    async def look():
        zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        try:
            return await zc.async_get_service_info("_wyoming._tcp.local.", f"{NAME}._wyoming._tcp.local.", timeout=5000)
        finally:
            await zc.async_close()
    info = asyncio.run(look())
    assert info is not None and info.port == server[0] and info.parsed_addresses() == ["127.0.0.1"]


def test_synthesize_answers_audio_start_chunks_and_stop(server):
    text = "Hello there, how are you? The birch canoe slid on the smooth planks."
    events = talk(server[0], [Synthesize(text=text, voice=SynthesizeVoice(name="trio", speaker="speaker_2")).event()],
                  {"audio-stop"})
    start, pcm = audio_of(events)
    assert start.rate == tiny_voice.RATE and start.width == 2 and start.channels == 1
    assert len(pcm) > 2 * tiny_voice.RATE // 10  # two sentences of audio


def test_a_request_naming_no_voice_gets_the_default_or_one_of_its_language(server):
    for voice in (None, SynthesizeVoice(language="en_US"), SynthesizeVoice(language="de_DE")):
        events = talk(server[0], [Synthesize(text="Hello there.", voice=voice).event()], {"audio-stop"})
        assert audio_of(events)[1]


def test_a_stream_is_spoken_sentence_by_sentence_as_the_text_arrives(server):
    async def go() -> list[list[str]]:
        async with AsyncTcpClient("127.0.0.1", server[0]) as client:
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="solo")).event())
            rounds = []
            for piece, until in (("Hello there, how are", None), (" you? The birch canoe", "audio-stop"),
                                 (" slid on the smooth planks.", None), (None, "synthesize-stopped")):
                await client.write_event(SynthesizeChunk(text=piece).event() if piece else SynthesizeStop().event())
                got = []
                while until and (not got or got[-1] != until):
                    got.append((await asyncio.wait_for(client.read_event(), TIMEOUT)).type)
                rounds.append(got)
            return rounds
    rounds = asyncio.run(go())
    # the first sentence is spoken once its end has arrived, before the rest of the text is sent
    assert rounds[0] == [] and rounds[2] == []
    assert rounds[1][0] == "audio-start" and rounds[1][-1] == "audio-stop"
    assert rounds[3][0] == "audio-start" and rounds[3][-2:] == ["audio-stop", "synthesize-stopped"]


def raw_lines(port: int, data: bytes, answers: int) -> list[dict]:
    """Bytes written as they are (no client tidies them), then ``answers`` event headers read."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(data)
        stream, out = s.makefile("rb"), []
        for _ in range(answers):
            header = json.loads(stream.readline())
            extra = stream.read(header.get("data_length") or 0)
            stream.read(header.get("payload_length") or 0)
            out.append({**header, "data": {**(header.get("data") or {}), **(json.loads(extra) if extra else {})}})
        return out


DESCRIBE = b'{"type": "describe"}\n'


@pytest.mark.parametrize("name,data", [
    ("a header that is not JSON", b"{not json\n"),
    ("a header that is a list", b"[1, 2]\n"),
    ("an event without a type", b'{"data": {"text": "hi"}}\n'),
    ("a header with NaN", b'{"type": "synthesize", "data": {"text": NaN}}\n'),
    ("text that is a number", b'{"type": "synthesize", "data": {"text": 5}}\n'),
    ("synthesize without text", b'{"type": "synthesize", "data": {}}\n'),
    ("a voice that is a string", b'{"type": "synthesize", "data": {"text": "Hi.", "voice": "solo"}}\n'),
    ("an unknown voice", b'{"type": "synthesize", "data": {"text": "Hi.", "voice": {"name": "nobody"}}}\n'),
    ("a model that is not a voice", b'{"type": "synthesize", "data": {"text": "Hi.", "voice": {"name": "tiny-synth"}}}\n'),
    ("an unknown speaker", b'{"type": "synthesize", "data": {"text": "Hi.", "voice": {"name": "trio", "speaker": "7"}}}\n'),
    ("a speaker on a one-speaker voice",
     b'{"type": "synthesize", "data": {"text": "Hi.", "voice": {"name": "solo", "speaker": "x"}}}\n'),
    ("text over the voice's limit", b'{"type": "synthesize", "data": {"text": "' + b"a" * 5000 + b'"}}\n'),
    ("only spaces", b'{"type": "synthesize", "data": {"text": "   "}}\n'),
    ("a control character", b'{"type": "synthesize", "data": {"text": "a\\u0007b"}}\n'),
    ("a chunk before synthesize-start", b'{"type": "synthesize-chunk", "data": {"text": "Hi."}}\n'),
    ("a stop before synthesize-start", b'{"type": "synthesize-stop"}\n'),
])
def test_bad_input_is_an_error_event_and_the_connection_goes_on(server, name, data):
    error, info = raw_lines(server[0], data + DESCRIBE, 2)
    assert error["type"] == "error" and error["data"]["text"] and error["data"]["code"] in ("bad_request", "unknown_model")
    assert "/" not in error["data"]["text"].replace("n/a", "")  # no device paths
    assert info["type"] == "info"


@pytest.mark.parametrize("data", [b'{"type": "describe", "data_length": -1}\n',
                                  b'{"type": "x", "payload_length": 99999999}\n', b"{" + b" " * 70000 + b"}\n"],
                         ids=["a negative data_length", "a payload over the limit", "a header line over 64 KiB"])
def test_framing_that_cannot_be_followed_is_an_error_then_the_end_of_that_connection(server, data):
    [error] = raw_lines(server[0], data, 1)
    assert error["type"] == "error" and error["data"]["code"] == "bad_request"
    [event] = talk(server[0], [Describe().event()], {"info"})  # the service goes on
    assert Info.from_event(event).tts


def test_a_client_that_goes_away_mid_speech_leaves_the_service_serving(server):
    with socket.create_connection(("127.0.0.1", server[0]), timeout=TIMEOUT) as s:
        s.sendall(json.dumps({"type": "synthesize", "data": {"text": "The birch canoe slid. " * 50}}).encode() + b"\n")
    events = talk(server[0], [Synthesize(text="Hello there.").event()], {"audio-stop"})
    assert audio_of(events)[1] and server[1].poll() is None


def test_a_listener_other_than_loopback_needs_allow_from(tmp_path):
    cfg = tmp_path / "device.toml"
    cfg.write_text('device_id = "d"\nmodels = ["a.eaigc"]\n[wyoming]\nenabled = true\nlisten = "0.0.0.0:10200"\n')
    with pytest.raises(ConfigError, match="allow_from"):
        load_config(cfg)
    cfg.write_text('device_id = "d"\nmodels = ["a.eaigc"]\n[wyoming]\nenabled = true\nlisten = "0.0.0.0:10200"\n'
                   'allow_from = ["192.168.1.0/24"]\n')
    assert load_config(cfg).wyoming.networks()[0].num_addresses == 256
    cfg.write_text('device_id = "d"\nmodels = ["a.eaigc"]\n[wyoming]\nallow_from = ["not an address"]\n')
    with pytest.raises(ConfigError, match="allow_from"):
        load_config(cfg)
