"""The embedded offline brain and voice (``VOICE_BRAIN=local``, ``VOICE_TTS=local``).

Hearing: the client's audio comes at its own rate (every supported rate is in
:attr:`LocalBrain.input_rates`, so the room does not resample it); 16 kHz goes
to the process's shared Silero VAD (batched across rooms) as it is, any other
rate is resampled to 16 kHz once, here. Speech start is a barge-in, speech
stop (or the client's ``commit_audio``) ends the user's turn. Whisper base
transcribes the turn in a worker thread behind one process-wide, fair,
bounded queue; long speech gets partial transcripts.

Deciding: each final transcript (or typed turn) goes to the room's
conversation (the agent graph), whose reply text the room speaks.

Speaking: :class:`LocalVoice` streams the reply through eSpeak NG clause by
clause; the room's turn scope stops it on interrupt.

Nothing here downloads anything: the models come from installed packages.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, assert_never

import numpy as np
import trio

from ..config import OUTPUT_SAMPLE_RATE, SUPPORTED_INPUT_RATES
from ..errors import ProviderError
from .base import BrainEvents, SessionOptions
from .breaker import Attempt, CircuitBreaker, CircuitOpen

if TYPE_CHECKING:
    from ..config import Settings
    from ..speech.asr import Recognizer
    from ..speech.tts import EspeakOptions, EspeakTts
    from ..speech.vad import Float32Array, Resampler, SileroVad, VadBatcher

__all__ = ["LocalBrain", "LocalSpeech", "LocalVoice", "Responder"]

log = logging.getLogger("voice_trio.local")

_PREROLL_S = 0.3  # audio kept from before the VAD's speech start
_SAMPLE_RATE = 16_000


class Responder(Protocol):
    """What decides the reply: the room's conversation on the agent graph.

    A responder may also offer ``hints() -> Sequence[str]`` (what the next turn is
    expected to hold: Whisper's prompt for it) and ``respond_heard(text)`` (the reply
    to a recognised turn, as against a typed one), as
    :class:`~voice_trio.agent.Conversation` does.
    """

    async def respond(self, text: str) -> str:
        """The reply to one user turn (a final transcript or typed text)."""
        ...

    def greeting(self) -> str:
        """What the agent says when the conversation opens (may be empty)."""
        ...


class LocalSpeech:
    """The process-wide models, loaded once and shared by every room."""

    def __init__(
        self,
        *,
        recognizer: Recognizer,
        vad_model: SileroVad,
        tts: EspeakTts,
        asr_workers: int = 1,
        asr_queue_max: int = 32,
        asr_max_wait_s: float = 8.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.vad_model = vad_model
        self._vad: VadBatcher | None = None
        self.tts = tts
        self.asr_limiter = trio.CapacityLimiter(asr_workers)
        self.asr_queue_max = asr_queue_max
        self.asr_max_wait_s = asr_max_wait_s
        #: The recognizer's breaker (process-wide, like the model): after repeated
        #: failures inside the model, turns get ``asr_unavailable`` at once for a
        #: cool-down instead of each spending a worker on a model that fails.
        self.breaker = breaker or CircuitBreaker("asr")

    @property
    def vad(self) -> VadBatcher:
        if self._vad is None:
            raise RuntimeError("LocalSpeech.run is not running")
        return self._vad

    @classmethod
    async def load(cls, settings: Settings) -> LocalSpeech:
        """Assemble (first time only) and load the models, off the event loop."""
        return await trio.to_thread.run_sync(cls.load_sync, settings)

    @classmethod
    def load_sync(cls, settings: Settings) -> LocalSpeech:
        """Blocking :meth:`load` (1-2 s; the first time also assembles the model)."""
        from ..speech.asr import DecodeOptions, Recognizer
        from ..speech.tts import EspeakOptions, EspeakTts
        from ..speech.vad import SileroVad

        started = time.perf_counter()
        folder = Path(settings.asr_model_dir).expanduser() if settings.asr_model_dir else None
        pad = settings.asr_window_pad_s
        recognizer = Recognizer(
            folder,
            cpu_threads=settings.asr_cpu_threads,
            options=DecodeOptions(window_pad_s=None if pad >= 30 else pad),
        )
        vad_model = SileroVad()
        tts = EspeakTts(
            options=EspeakOptions(voice=settings.tts_voice, speed_wpm=settings.tts_speed_wpm),
            chunk_bytes=settings.ws_tts_chunk_bytes,
        )
        log.info("embedded speech models loaded in %.1f s", time.perf_counter() - started)
        return cls(
            recognizer=recognizer,
            vad_model=vad_model,
            tts=tts,
            asr_workers=settings.asr_workers,
            asr_queue_max=settings.asr_queue_max,
            asr_max_wait_s=settings.asr_max_wait_s,
            breaker=CircuitBreaker(
                "asr",
                threshold=settings.provider_breaker_threshold,
                cooldown_s=settings.provider_breaker_cooldown_s,
            ),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The VAD batching service; run it in the app's nursery (once per app)."""
        from ..speech.vad import VadBatcher

        batcher = VadBatcher(self.vad_model)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(batcher.run)
                self._vad = batcher
                task_status.started()
        finally:
            self._vad = None

    def _admit(self) -> Attempt:
        try:
            return self.breaker.admit()
        except CircuitOpen as exc:
            raise ProviderError(
                "asr_unavailable",
                "speech recognition is failing; please type instead, or try again in "
                f"{max(1, round(exc.retry_in_s))} s",
            ) from None

    async def transcribe(
        self, audio: np.ndarray[Any, Any], *, language: str, prompt: str | None = None
    ) -> str:
        """Recognise a turn: rooms wait their turn fairly (FIFO), boundedly.

        ``prompt``: the recognition hints of the conversation's current question
        (:func:`~voice_trio.speech.asr.hint_prompt`), for this turn only.

        Raises :class:`ProviderError` when too many rooms wait already, when this
        one waited longer than ``asr_max_wait_s``, or when the model failed
        (``asr_failed``; ``asr_unavailable`` while its breaker is open); the room
        then says so and goes on.
        """
        from ..speech.asr import RecognizerError

        self._admit().release()  # refused at once while open, before any waiting
        limiter = self.asr_limiter
        if limiter.statistics().tasks_waiting >= self.asr_queue_max:
            raise ProviderError("asr_busy", "speech recognition is saturated; please try again")
        with trio.move_on_after(self.asr_max_wait_s) as waited:
            await limiter.acquire()
        if waited.cancelled_caught:
            raise ProviderError(
                "asr_timeout",
                f"speech recognition was busy for {self.asr_max_wait_s:g} s; please say that again",
            )
        try:
            attempt = self._admit()
        except ProviderError:
            limiter.release()
            raise
        try:
            text = await trio.to_thread.run_sync(
                lambda: self.recognizer.transcribe_sync(audio, language=language, prompt=prompt)
            )
        except RecognizerError as exc:
            log.warning("speech recognition failed: %s", exc, exc_info=exc.__cause__)
            attempt.failed(str(exc))
            raise ProviderError(
                "asr_failed", "speech recognition failed on that turn; please say it again"
            ) from None
        finally:
            attempt.release()  # only if unsettled: cancelled, or refused before the model ran
            limiter.release()
        attempt.succeeded()
        return text


