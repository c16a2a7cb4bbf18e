"""Phone calls over Twilio Media Streams (bidirectional ``<Connect><Stream>``), into the same rooms.

A call reaches the server twice. Twilio first posts its voice webhook
(``POST /telephony/twilio/voice``), answered with the TwiML that connects the
call to this server's stream endpoint; then it opens that WebSocket
(``/telephony/twilio``) and speaks the Media Streams JSON: ``connected``,
``start``, a ``media`` message every 20 ms (base64 mu-law 8 kHz), ``mark``
echoes, ``dtmf``, ``stop``.

The room does not know it serves a phone: :class:`TwilioTransport` is the
room's :class:`~voice_trio.transport.Transport`, translating both ways.

- In: the room is first told ``session.config`` ``input_sample_rate: 8000``;
  the ``media`` frames become PCM16 8 kHz, two frames (40 ms) a room message
  (the room resamples it to 24 kHz as for any 8 kHz client); a keypad key pressed
  over the agent is a barge-in, and digits become a typed turn (see
  :meth:`TwilioTransport._on_dtmf`); ``stop`` or a dropped socket ends the room
  as a closed browser does.
- Out: the room's 24 kHz PCM16 is resampled to 8 kHz (soxr, as the room's own
  input), G.711-encoded, cut into 20 ms ``media`` frames and paced at real time
  by one task, :meth:`TwilioTransport.run`, a little ahead of the line
  (TWILIO_LEAD_MS: the carrier buffers that much, no more); after each of the
  room's chunks a ``mark``
  whose name says how much of the response it ends. The carrier echoes a mark
  once the audio before it has played, so :meth:`TwilioTransport.played_ms` is
  what the caller heard. The room's ``interrupted`` sends ``clear`` and empties
  the sender's queue at once; the room's JSON events are not the carrier's
  business and go no further.

Who may call (DESIGN.md section 9, for phone rooms): with ``TWILIO_AUTH_TOKEN``
the webhook and the stream's handshake must carry a valid ``X-Twilio-Signature``
(HMAC-SHA1 of the URL and the sorted POST parameters, base64); with a stream
key (``AUTH_SECRET``, else one derived from ``TWILIO_AUTH_TOKEN``) the webhook
hands the stream a room token bound to the call's session id as a
``<Parameter>``, and the stream's ``start`` must bring it back. With neither
secret, phone rooms follow the rule of browser rooms: loopback only, unless
``ALLOW_UNAUTHENTICATED``. A browser (a request with ``Origin``) may not open
the stream. The token and the auth token never reach a log, an event or a metric.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from xml.sax.saxutils import escape

import msgspec
import numpy as np
import soxr  # type: ignore[import-untyped]
import trio
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from .. import protocol as p
from ..config import OUTPUT_SAMPLE_RATE
from ..ratelog import RateLimitedLog
from ..security import Refusal, Ticket, is_loopback, mint_token, verify_token
from ..transport import Transport
from . import g711

if TYPE_CHECKING:
    from ..config import Settings
    from ..metrics import ServerMetrics
    from ..security import HandshakeGuard

__all__ = [
    "CARRIER_RATE",
    "FRAME_BYTES",
    "STREAM_PATH",
    "VOICE_PATH",
    "TwilioBridge",
    "TwilioStatistics",
    "TwilioTransport",
    "connect_stream_twiml",
    "decode_carrier",
    "twilio_signature",
    "valid_signature",
]

log = logging.getLogger("voice_trio.telephony")

#: The stream's WebSocket path and the voice webhook's path.
STREAM_PATH: Final = "/telephony/twilio"
VOICE_PATH: Final = "/telephony/twilio/voice"
#: The line's rate (G.711: one byte per sample) and one ``media`` frame: 20 ms.
CARRIER_RATE: Final = 8000
FRAME_BYTES: Final = 160
FRAME_S: Final = FRAME_BYTES / CARRIER_RATE
#: The sender wakes once per this much audio (five frames, sent in one write): the
#: lead then stays between TWILIO_LEAD_MS less this and TWILIO_LEAD_MS. Each write
#: to a socket costs a system call; at two frames a wake-up the writes were the
#: largest cost of a phone room (bench/README.md, "Phone rooms").
PACE_S: Final = 5 * FRAME_S
#: Inbound frames handed to the room together (40 ms): half the room's per-message
#: work, for at most 20 ms more before the brain hears a frame (Silero's window is 32 ms).
INBOUND_FRAMES: Final = 2
#: Outbound audio held for the line, at most (a response's whole speech usually fits;
#: past it the room's writer waits, as for a slow client): 60 s of G.711, 480 KB.
MAX_QUEUED_BYTES: Final = 60 * CARRIER_RATE
#: A call's ``start`` must come this soon after the socket opens (it comes at once).
START_TIMEOUT_S: Final = 10.0
#: Messages tolerated before ``start`` (Twilio sends one: ``connected``).
MAX_BEFORE_START: Final = 8
#: When the room closes the stream, its queued audio (last words) may play this long first.
CLOSE_DRAIN_S: Final = 1.0
#: The room token the webhook hands the stream lives this long (the stream opens in a second).
STREAM_TOKEN_TTL_S: Final = 120.0
#: Longest run of keypad digits sent as one turn (more: sent as they come).
MAX_DIGITS: Final = 32
#: Longest webhook body read (Twilio's voice webhook is ~1-2 KB of form fields).
MAX_WEBHOOK_BYTES: Final = 64 * 1024
_DIGITS: Final = frozenset("0123456789*#ABCD")
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_DEFAULT_PORTS: Final = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_CODECS: Final = {
    "audio/x-mulaw": (g711.ulaw_encode, g711.ulaw_decode, g711.ULAW_SILENCE),
    "audio/x-alaw": (g711.alaw_encode, g711.alaw_decode, g711.ALAW_SILENCE),
}


# ------------------------------------------------------------------ the wire


class _FromCarrier(msgspec.Struct, tag_field="event", kw_only=True):
    # Unknown fields are allowed: carriers add fields to these messages over time.
    sequenceNumber: str | None = None
    streamSid: str | None = None


class Connected(_FromCarrier, tag="connected"):
    protocol: str = ""
    version: str = ""


class MediaFormat(msgspec.Struct, kw_only=True):
    encoding: str
    sampleRate: int
    channels: int = 1


class StartInfo(msgspec.Struct, kw_only=True):
    streamSid: str
    callSid: str
    accountSid: str = ""
    tracks: list[str] = []
    customParameters: dict[str, str] = {}
    mediaFormat: MediaFormat


class Start(_FromCarrier, tag="start"):
    start: StartInfo


class MediaIn(msgspec.Struct, kw_only=True):
    #: Base64 on the wire; msgspec decodes it.
    payload: bytes
    track: str = "inbound"
    chunk: str | None = None
    timestamp: str | None = None


class Media(_FromCarrier, tag="media"):
    media: MediaIn


class MarkName(msgspec.Struct):
    name: str


class Mark(_FromCarrier, tag="mark"):
    mark: MarkName


class DtmfIn(msgspec.Struct, kw_only=True):
    digit: str
    track: str = "inbound_track"


class Dtmf(_FromCarrier, tag="dtmf"):
    dtmf: DtmfIn


class StopInfo(msgspec.Struct, kw_only=True):
    accountSid: str = ""
    callSid: str = ""


class Stop(_FromCarrier, tag="stop"):
    stop: StopInfo | None = None


CarrierMessage = Connected | Start | Media | Mark | Dtmf | Stop


class _ToCarrier(msgspec.Struct, tag_field="event", kw_only=True):
    streamSid: str


class MediaPayload(msgspec.Struct):
    payload: bytes


class MediaOut(_ToCarrier, tag="media"):
    media: MediaPayload


class MarkOut(_ToCarrier, tag="mark"):
    mark: MarkName


class ClearOut(_ToCarrier, tag="clear"):
    pass


class _ResponseRef(msgspec.Struct):
    response_id: str


_carrier_decoder = msgspec.json.Decoder(CarrierMessage)
_response_decoder = msgspec.json.Decoder(_ResponseRef)
_encoder = msgspec.json.Encoder()


def decode_carrier(text: str | bytes) -> CarrierMessage:
    """One Media Streams message from the carrier; :class:`msgspec.MsgspecError` if it is not."""
    message: CarrierMessage = _carrier_decoder.decode(text)
    return message


def _encode(message: msgspec.Struct) -> str:
    return _encoder.encode(message).decode()


# ------------------------------------------------------------------ signatures


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """``X-Twilio-Signature`` of a request: base64 HMAC-SHA1 of the URL, then each
    POST parameter's name and value (sorted by name, then value), keyed by the auth token."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def valid_signature(
    auth_token: str, signature: str, urls: Iterable[str], params: Sequence[tuple[str, str]] = ()
) -> bool:
    """Whether ``signature`` signs one of ``urls`` (each also with its default port
    added or taken off, as Twilio's own libraries check) with ``params``."""
    for url in urls:
        for variant in _port_variants(url):
            expected = twilio_signature(auth_token, variant, params)
            if hmac.compare_digest(expected.encode(), signature.encode()):
                return True
    return False


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if default is None or not host:
        return [url]
    if parts.port is None:
        other = parts._replace(netloc=f"{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=host)
    else:
        return [url]
    return [url, urlunsplit(other)]


def connect_stream_twiml(url: str, parameters: Mapping[str, str]) -> str:
    """The TwiML that connects the call to the stream at ``url`` (bidirectional),
    passing ``parameters`` back in the stream's ``start.customParameters``."""
    nested = "".join(
        f"<Parameter name={_attribute(name)} value={_attribute(value)}/>"
        for name, value in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={_attribute(url)}>{nested}</Stream></Connect></Response>"
    )


def _attribute(value: str) -> str:
    return '"' + escape(value, {'"': "&quot;"}) + '"'


# ------------------------------------------------------------------ the transport


@dataclasses.dataclass(frozen=True)
class TwilioStatistics:
    """One call's figures (``TwilioTransport.statistics()``)."""

    frames_in: int
    frames_out: int
    marks_sent: int
    marks_echoed: int
    clears: int
    digits: int
    #: Messages from the carrier that were not Media Streams JSON (ignored).
    bad_messages: int
    #: What the caller has heard of the latest response (from the marks), and of which.
    played_ms: int
    played_response: str | None
    #: Audio waiting for the line, in ms.
    queued_ms: int


class TwilioTransport:
    """A room's :class:`~voice_trio.transport.Transport` over one Media Streams socket.

    ``carrier`` is the accepted WebSocket (any Transport: the server's own, or
    ASGI's). :meth:`run` (the paced sender, the only writer to the carrier) must
    run in a nursery while the room uses the transport.
    """

    def __init__(
        self,
        carrier: Transport,
        *,
        stream_sid: str,
        encoding: str = "audio/x-mulaw",
        lead_s: float = 0.2,
        dtmf_gap_s: float = 1.0,
    ) -> None:
        self._carrier = carrier
        self.stream_sid = stream_sid
        self._encode_g711, self._decode_g711, silence = _CODECS[encoding]
        self._silence = bytes([silence])
        self._lead_s = lead_s
        self._dtmf_gap_s = dtmf_gap_s
        sid = _encoder.encode(stream_sid).decode()
        # The hot path (50 frames a second a call) builds the media JSON by hand; it
        # is exactly MediaOut's encoding (tests decode it as MediaOut, strictly).
        self._media_head = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._clear_text = _encode(ClearOut(streamSid=stream_sid))
        # What the room gets next, before the carrier's next message.
        self._inbound: collections.deque[bytes | str] = collections.deque(
            [_encode(p.SessionConfig(input_sample_rate=CARRIER_RATE))]
        )
        self._ended = False
        #: The carrier sent ``stop`` (the call ended or the stream was stopped).
        self.stopped = False
        self._closed = False
        self._broken = False
        # Outbound: 20 ms G.711 frames (bytes) and mark names (str), in line order.
        self._queue: collections.deque[bytes | str] = collections.deque()
        self._queued_bytes = 0
        self._carry = bytearray()  # encoded audio short of a whole frame
        self._resampler: Any = None
        self._clear_pending = False
        # The line's clock: when the next frame sent would start playing.
        self._next_at = 0.0
        self._wake = trio.Event()
        self._space = trio.Event()
        self._drained = trio.Event()
        # Responses: the newest the room started, the one whose audio is being queued,
        # the last one cut (its marks, echoed by a clear, say nothing of what was heard).
        self._latest: str | None = None
        self._line: str | None = None
        self._line_frames = 0
        self._cut: str | None = None
        self._played_response: str | None = None
        self._played_ms = 0
        self._marks_pending = 0
        # Keypad digits not yet sent as a turn, and when they are due.
        self._digits = ""
        self._digits_due = 0.0
        self._bad_log = RateLimitedLog(log, burst=3)
        self._uplink = bytearray()  # inbound PCM not yet handed to the room
        self.frames_in = 0
        self.frames_out = 0
        self.marks_sent = 0
        self.marks_echoed = 0
        self.clears = 0
        self.digits = 0
        self.bad_messages = 0

    def statistics(self) -> TwilioStatistics:
        return TwilioStatistics(
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            marks_sent=self.marks_sent,
            marks_echoed=self.marks_echoed,
            clears=self.clears,
            digits=self.digits,
            bad_messages=self.bad_messages,
            played_ms=self._played_ms,
            played_response=self._played_response,
            queued_ms=self._queued_bytes * 1000 // CARRIER_RATE,
        )

    def played_ms(self, response_id: str) -> int | None:
        """What the caller has heard of ``response_id``'s audio, by the carrier's marks:
        the end of the last mark it echoed (0 before the first); None for a response
        this transport never saw. What a barge-in should truncate the response to; the
        room's clock estimate is later by the lead and the carrier's own buffer."""
        if response_id == self._played_response:
            return self._played_ms
        if response_id in (self._latest, self._line, self._cut):
            return 0
        return None

    @property
    def playing(self) -> bool:
        """Audio of the agent is queued here or not yet confirmed played by the carrier."""
        return bool(self._queue) or self._marks_pending > 0

    # ------------------------------------------------------------ carrier -> room

    async def receive(self) -> bytes | str | None:
        while True:
            if self._inbound:
                await trio.lowlevel.checkpoint()
                return self._inbound.popleft()
            if self._ended:
                await trio.lowlevel.checkpoint()
                return None
            message = await self._carrier.receive()
            if message is None:
                self._ended = True
                continue
            # The carrier sends a frame every 20 ms, silence included: digits fall due
            # on the next message, with no timer of their own.
            if self._digits and trio.current_time() >= self._digits_due:
                self._flush_digits()
            try:
                event = _carrier_decoder.decode(message)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                self.bad_messages += 1
                self._bad_log.log("bad", "stream %s: ignored a message: %s", self.stream_sid, exc)
                continue
            if isinstance(event, Media):
                if event.media.track not in ("inbound", "inbound_track"):
                    continue
                self.frames_in += 1
                self._uplink += self._decode_g711(event.media.payload)
                if len(self._uplink) >= INBOUND_FRAMES * FRAME_BYTES * 2:
                    pcm = bytes(self._uplink)
                    self._uplink.clear()
                    if not self._inbound:
                        return pcm
                    self._inbound.append(pcm)
                continue
            # Anything else first hands the room the audio before it, in order.
            if self._uplink:
                self._inbound.append(bytes(self._uplink))
                self._uplink.clear()
            if isinstance(event, Mark):
                self._on_mark(event.mark.name)
            elif isinstance(event, Dtmf):
                self._on_dtmf(event.dtmf.digit)
            elif isinstance(event, Stop):
                self.stopped = self._ended = True

    def _on_mark(self, name: str) -> None:
        self.marks_echoed += 1
        self._marks_pending = max(0, self._marks_pending - 1)
        response_id, _, ms = name.rpartition("/")
        if not response_id or not ms.isdigit() or response_id == self._cut:
            return  # not ours, or echoed by a clear: nothing was heard by it
        self._played_response, self._played_ms = response_id, int(ms)

    def _on_dtmf(self, digit: str) -> None:
        """A keypress. Digits are gathered into one typed turn (``{"type":"text"}``
        carrying them, e.g. ``"482913"``), sent on ``#``, after TWILIO_DTMF_GAP_MS
        without another key, or at MAX_DIGITS. The agent graph reads numerals in a
        turn as it reads spoken ones (a booking code typed on the keypad fills the
        slot); a key pressed while the agent speaks cuts it first, as a barge-in
        (an ``interrupt`` at what the marks say the caller heard), as IVRs do."""
        if digit not in _DIGITS:
            self.bad_messages += 1
            return
        self.digits += 1
        if self.playing and self._latest is not None and self._latest != self._cut:
            heard = self.played_ms(self._latest) or 0
            self._inbound.append(_encode(p.Interrupt(played_ms=heard)))
        if digit == "#":
            self._flush_digits()
            return
        self._digits += digit
        self._digits_due = trio.current_time() + self._dtmf_gap_s
        if len(self._digits) >= MAX_DIGITS:
            self._flush_digits()

    def _flush_digits(self) -> None:
        if self._digits:
            self._inbound.append(_encode(p.TextIn(text=self._digits)))
            self._digits = ""

    # ------------------------------------------------------------ room -> carrier

    async def send(self, messages: Sequence[bytes | str]) -> None:
        if self._broken or self._closed:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("the call's stream is closed")
        for message in messages:
            if isinstance(message, bytes):
                self._queue_audio(message)
            else:
                self._on_event(message)
        self._wake.set()
        while self._queued_bytes > MAX_QUEUED_BYTES and not self._broken:
            self._space = trio.Event()
            await self._space.wait()
        await trio.lowlevel.checkpoint()

    def _on_event(self, text: str) -> None:
        # Only three of the room's events matter to the line; the type is read from the
        # encoder's fixed prefix ({"type":"...) so the others cost no decoding.
        if not text.startswith('{"type":"'):
            return
        kind = text[9 : text.find('"', 9)]
        if kind == "response.started":
            self._latest = _response_decoder.decode(text).response_id
        elif kind == "interrupted":
            self._clear(_response_decoder.decode(text).response_id)
        elif kind == "response.done":
            self._finish(_response_decoder.decode(text).response_id)

    def _queue_audio(self, pcm: bytes) -> None:
        response_id = self._latest or ""
        if response_id != self._line:
            self._line = response_id
            self._line_frames = 0
            self._carry.clear()
            self._resampler = soxr.ResampleStream(
                OUTPUT_SAMPLE_RATE, CARRIER_RATE, 1, dtype="int16", quality="HQ"
            )
        resampled = self._resampler.resample_chunk(np.frombuffer(pcm, dtype="<i2"))
        self._carry += self._encode_g711(resampled.astype("<i2", copy=False).tobytes())
        self._queue_frames()

    def _queue_frames(self) -> None:
        """The whole frames of the carry onto the queue, and a mark after them."""
        carry = self._carry
        whole = len(carry) // FRAME_BYTES
        if not whole:
            return
        queue = self._queue
        for i in range(whole):
            queue.append(bytes(carry[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]))
        del carry[: whole * FRAME_BYTES]
        self._queued_bytes += whole * FRAME_BYTES
        self._line_frames += whole
        queue.append(f"{self._line}/{self._line_frames * FRAME_BYTES * 1000 // CARRIER_RATE}")

    def _finish(self, response_id: str) -> None:
        """The response is complete: its resampler's tail and last part-frame go out too."""
        if response_id != self._line or self._resampler is None:
            return
        tail = self._resampler.resample_chunk(np.zeros(0, dtype="<i2"), last=True)
        self._carry += self._encode_g711(tail.astype("<i2", copy=False).tobytes())
        if len(self._carry) % FRAME_BYTES:
            self._carry += self._silence * (FRAME_BYTES - len(self._carry) % FRAME_BYTES)
        self._queue_frames()
        self._line = None
        self._resampler = None
        self._wake.set()

    def _clear(self, response_id: str) -> None:
        """The room cut ``response_id``: drop what is queued; the carrier drops its buffer."""
        self._queue.clear()
        self._queued_bytes = 0
        self._carry.clear()
        self._resampler = None
        self._line = None
        self._cut = response_id
        self._marks_pending = 0  # the clear makes the carrier echo them all, unheard
        self._clear_pending = True
        self._next_at = trio.current_time()
        self.clears += 1
        self._space.set()
        self._wake.set()

    async def close(self, code: int, reason: str = "") -> None:
        """End the stream (Twilio then goes on with the call's next TwiML: hang up).
        What is queued plays first, for at most :data:`CLOSE_DRAIN_S`."""
        with trio.move_on_after(CLOSE_DRAIN_S):
            while (self._queue or self._clear_pending) and not self._broken:
                self._drained = trio.Event()
                await self._drained.wait()
        self._closed = True
        await self._carrier.close(code, reason)

    # ------------------------------------------------------------ the paced sender

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send the queued frames at real time, :attr:`lead_s` ahead, until cancelled.

        The only writer to the carrier: ``clear`` goes first whenever it is due.
        Ends quietly if the carrier is gone (the room sees it on its next send).
        """
        task_status.started()
        queue = self._queue
        try:
            while not self._closed:
                if self._clear_pending:
                    self._clear_pending = False
                    await self._carrier.send([self._clear_text])
                    continue
                if not queue:
                    self._drained.set()
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                now = trio.current_time()
                if self._next_at < now:
                    self._next_at = now  # the line went quiet: this frame plays now
                if self._next_at - now >= self._lead_s:
                    self._wake = trio.Event()
                    with trio.move_on_at(self._next_at - self._lead_s + PACE_S):
                        await self._wake.wait()
                    continue
                await self._carrier.send(self._take(now + self._lead_s))
        except trio.BrokenResourceError:
            self._broken = True
            self._space.set()
            self._drained.set()

    def _take(self, horizon: float) -> list[str]:
        """The frames due before ``horizon`` (and the marks right after them), as JSON."""
        queue = self._queue
        batch: list[str] = []
        head = self._media_head
        while queue and (self._next_at < horizon or isinstance(queue[0], str)):
            item = queue.popleft()
            if isinstance(item, bytes):
                batch.append(head + base64.b64encode(item).decode() + '"}}')
                self._next_at += FRAME_S
                self._queued_bytes -= len(item)
                self.frames_out += 1
            else:
                batch.append(_encode(MarkOut(streamSid=self.stream_sid, mark=MarkName(item))))
                self._marks_pending += 1
                self.marks_sent += 1
        self._space.set()
        return batch


# ------------------------------------------------------------------ the bridge


class RoomHost(Protocol):
    """What the bridge needs of the app (``voice_trio.app.VoiceTrioApp``)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def guard(self) -> HandshakeGuard: ...

    metrics: ServerMetrics

    async def serve_room(self, session_id: str, transport: Transport) -> None: ...


class TwilioBridge:
    """The two endpoints of phone calls: the voice webhook and the stream."""

    def __init__(self, host: RoomHost) -> None:
        self._host = host
        #: The calls on this process, by session id (their transports' figures).
        self.calls: dict[str, TwilioTransport] = {}

    @property
    def _settings(self) -> Settings:
        return self._host.settings

    def _refused(self, reason: str) -> None:
        self._host.metrics.handshakes_refused[reason] += 1

    def stream_key(self) -> str:
        """The key of the room tokens the webhook hands the stream ('' when none)."""
        settings = self._settings
        if settings.auth_secret:
            return settings.auth_secret
        if settings.twilio_auth_token:
            # Not the auth token itself: a key of its own, derived from it.
            derived = hmac.new(
                settings.twilio_auth_token.encode(), b"voice-trio stream token", hashlib.sha256
            )
            return derived.hexdigest()
        return ""

    def public_base(self, headers: Mapping[str, str], scheme: str, peer: str) -> str:
        """The scheme and host Twilio reaches this server at: TWILIO_PUBLIC_URL, else the
        request's own (``X-Forwarded-Proto`` believed from a trusted proxy only)."""
        configured = self._settings.twilio_public_url
        if configured:
            return configured.rstrip("/")
        forwarded = headers.get("x-forwarded-proto")
        if forwarded and peer in self._host.guard.proxies:
            scheme = forwarded.split(",")[0].strip().lower()
        return f"{scheme}://{headers.get('host', '')}"

    # ------------------------------------------------------------ the stream

    def admit(
        self,
        target: str,
        headers: Mapping[str, str],
        *,
        peer: str,
        local: str | None,
    ) -> Ticket:
        """Check the stream's handshake (``headers`` with lower-case names); raise
        :class:`~voice_trio.security.Refusal`. The session id comes later, with the call."""
        try:
            return self._admit(target, headers, peer, local)
        except Refusal as refusal:
            self._refused(refusal.reason)
            raise

    def _admit(
        self, target: str, headers: Mapping[str, str], peer: str, local: str | None
    ) -> Ticket:
        settings = self._settings
        if "origin" in headers:
            raise Refusal(403, "origin", "a web page may not open a phone stream")
        if settings.twilio_auth_token:
            signature = headers.get("x-twilio-signature")
            base = self.public_base(headers, "wss", peer)
            # Twilio signs the stream's URL as the TwiML gave it (wss://).
            urls = _any_scheme(base + target.partition("?")[0])
            if not signature or not valid_signature(settings.twilio_auth_token, signature, urls):
                raise Refusal(403, "twilio_signature", "the X-Twilio-Signature is missing or wrong")
        elif (
            not settings.auth_secret
            and not settings.allow_unauthenticated
            and local is not None
            and not is_loopback(local)
        ):
            raise Refusal(
                403,
                "unauthenticated",
                "phone streams need TWILIO_AUTH_TOKEN or AUTH_SECRET on a non-loopback address",
            )
        return Ticket("", peer, lambda: None)

    async def serve(self, carrier: Transport) -> None:
        """Run one call on an accepted stream until it ends (the connection's task)."""
        start = await self._read_start(carrier)
        if start is None:
            return
        info = start.start
        session_id = info.customParameters.get("session_id") or info.callSid
        refusal = self._check_start(info, session_id)
        if refusal is not None:
            self._refused(refusal.reason)
            await carrier.close(1008, refusal.message)
            return
        fmt = info.mediaFormat
        if fmt.encoding not in _CODECS or fmt.sampleRate != CARRIER_RATE or fmt.channels != 1:
            await carrier.close(1003, "the stream must be 8 kHz mono mu-law or A-law")
            return
        settings = self._settings
        transport = TwilioTransport(
            carrier,
            stream_sid=info.streamSid,
            encoding=fmt.encoding,
            lead_s=settings.twilio_lead_ms / 1000,
            dtmf_gap_s=settings.twilio_dtmf_gap_ms / 1000,
        )
        self.calls[session_id] = transport
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(transport.run)
                await self._host.serve_room(session_id, transport)
                nursery.cancel_scope.cancel()
        finally:
            if self.calls.get(session_id) is transport:
                del self.calls[session_id]
        if not transport._closed:  # the call ended (stop) or the socket dropped
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                try:
                    await carrier.close(1000, "stream ended")
                except trio.BrokenResourceError:
                    pass  # already gone

    async def _read_start(self, carrier: Transport) -> Start | None:
        with trio.move_on_after(START_TIMEOUT_S):
            for _ in range(MAX_BEFORE_START):
                message = await carrier.receive()
                if message is None:
                    return None
                try:
                    event = _carrier_decoder.decode(message)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    self._refused("twilio_start")
                    await carrier.close(1008, "not a Media Streams message")
                    return None
                if isinstance(event, Start):
                    return event
                if not isinstance(event, Connected):
                    break
        self._refused("twilio_start")
        await carrier.close(1008, "a Media Streams `start` must open the stream")
        return None

    def _check_start(self, info: StartInfo, session_id: str) -> Refusal | None:
        if not _SESSION_ID.fullmatch(session_id):
            return Refusal(403, "session_id", "a session id is 1 to 128 of A-Z a-z 0-9 _ -")
        key = self.stream_key()
        if not key:
            return None
        token = info.customParameters.get("token")
        if not token:
            return Refusal(401, "token_missing", "the stream needs the token its TwiML passed")
        try:
            verify_token(key, token, session_id)
        except Refusal as refusal:
            return refusal
        return None

    # ------------------------------------------------------------ the webhook

    async def voice(self, request: Request) -> Response:
        """``POST /telephony/twilio/voice``: the TwiML that connects the call to the stream."""
        settings = self._settings
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_WEBHOOK_BYTES:
            return PlainTextResponse("body too large\n", status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_WEBHOOK_BYTES:
                return PlainTextResponse("body too large\n", status_code=413)
        params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        peer = request.client.host if request.client else ""
        headers = {k.lower(): v for k, v in request.headers.items()}
        base = self.public_base(headers, request.url.scheme, peer)
        if settings.twilio_auth_token:
            query = request.url.query
            url = base + request.url.path + ("?" + query if query else "")
            signature = request.headers.get("x-twilio-signature")
            if not signature or not valid_signature(
                settings.twilio_auth_token, signature, _any_scheme(url), params
            ):
                self._refused("twilio_signature")
                return PlainTextResponse("bad X-Twilio-Signature\n", status_code=403)
        elif settings.auth_secret:
            # Anyone could ask for a room token here: calls need Twilio's signature.
            self._refused("twilio_signature")
            return PlainTextResponse(
                "calls need TWILIO_AUTH_TOKEN when AUTH_SECRET is set\n", status_code=403
            )
        else:
            server = request.scope.get("server")
            local = server[0] if server else None
            if not settings.allow_unauthenticated and local is not None and not is_loopback(local):
                self._refused("unauthenticated")
                return PlainTextResponse(
                    "calls need TWILIO_AUTH_TOKEN on a non-loopback address\n", status_code=403
                )
        call_sid = dict(params).get("CallSid", "")
        if not _SESSION_ID.fullmatch(call_sid):
            return PlainTextResponse("no valid CallSid in the form\n", status_code=400)
        parameters = {"session_id": call_sid}
        key = self.stream_key()
        if key:
            parameters["token"] = mint_token(key, call_sid, ttl_s=STREAM_TOKEN_TTL_S)
        twiml = connect_stream_twiml(_ws_form(base) + STREAM_PATH, parameters)
        return Response(twiml, media_type="text/xml")


def _ws_form(base: str) -> str:
    scheme, sep, rest = base.partition("://")
    return {"https": "wss", "http": "ws"}.get(scheme, scheme) + sep + rest


def _any_scheme(url: str) -> list[str]:
    """``url`` with each scheme Twilio may have signed it with. A TLS-terminating proxy
    hides the scheme from the server; the host and path signed are what matter."""
    rest = url.partition("://")[2]
    return [f"{scheme}://{rest}" for scheme in ("wss", "https", "ws", "http")]
