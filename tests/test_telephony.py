"""Phone calls (Twilio Media Streams) into real rooms, with a stand-in carrier.

The stand-in speaks exactly the Media Streams JSON: ``connected`` and ``start``
(with the ``customParameters`` the webhook's TwiML set), then a ``media`` frame
of mu-law 8 kHz every 20 ms at real time (silence, or eSpeak's Vietnamese
turned into mu-law), ``dtmf`` keys and ``stop``. It plays the agent's ``media``
at real time as a phone line does, echoes each ``mark`` once the audio before it
has played, and on ``clear`` drops what it holds and echoes the marks still
pending (as Twilio documents).
"""

from __future__ import annotations

import base64
import json
import re
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import soxr  # type: ignore[import-untyped]
import trio
import trio_websocket

from voice_trio.demo import build_receptionist
from voice_trio.security import mint_token
from voice_trio.speech.tts import EspeakTts
from voice_trio.telephony import g711
from voice_trio.telephony.twilio import (
    FRAME_BYTES,
    MediaOut,
    connect_stream_twiml,
    twilio_signature,
    valid_signature,
)

from .fakes.azure_realtime import open_fake_azure
from .support import BOTH_PATHS, RunningServer, running_server
from .test_azure import azure_app
from .test_churn import collector_off, leftovers, survivors
from .test_security import handshake_status, refused
from .test_voice import assert_speech

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"  # a Twilio auth token's shape: 32 hex digits
SECRET = "s" * 32
FRAME_S = 0.02
_strict_media = msgspec.json.Decoder(MediaOut, strict=True)


def to_line(pcm24: bytes, encode: Any = g711.ulaw_encode) -> bytes:
    """24 kHz PCM16 (eSpeak's) as a phone carries it: 8 kHz mu-law (or A-law)."""
    pcm8 = soxr.resample(np.frombuffer(pcm24, dtype="<i2"), 24_000, 8_000, quality="HQ")
    return bytes(encode(pcm8.astype("<i2").tobytes()))


def from_line(line: bytes, decode: Any = g711.ulaw_decode) -> bytes:
    """What the caller hears (mu-law 8 kHz) as 24 kHz PCM16, for :func:`assert_speech`."""
    pcm8 = np.frombuffer(decode(line), dtype="<i2")
    return bytes(soxr.resample(pcm8, 8_000, 24_000, quality="HQ").astype("<i2").tobytes())


# ------------------------------------------------------------------ the codec


def test_g711_matches_pythons_own_tables_for_every_value() -> None:
    # audioop (Sun's g711.c) is deprecated and gone in Python 3.13; the codec's own
    # known values and round trips below hold without it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = pytest.importorskip("audioop")
    every_sample = np.arange(-32768, 32768, dtype="<i2").tobytes()
    every_code = bytes(range(256))
    assert g711.ulaw_encode(every_sample) == reference.lin2ulaw(every_sample, 2)
    assert g711.alaw_encode(every_sample) == reference.lin2alaw(every_sample, 2)
    assert g711.ulaw_decode(every_code) == reference.ulaw2lin(every_code, 2)
    assert g711.alaw_decode(every_code) == reference.alaw2lin(every_code, 2)