class LocalVoice:
    """eSpeak NG, streamed clause by clause (a separate GPL program, run per clause)."""

    name = "local"

    def __init__(self, speech: LocalSpeech, options: SessionOptions) -> None:
        self._tts = speech.tts
        self._options = _espeak_options(speech, options)

    async def speak(
        self, text: trio.MemoryReceiveChannel[str], emit: Callable[[bytes], Awaitable[None]]
    ) -> None:
        from ..speech.tts import TtsError

        stream = self._tts.stream_deltas(text, options=self._options)
        try:
            async for pcm in stream:
                await emit(pcm)
        except TtsError as exc:
            raise ProviderError("tts_failed", f"the embedded voice failed: {exc}") from None
        finally:
            await stream.aclose()


def _espeak_options(speech: LocalSpeech, options: SessionOptions) -> EspeakOptions:
    from ..speech.tts import VIETNAMESE_VOICES

    base = speech.tts.options
    if options.voice and options.voice in VIETNAMESE_VOICES and options.voice != base.voice:
        import dataclasses

        return dataclasses.replace(base, voice=options.voice)
    return base


# The jobs of the brain's one deciding task: one channel, in order, dispatched by type.
@dataclass(frozen=True, slots=True)
class Partial:
    """The audio so far of turn ``turn_no``, for a partial transcript (skippable)."""

    turn_no: int
    audio: Float32Array


@dataclass(frozen=True, slots=True)
class Final:
    """A whole spoken turn, to transcribe and answer."""

    audio: Float32Array


@dataclass(frozen=True, slots=True)
class TypedText:
    """A typed user turn, answered as it is."""

    text: str


_Job = Partial | Final | TypedText


class LocalBrain:
    """One room's embedded conversation session."""

    name = "local"
    #: Every client rate as it is: 16 kHz goes to the VAD untouched, the others
    #: are resampled to 16 kHz once, here (the room resamples none of them).
    input_rates = frozenset(SUPPORTED_INPUT_RATES)

    def __init__(
        self,
        options: SessionOptions,
        *,
        speech: LocalSpeech,
        responder: Responder,
        greet: bool = False,
        end_silence_ms: int = 500,
        partial_interval_s: float = 1.5,
    ) -> None:
        from ..speech.asr import Utterance
        from ..speech.vad import VadConfig, VadStream

        self.options = options
        self._speech = speech
        self._responder = responder
        self._greet = greet
        # Made for the first audio at a rate other than 16 kHz (none for a 16 kHz
        # client); replaced, tail flushed, when the rate changes.
        self._resampler: Resampler | None = None
        self._vad = VadStream(speech.vad_model, VadConfig(end_silence_ms=end_silence_ms))
        self._utterance = Utterance(
            speech.recognizer, language=options.language, partial_interval_s=partial_interval_s
        )
        self._heard = 0  # 16 kHz samples fed to the VAD so far
        # Recent audio, so the turn starts where the VAD says speech began.
        self._recent: collections.deque[tuple[int, Float32Array]] = collections.deque()
        self._in_speech = False
        self._turn_no = 0
        self._jobs_tx, self._jobs_rx = trio.open_memory_channel[_Job](8)
        self._events: BrainEvents | None = None

    async def run(
        self, events: BrainEvents, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._events = events
        task_status.started()
        if self._greet:
            await self._say(events, self._responder.greeting(), reply=False)
        async for job in self._jobs_rx:
            match job:
                case Partial():
                    await self._partial(events, job)
                case Final(audio=audio):
                    text = await self._final(events, audio)
                    if text:
                        # A graph conversation may confirm what a transcript makes it unsure of.
                        respond = getattr(self._responder, "respond_heard", None)
                        await self._say(events, await (respond or self._responder.respond)(text))
                case TypedText(text=text):
                    await self._say(events, await self._responder.respond(text))
                case _:
                    assert_never(job)

    async def _partial(self, events: BrainEvents, job: Partial) -> None:
        if job.turn_no != self._turn_no or not self._in_speech:
            return  # that turn is over; its final is coming
        if self._speech.asr_limiter.statistics().tasks_waiting:
            return  # partials are skipped while others wait for recognition
        try:
            text = await self._speech.transcribe(job.audio, language=self.options.language)
        except ProviderError:
            return  # a partial is only a courtesy
        if text and job.turn_no == self._turn_no and self._in_speech:
            await events.transcript(text, final=False)

    async def _final(self, events: BrainEvents, audio: Float32Array) -> str:
        """The turn's transcript, sent to the client; empty for noise or a failure."""
        try:
            text = await self._speech.transcribe(
                audio, language=self.options.language, prompt=self._hint_prompt()
            )
        except ProviderError as exc:
            await events.error(exc.code, exc.message)
            return ""
        if text:  # nothing for noise, a cough
            await events.transcript(text, final=True)
        return text

    def _hint_prompt(self) -> str | None:
        """What the conversation expects next, for Whisper (a responder may offer ``hints()``)."""
        from ..speech.asr import hint_prompt

        hints = getattr(self._responder, "hints", None)
        return hint_prompt(hints()) if callable(hints) else None

    async def _say(self, events: BrainEvents, text: str, *, reply: bool = True) -> None:
        if text:
            turn = await events.start_response(reply=reply)
            await turn.text_delta(text)
            await turn.finish()

    # ------------------------------------------------------------ room -> brain

    async def send_audio(self, pcm: bytes, *, rate: int = OUTPUT_SAMPLE_RATE) -> None:
        events = self._require_events()
        samples = self._to_16k(pcm, rate)
        if not len(samples):
            return
        start = self._heard
        self._heard += len(samples)
        self._recent.append((start, samples))
        while self._recent and self._recent[0][0] + len(self._recent[0][1]) < (
            self._heard - int((_PREROLL_S + 0.5) * _SAMPLE_RATE)
        ):
            self._recent.popleft()
        result = await self._speech.vad.feed(self._vad, samples)
        for event in result.events:
            if event.kind == "speech_started":
                self._in_speech = True
                self._turn_no += 1
                self._utterance.reset()
                self._utterance.append(self._since(event.sample - int(_PREROLL_S * _SAMPLE_RATE)))
                await events.speech_started()
                await events.barge_in()
            else:
                await self._end_turn(events)
        if self._in_speech and not any(e.kind == "speech_started" for e in result.events):
            self._utterance.append(samples)
            if self._utterance.partial_due() and self._utterance.seconds >= 2.0:
                self._offer(Partial(self._turn_no, self._utterance.take_partial()))

    def _to_16k(self, pcm: bytes, rate: int) -> Float32Array:
        """The frame as 16 kHz float32: as it is at 16 kHz, else through this rate's resampler.

        A rate change (a new ``session.config``) flushes the old filter's tail and
        starts afresh: one stream's filter state is never applied to another rate.
        """
        from ..speech.vad import Resampler, pcm16_to_float32

        resampler = self._resampler
        tail = None
        if resampler is not None and resampler.in_rate != rate:
            tail = resampler.process(b"", last=True)
            resampler = self._resampler = None
        if rate == _SAMPLE_RATE:
            samples = pcm16_to_float32(pcm)
        else:
            if resampler is None:
                resampler = self._resampler = Resampler(rate, _SAMPLE_RATE)
            samples = resampler.process(pcm)
        return samples if tail is None or not len(tail) else np.concatenate([tail, samples])

    def _since(self, sample: int) -> Float32Array:
        parts = []
        for start, chunk in self._recent:
            end = start + len(chunk)
            if end <= sample:
                continue
            parts.append(chunk[max(0, sample - start) :])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def _offer(self, job: Partial) -> None:
        try:
            self._jobs_tx.send_nowait(job)
        except trio.WouldBlock:
            pass  # a partial is skipped when the decider is behind

    async def _end_turn(self, events: BrainEvents) -> None:
        if not self._in_speech:
            return
        self._in_speech = False
        audio = self._utterance.audio().copy()
        self._utterance.reset()
        await events.speech_stopped()
        await self._jobs_tx.send(Final(audio))

    async def commit_audio(self) -> None:
        events = self._require_events()
        if self._in_speech:
            await self._end_turn(events)
        elif self._utterance.seconds:
            await self._jobs_tx.send(Final(self._utterance.audio().copy()))
            self._utterance.reset()

    async def send_text(self, text: str) -> None:
        await self._jobs_tx.send(TypedText(text))

    async def cancel_response(self, response_id: str, *, played_ms: int) -> None:
        pass  # the reply was local text: nothing upstream to truncate

    def configure(self, options: SessionOptions) -> None:
        self.options = options
        self._utterance.language = options.language

    def _require_events(self) -> BrainEvents:
        if self._events is None:
            raise RuntimeError("LocalBrain used before run() started")
        return self._events