def test_g711_known_values_and_round_trips() -> None:
    def pcm(*samples: int) -> bytes:
        return np.array(samples, dtype="<i2").tobytes()

    def ints(data: bytes) -> list[int]:
        return [int(x) for x in np.frombuffer(data, dtype="<i2")]

    # Zero is 0xFF in mu-law and 0xD5 in A-law; the extremes saturate.
    assert g711.ulaw_encode(pcm(0, 32767, -32768)) == bytes([0xFF, 0x80, 0x00])
    assert g711.alaw_encode(pcm(0, 32767, -32768)) == bytes([0xD5, 0xAA, 0x2A])
    assert ints(g711.ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00]))) == [0, 0, 32124, -32124]
    assert ints(g711.alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A]))) == [8, -8, 32256, -32256]
    # Every code survives decode -> encode (mu-law's "negative zero" 0x7F becomes 0xFF).
    codes = bytes(range(256))
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes
    again = g711.ulaw_encode(g711.ulaw_decode(codes))
    assert again == codes.replace(b"\x7f", b"\xff")
    # A signal survives encode -> decode within G.711's step: ~3 % of the amplitude.
    t = np.arange(8000) / 8000
    wave = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    for encode, decode in (
        (g711.ulaw_encode, g711.ulaw_decode),
        (g711.alaw_encode, g711.alaw_decode),
    ):
        back = np.frombuffer(decode(encode(wave.tobytes())), dtype="<i2").astype(np.int32)
        error = np.abs(back - wave.astype(np.int32))
        assert error.max() <= 0.035 * np.abs(wave.astype(np.int32)).max() + 8
        assert len(back) == len(wave)


# ------------------------------------------------------------------ signatures and TwiML


def test_the_signature_is_twilios_documented_algorithm() -> None:
    # The example of Twilio's security documentation (auth token 12345).
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert twilio_signature("12345", url, list(reversed(params))) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert valid_signature("12345", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", [url], params)
    # Signed with the port written out, checked without it (and the other way round).
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert valid_signature("12345", twilio_signature("12345", with_port, params), [url], params)
    assert not valid_signature("12345", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", [url], params[1:])
    assert not valid_signature("54321", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", [url], params)


def test_twiml_escapes_what_it_carries() -> None:
    twiml = connect_stream_twiml("wss://h/telephony/twilio", {"a": 'x"<&>'})
    assert twiml.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Connect>')
    assert '<Parameter name="a" value="x&quot;&lt;&amp;&gt;"/>' in twiml


# ------------------------------------------------------------------ the stand-in carrier


class Carrier:
    """A phone carrier's side of one Media Streams socket (see the module docstring)."""

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, stream_sid: str, encoding: str
    ) -> None:
        self.ws = ws
        alaw = encoding == "audio/x-alaw"
        self.encode = g711.alaw_encode if alaw else g711.ulaw_encode
        self.silence = bytes([g711.ALAW_SILENCE if alaw else g711.ULAW_SILENCE]) * FRAME_BYTES
        self.stream_sid = stream_sid
        self.received: list[dict[str, Any]] = []
        #: Everything played to the caller (mu-law), and per mark name where it ended.
        self.heard = bytearray()
        self.echoed: list[str] = []
        self.cleared_frames = 0
        self.clears = 0
        self.closed: tuple[int, str | None] | None = None
        self.holding = False  # the line stops playing (and echoing) while set
        self._line: list[bytes | str] = []  # frames and mark names waiting to play
        self._mic: bytearray = bytearray()
        self._mic_empty = trio.Event()
        self._changed = trio.Event()
        self._sequence = 1

    async def send(self, event: str, **body: Any) -> None:
        self._sequence += 1
        message = {"event": event, "sequenceNumber": str(self._sequence), **body}
        if event != "connected":
            message["streamSid"] = self.stream_sid
        await self.ws.send_message(json.dumps(message))

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._downlink)
            nursery.start_soon(self._uplink)
            nursery.start_soon(self._playout)

    async def _downlink(self) -> None:
        try:
            while True:
                event = json.loads(await self.ws.get_message())
                self.received.append(event)
                kind = event["event"]
                assert event["streamSid"] == self.stream_sid, event
                if kind == "media":
                    _strict_media.decode(json.dumps(event))  # exactly Twilio's media message
                    payload = base64.b64decode(event["media"]["payload"])
                    assert len(payload) == FRAME_BYTES
                    self._line.append(payload)
                elif kind == "mark":
                    self._line.append(event["mark"]["name"])
                elif kind == "clear":
                    self.clears += 1
                    for item in self._line:
                        if isinstance(item, str):
                            await self.send("mark", mark={"name": item})
                            self.echoed.append(item)
                        else:
                            self.cleared_frames += 1
                    self._line.clear()
                else:
                    raise AssertionError(f"not a message Twilio accepts: {event}")
                self._notify()
        except trio_websocket.ConnectionClosed as exc:
            self.closed = (exc.reason.code, exc.reason.reason)
            self._notify()

    async def _playout(self) -> None:
        """Play 20 ms a tick at real time; echo each mark when the audio before it has played."""
        start = trio.current_time()
        tick = 0
        while self.closed is None:
            tick += 1
            await trio.sleep_until(start + tick * FRAME_S)
            if self.holding:
                continue
            while self._line and isinstance(self._line[0], str):
                name = self._line.pop(0)
                assert isinstance(name, str)
                self.echoed.append(name)
                await self.send("mark", mark={"name": name})
                self._notify()
            if self._line:
                frame = self._line.pop(0)
                assert isinstance(frame, bytes)
                self.heard += frame

    async def _uplink(self) -> None:
        """The caller's microphone: a frame every 20 ms, silence when nothing is said."""
        start = trio.current_time()
        chunk = 0
        while self.closed is None:
            frame = bytes(self._mic[:FRAME_BYTES]) or self.silence
            del self._mic[:FRAME_BYTES]
            frame += self.silence[: FRAME_BYTES - len(frame)]
            chunk += 1
            try:
                await self.send(
                    "media",
                    media={
                        "track": "inbound",
                        "chunk": str(chunk),
                        "timestamp": str(chunk * 20),
                        "payload": base64.b64encode(frame).decode(),
                    },
                )
            except trio_websocket.ConnectionClosed:
                return
            if not self._mic:
                self._mic_empty.set()
            await trio.sleep_until(start + chunk * FRAME_S)

    async def say(self, pcm24: bytes, *, after_s: float = 0.0) -> None:
        """Speak (24 kHz PCM16) into the line at real time; return when it has all gone."""
        self._mic_empty = trio.Event()
        self._mic += to_line(pcm24, self.encode) + self.silence * int(after_s / FRAME_S)
        await self._mic_empty.wait()

    async def press(self, keys: str) -> None:
        for key in keys:
            await self.send("dtmf", dtmf={"track": "inbound_track", "digit": key})

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Any) -> None:
        while not condition():
            await self._changed.wait()

    def media_count(self) -> int:
        return sum(1 for e in self.received if e["event"] == "media")

    def marks_of(self, response: str) -> list[int]:
        return [int(n.split("/")[1]) for n in self.echoed if n.split("/")[0] == response]


@asynccontextmanager
async def call(
    server: RunningServer,
    *,
    call_sid: str = "CA" + "ab" * 16,
    parameters: dict[str, str] | None = None,
    signed: bool = False,
    encoding: str = "audio/x-mulaw",
    rate: int = 8000,
) -> AsyncIterator[Carrier]:
    """A call on ``server``: ``parameters`` as the TwiML passed them (default: the webhook's)."""
    if parameters is None:
        parameters = await webhook_parameters(server, call_sid, signed=signed)
    url = f"{server.ws_base}/telephony/twilio"
    headers = [("X-Twilio-Signature", twilio_signature(AUTH_TOKEN, url))] if signed else []
    stream_sid = "MZ" + "cd" * 16
    async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
        carrier = Carrier(ws, stream_sid, encoding)
        await carrier.send("connected", protocol="Call", version="1.0.0")
        await carrier.send(
            "start",
            start={
                "accountSid": "AC" + "00" * 16,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": 1},
                "customParameters": parameters,
            },
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(carrier.run)
            yield carrier
            nursery.cancel_scope.cancel()


async def webhook_parameters(
    server: RunningServer, call_sid: str, *, signed: bool
) -> dict[str, str]:
    """POST the voice webhook as Twilio does; the ``<Parameter>`` s of its TwiML."""
    form = {"CallSid": call_sid, "AccountSid": "AC" + "00" * 16, "From": "+84901234567"}
    response = await post_voice(server, form, signed=signed)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    twiml = response.text
    stream = re.search(r'<Stream url="([^"]+)">', twiml)
    assert stream is not None and stream.group(1) == f"{server.ws_base}/telephony/twilio", twiml
    return dict(re.findall(r'<Parameter name="([^"]+)" value="([^"]+)"/>', twiml))


async def post_voice(
    server: RunningServer, form: dict[str, str], *, signed: bool, signature: str | None = None
) -> httpx.Response:
    url = server.url + "/telephony/twilio/voice"
    headers = {}
    if signed:
        headers["X-Twilio-Signature"] = signature or twilio_signature(
            AUTH_TOKEN, url, list(form.items())
        )
    async with httpx.AsyncClient() as client:
        return await client.post(url, data=form, headers=headers)


@pytest.fixture
async def tts() -> EspeakTts:
    return EspeakTts()


# ------------------------------------------------------------------ calls


@BOTH_PATHS
async def test_an_echo_call_hears_itself_at_real_time_and_stop_ends_the_room(
    asgi: bool, tts: EspeakTts
) -> None:
    speech = await tts.synthesize("Xin chào, tôi muốn đặt lịch hẹn vào thứ hai.")
    with trio.fail_after(60):
        async with running_server(asgi=asgi) as server:
            sid = "CA" + "01" * 16
            async with call(server, call_sid=sid) as carrier:
                await carrier.say(speech, after_s=0.5)
                # The echo comes back as mu-law frames, played at the line's pace: what the
                # caller heard is the sentence again (speech, not silence).
                await trio.sleep(0.6)
                heard = from_line(bytes(carrier.heard))
                assert_speech(heard, min_seconds=len(speech) / 48_000)
                # Marks came back as the audio played; the room's view of it is theirs.
                bridge = server.app.twilio.calls[sid]
                marks = carrier.marks_of("resp_1")
                assert marks == sorted(marks) and marks[-1] > 1000
                assert bridge.played_ms("resp_1") == marks[-1]
                assert server.app.rooms[sid].session_id == sid
                await carrier.send("stop", stop={"accountSid": "AC" + "00" * 16, "callSid": sid})
                await carrier.wait_until(lambda: carrier.closed is not None)
                assert carrier.closed is not None and carrier.closed[0] == 1000
            while server.app.rooms:
                await trio.sleep(0.01)
            assert await server.metric("voice_trio_rooms_open") == 0
            assert server.app.twilio.calls == {}


async def test_an_a_law_line_is_answered_in_a_law(local_speech: Any) -> None:
    """The echo brain with the embedded voice: keys typed are said back, in A-law."""
    with trio.fail_after(60):
        async with running_server(voice_tts="local", speech=local_speech) as server:
            async with call(server, encoding="audio/x-alaw") as carrier:
                await carrier.press("0912345678#")
                # (The echo's own response, for the line's silence, is voiceless: the
                # answer is the next one.)
                await carrier.wait_until(lambda: any(m >= 1500 for m in carrier.marks_of("resp_2")))
                await carrier.wait_until(lambda: not carrier._line)
                heard = from_line(bytes(carrier.heard), g711.alaw_decode)
                assert_speech(heard, min_seconds=1.5)
                # Its pauses are quiet: mu-law's silence (0xFF) read as A-law is full scale.
                samples = np.frombuffer(heard, dtype="<i2").astype(np.float64)
                frames = samples[: len(samples) // 2400 * 2400].reshape(-1, 2400)
                assert np.sqrt(np.mean(frames**2, axis=1)).min() < 100
            # A line the rooms cannot take is refused with its reason.
            async with call(server, rate=16_000) as carrier:
                await carrier.wait_until(lambda: carrier.closed is not None)
                assert carrier.closed == (1003, "the stream must be 8 kHz mono mu-law or A-law")
            assert server.app.rooms == {}


async def test_the_embedded_brain_answers_the_phone(
    local_speech: Any, tmp_path: Any, tts: EspeakTts
) -> None:
    """Greeting heard, barge-in -> clear, the spoken turn answered, keypad digits into the graph."""
    graph = build_receptionist(tmp_path / "a.sqlite3")
    sentence = await tts.synthesize("Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ.")
    sid = "CA" + "02" * 16
    with trio.fail_after(240):
        async with running_server(voice_brain="local", speech=local_speech, agent=graph) as server:
            async with call(server, call_sid=sid) as carrier:
                # The line's silence wakes the room; the greeting is heard as mu-law speech.
                await carrier.wait_until(lambda: any(m >= 3000 for m in carrier.marks_of("resp_1")))
                assert_speech(from_line(bytes(carrier.heard)), min_seconds=2.5)
                conversation = server.app.rooms[sid].session.conversation

                # The caller speaks over the greeting: the carrier is told to clear.
                await carrier.say(sentence, after_s=1.0)
                await carrier.wait_until(lambda: carrier.clears >= 1)
                assert carrier.cleared_frames > 0  # it held audio the caller never heard
                assert await server.metric("voice_trio_interrupts_total") == 1

                # ... and that sentence is the caller's turn, answered aloud.
                await carrier.wait_until(lambda: any(m >= 1000 for m in carrier.marks_of("resp_2")))
                user = [h.text for h in conversation.history if h.role == "user"]
                assert "xin chào" in user[0].lower(), user
                start = len(carrier.heard)
                await carrier.wait_until(lambda: any(m >= 2000 for m in carrier.marks_of("resp_2")))
                assert_speech(from_line(bytes(carrier.heard[start - 8000 :])), min_seconds=1.5)

                # Keypad digits (a booking code) reach the graph as one turn, answered aloud.
                await carrier.press("482913#")
                await carrier.wait_until(lambda: any(m >= 1000 for m in carrier.marks_of("resp_3")))
                user = [h.text for h in conversation.history if h.role == "user"]
                assert user[-1] == "482913", user


async def test_the_marks_say_what_the_model_remembers_hearing() -> None:
    """A key pressed over the agent cuts it at the last mark the carrier echoed: the
    model's audio is truncated there (Azure's conversation.item.truncate), not at what
    the server had sent."""
    fake_options = {"delta_delay_s": 0.05, "reply": lambda s: " ".join(["một"] * 40)}
    async with open_fake_azure(**fake_options) as fake:
        app_class = azure_app(fake, turn_detection="none")
        with trio.fail_after(30):
            async with (
                running_server(app_class=app_class, twilio_dtmf_gap_ms=2000) as server,
                call(server) as carrier,
            ):
                await carrier.press("1#")  # a typed turn: the model answers in audio
                await carrier.wait_until(lambda: any(m >= 600 for m in carrier.marks_of("resp_1")))
                carrier.holding = True  # the line stalls: nothing more plays, no mark returns
                heard = carrier.marks_of("resp_1")[-1]
                await carrier.wait_until(lambda: len(carrier._line) > 10)  # sent, unheard
                await carrier.press("2")
                await carrier.wait_until(lambda: carrier.clears == 1)
                session = fake.sessions[0]
                while not session.of_type("conversation.item.truncate"):
                    await trio.sleep(0.01)
                (truncate,) = session.of_type("conversation.item.truncate")
                assert truncate["audio_end_ms"] == heard
                sent_ms = server.app.rooms["CA" + "ab" * 16].turn.sent_ms  # type: ignore[union-attr]
                assert heard + 200 < sent_ms  # the server had sent more than was heard
                assert server.app.twilio.calls["CA" + "ab" * 16].played_ms("resp_1") == heard
                # The key was also a turn: "1" was ended by "#", "2" by the pause after it.
                assert session.last_user_text() == "1"
                with trio.fail_after(5):
                    while session.last_user_text() != "2":
                        await trio.sleep(0.02)


@BOTH_PATHS
async def test_with_an_auth_token_calls_need_twilios_signature(asgi: bool) -> None:
    sid = "CA" + "03" * 16
    form = {"CallSid": sid, "AccountSid": "AC" + "00" * 16, "From": "+84901234567"}
    with trio.fail_after(30):
        async with running_server(asgi=asgi, twilio_auth_token=AUTH_TOKEN) as server:
            # The webhook: unsigned, badly signed, or signed with another token: 403.
            assert (await post_voice(server, form, signed=False)).status_code == 403
            assert (
                await post_voice(server, form, signed=True, signature="x" * 28)
            ).status_code == 403
            other = twilio_signature(
                "f" * 32, server.url + "/telephony/twilio/voice", list(form.items())
            )
            assert (await post_voice(server, form, signed=True, signature=other)).status_code == 403
            parameters = await webhook_parameters(server, sid, signed=True)
            assert set(parameters) == {"session_id", "token"} and parameters["session_id"] == sid
            assert AUTH_TOKEN not in parameters["token"]
            # The stream's handshake: unsigned, signed wrongly, or from a web page: 403.
            url = f"{server.ws_base}/telephony/twilio"
            good = ("X-Twilio-Signature", twilio_signature(AUTH_TOKEN, url))
            for headers in (
                [],
                [("X-Twilio-Signature", twilio_signature("f" * 32, url))],
                [good, ("Origin", server.url)],
            ):
                assert await handshake_status(server, "/telephony/twilio", headers) == 403
            assert refused("twilio_signature", (await server.get("/metrics")).text) == 5
            # Signed, but its token is for another call, or missing: closed at `start`.
            for wrong, reason in (
                (
                    {**parameters, "session_id": "CA" + "99" * 16},
                    "the room token is for another session",
                ),
                ({"session_id": sid}, "the stream needs the token its TwiML passed"),
            ):
                async with call(server, call_sid=sid, parameters=wrong, signed=True) as carrier:
                    await carrier.wait_until(lambda: carrier.closed is not None)
                    assert carrier.closed == (1008, reason)
            assert server.app.rooms == {}
            # Signed, with the webhook's token: the call is served.
            async with call(server, call_sid=sid, parameters=parameters, signed=True) as carrier:
                await carrier.wait_until(lambda: carrier.media_count() >= 10)
                assert sid in server.app.rooms


async def test_with_only_auth_secret_the_stream_needs_a_room_token() -> None:
    sid = "CA" + "04" * 16
    with trio.fail_after(30):
        async with running_server(auth_secret=SECRET) as server:
            # No Twilio signature can be checked: the webhook would hand anyone a token.
            form = {"CallSid": sid}
            assert (await post_voice(server, form, signed=False)).status_code == 403
            async with call(server, call_sid=sid, parameters={}) as carrier:
                await carrier.wait_until(lambda: carrier.closed is not None)
                assert carrier.closed == (1008, "the stream needs the token its TwiML passed")
            # A team's own TwiML may pass a room token it minted (voice-trio token).
            token = mint_token(SECRET, sid)
            async with call(server, call_sid=sid, parameters={"token": token}) as carrier:
                await carrier.wait_until(lambda: carrier.media_count() >= 10)
                assert sid in server.app.rooms
            # The carrier's socket went away without a `stop`: the room ends all the same.
            while server.app.rooms:
                await trio.sleep(0.01)
            assert server.app.twilio.calls == {}


async def test_calls_that_end_leave_nothing_behind() -> None:
    """A call's room, transport and sender are freed by reference counting (no cycle)."""

    async def one_call(server: RunningServer, i: int) -> None:
        sid = f"CA{i:032x}"
        async with call(server, call_sid=sid) as carrier:
            await carrier.wait_until(lambda: carrier.media_count() >= 5)
            if i % 2:  # the caller hangs up; else the carrier's socket drops
                await carrier.send("stop", stop={"accountSid": "AC" + "00" * 16, "callSid": sid})
                await carrier.wait_until(lambda: carrier.closed is not None)
        while server.app.rooms:
            await trio.sleep(0.01)

    with trio.fail_after(60):
        async with running_server() as server:
            for i in range(2):  # warm-up: first-use objects of every path
                await one_call(server, i)
            with collector_off():
                before = survivors(("voice_trio.",))
                for i in range(2, 12):
                    await one_call(server, i)
                left = leftovers(server, before, ("voice_trio.",))
                with trio.move_on_after(5):  # the last call's tasks may still be unwinding
                    while left:
                        await trio.sleep(0.05)
                        left = leftovers(server, before, ("voice_trio.",))
            assert left == {}


async def test_behind_tls_the_public_url_is_what_twilio_signed() -> None:
    """With TWILIO_PUBLIC_URL, signatures are checked over the URLs Twilio used (https://,
    wss://), whatever the server itself sees, and the TwiML names the public stream."""
    public = "https://voice.example.com"
    sid = "CA" + "05" * 16
    form = {"CallSid": sid, "AccountSid": "AC" + "00" * 16}
    with trio.fail_after(30):
        async with running_server(twilio_auth_token=AUTH_TOKEN, twilio_public_url=public) as server:
            signed = twilio_signature(
                AUTH_TOKEN, public + "/telephony/twilio/voice", list(form.items())
            )
            response = await post_voice(server, form, signed=True, signature=signed)
            assert response.status_code == 200, response.text
            assert '<Stream url="wss://voice.example.com/telephony/twilio">' in response.text
            local = await post_voice(server, form, signed=True)  # signed over the local URL
            assert local.status_code == 403
            parameters = dict(
                re.findall(r'<Parameter name="([^"]+)" value="([^"]+)"/>', response.text)
            )
            stream_signature = twilio_signature(
                AUTH_TOKEN, "wss://voice.example.com/telephony/twilio"
            )
            headers = [("X-Twilio-Signature", stream_signature)]
            url = f"{server.ws_base}/telephony/twilio"
            async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
                carrier = Carrier(ws, "MZ" + "05" * 16, "audio/x-mulaw")
                await carrier.send("connected", protocol="Call", version="1.0.0")
                await carrier.send(
                    "start",
                    start={
                        "streamSid": carrier.stream_sid,
                        "callSid": sid,
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": 8000,
                            "channels": 1,
                        },
                        "customParameters": parameters,
                    },
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(carrier.run)
                    await carrier.wait_until(lambda: carrier.media_count() >= 5)
                    assert sid in server.app.rooms
                    nursery.cancel_scope.cancel()
            # The same handshake signed over the server's own address is refused.
            local_signature = twilio_signature(AUTH_TOKEN, url)
            assert (
                await handshake_status(
                    server, "/telephony/twilio", [("X-Twilio-Signature", local_signature)]
                )
                == 403
            )


async def test_a_barge_in_the_server_hears_is_cut_where_the_marks_say() -> None:
    """Azure's own VAD hears the caller over the agent: the model's audio is truncated at
    a mark the carrier echoed (what was played on the line), not at the room's clock."""
    fake_options = {
        "delta_delay_s": 0.05,
        "reply": lambda s: " ".join(["một"] * 60),
        "vad_start_bytes": 48 * 1500,  # the caller "speaks" after 1.5 s of line audio
        "vad_stop_bytes": 48 * 1600,
    }
    async with open_fake_azure(**fake_options) as fake:
        app_class = azure_app(fake)  # the server's VAD (turn detection on)
        with trio.fail_after(30):
            async with running_server(app_class=app_class) as server, call(server) as carrier:
                await carrier.press("1#")  # a typed turn: the model answers in audio
                session = await _first_session(fake)
                while not session.of_type("conversation.item.truncate"):
                    await trio.sleep(0.01)
                (truncate,) = session.of_type("conversation.item.truncate")[:1]
                assert truncate["audio_end_ms"] in carrier.marks_of("resp_1")
                assert carrier.clears >= 1


async def _first_session(fake: Any) -> Any:
    while not fake.sessions:
        await trio.sleep(0.01)
    return fake.sessions[0]
