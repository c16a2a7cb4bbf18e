"""The embedded offline brain and voice (``VOICE_BRAIN=local``, ``VOICE_TTS=local``).

Hearing: the client's audio comes at its own rate (every supported rate is in
:attr:`LocalBrain.input_rates`, so the room does not resample it); 16 kHz goes
to the process's shared Silero VAD (batched across rooms) as it is, any other
rate is resampled to 16 kHz once, here. A pause is transcribed and read
before it ends the user's turn (see :class:`LocalBrain`; the client's
``commit_audio`` ends it at once); speech over the agent interrupts it once it
is recognised as meant words. Whisper base transcribes in a worker thread
behind one process-wide, fair, bounded queue; long speech gets partial
transcripts.

Deciding: each final transcript (or typed turn) goes to the room's
conversation (the agent graph), whose reply text the room speaks.

Speaking: :class:`LocalVoice` streams the reply through eSpeak NG clause by
clause; the room's turn scope stops it on interrupt.

Nothing here downloads anything: the models come from installed packages.
"""

from __future__ import annotations

import collections
import logging
import math
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
    """A pause (or the client's commit) in a spoken turn: transcribe, then decide.

    ``epoch`` is the brain's speech epoch when the pause began: if the user spoke
    again since, the turn goes on and this transcript is only a partial. ``force``
    (the client's ``commit_audio``) ends the turn whatever it reads like.
    """

    audio: Float32Array
    epoch: int
    force: bool = False
    #: When the client committed the turn (``force``): the end of the turn.
    at: float | None = None
    #: Made early in the pause (``_EARLY_MS``): it ends the turn only if it reads as
    #: complete; otherwise the VAD's own end of speech decides, with this transcript.
    early: bool = False


@dataclass(frozen=True, slots=True)
class Release:
    """A held turn's longest pause is over: it ends with the transcript it had."""

    epoch: int
    text: str


@dataclass(frozen=True, slots=True)
class Check:
    """Speech over the agent: is it words the user means (a barge-in) or a backchannel?"""

    turn_no: int
    audio: Float32Array


@dataclass(slots=True)
class Answered:
    """A spoken turn the brain ended and answered, until its reply is heard: speech
    that starts before that joins it (one turn, one final transcript)."""

    audio: Float32Array  # the turn's audio, to be heard again with what follows
    at: float  # when it ended (the clock)
    checkpoint: Any  # the conversation before it (Conversation.checkpoint), or None
    replied: bool = False  # its reply was opened (start_response)


@dataclass(frozen=True, slots=True)
class Join:
    """The user went on speaking before hearing the reply to ``answered``: drop the
    reply, rewind the conversation, and let the turn go on."""

    answered: Answered
    turn_no: int  # the reopened turn
    #: Samples of the reopened utterance that are the old turn's (and the gap after it).
    joined_samples: int


@dataclass(frozen=True, slots=True)
class TypedText:
    """A typed user turn, answered as it is."""

    text: str


_Job = Partial | Final | Release | Check | Join | TypedText

# Of the longest pause (VAD_MAX_END_SILENCE_MS), what a turn the current step does
# not understand (yet) waits: it may be half a sentence, or just not understood.
# 0.7 (1.2 s by default): a pause the speaker means as one (800 ms) measures up to
# ~1.1 s to the VAD, which hears a fricative onset ("số") late; as it is released
# at its deadline (not min_speech_ms after), a lone unclear turn ends when it did
# at 0.5.
_UNCLEAR_WAIT_SHARE = 0.7
# A pause is first transcribed this early: a turn that reads as complete ends
# there, before VAD_END_SILENCE_MS (what pays back the longer wait at other pauses).
_EARLY_MS = 250.0
# Speech over the agent is recognised after _CHECK_FIRST_S of it, then again after
# every _CHECK_EVERY_S, until it is words or the speech ends.
_CHECK_EVERY_S = 0.3
_CHECK_FIRST_S = 0.6  # longer than most backchannels ("ừ", "dạ": 0.3-0.6 s)
# Speech that starts within this of a turn's end, before its reply was heard, joins it.
_JOIN_WITHIN_S = 2.0
# A reply whose sound began less than this before the user's speech did was not heard
# by then: nobody reacts to a sound faster (the speech had begun in the user's head).
_REACTION_S = 0.2
# Silence put between the two parts of a joined turn for the recognizer.
_JOIN_GAP_S = 0.3


class LocalBrain:
    """One room's embedded conversation session.

    Turn-taking (DESIGN.md section 10): silence is only a pause. The audio so far
    is transcribed 250 ms into it, and the transcript and the agent graph's
    current step decide: a turn that reads as complete (a rule of the step takes
    it, or without a graph a sentence that ends) ends there, before the VAD's
    ``end_silence_ms``; one that stops on a continuation word or comma waits up to
    ``max_end_silence_ms`` of silence, one the step does not understand yet (or
    whose end the recognizer took from its prompt) most of that. Silence is
    counted in the audio the client sends, not by the clock: a client that stops
    sending in a pause ends its turn with ``commit_audio``.
    Speech that resumes before the turn's reply is decided makes one turn with one
    final transcript; so does speech that starts after it was decided but before any
    of its reply could be heard (the reply is dropped, the conversation rewound, and
    the turn's final transcript says ``joined``). While the agent speaks, speech
    interrupts it only once it is recognised as words that are not only a
    backchannel ("dạ", "vâng"): a cough or a "dạ" is not a turn.
    """

    name = "local"
    #: Every client rate as it is: 16 kHz goes to the VAD untouched, the others
    #: are resampled to 16 kHz once, here (the room resamples none of them).
    input_rates = frozenset(SUPPORTED_INPUT_RATES)
    #: The brain hears the audio and decides barge-ins itself: the client's
    #: ``client_vad_speech_start`` is only a hint (the room does not cut on it).
    confirms_barge_in = True

    def __init__(
        self,
        options: SessionOptions,
        *,
        speech: LocalSpeech,
        responder: Responder,
        greet: bool = False,
        end_silence_ms: int = 500,
        max_end_silence_ms: int = 1500,
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
        config = VadConfig(end_silence_ms=end_silence_ms)
        self._vad = VadStream(speech.vad_model, config)
        self._min_speech = int(config.min_speech_ms * _SAMPLE_RATE / 1000)
        self._max_silence = int(max(max_end_silence_ms, end_silence_ms) * _SAMPLE_RATE / 1000)
        self._short_silence = int(end_silence_ms * _SAMPLE_RATE / 1000)
        self._utterance = Utterance(
            speech.recognizer, language=options.language, partial_interval_s=partial_interval_s
        )
        self._heard = 0  # 16 kHz samples fed to the VAD so far
        # Recent audio, so the turn starts where the VAD says speech began.
        self._recent: collections.deque[tuple[int, Float32Array]] = collections.deque()
        self._in_speech = False  # the VAD hears speech now
        self._open = False  # a user turn is open: from its first speech until it is decided
        self._turn_no = 0
        # Bumped when speech (re)starts and when a turn ends: a transcript of a pause
        # that is not of the current epoch is stale (the user spoke again).
        self._epoch = 0
        self._silence_from = 0  # where the current pause began (16 kHz samples)
        # A turn waiting after a pause: (epoch, release at sample, its transcript).
        self._held: tuple[int, int, str] | None = None
        # The epoch the early transcript of a pause was asked for.
        self._early_epoch = -1
        # The turn began over the agent's speech and has not (yet) interrupted it.
        self._over_agent = False
        self._onset = 0  # where the turn's speech began (16 kHz samples)
        self._checked_at = 0.0  # seconds of speech at the last barge-in check
        self._checking = False
        # When the last frame the VAD heard as speech arrived (the clock; a window at or
        # above its end threshold keeps speech going): the end of the user's speech, for
        # the reply's stages.
        self._voiced_at: float | None = None
        # The last turn ended and answered, while speech may still join it.
        self._answered: Answered | None = None
        self._joined = False  # the open turn is a joined one (its final says so)
        # The last response opened and its text: a cut one's history entry is amended.
        self._said: tuple[str, str] | None = None
        self._jobs_tx, self._jobs_rx = trio.open_memory_channel[_Job](8)
        self._events: BrainEvents | None = None

    async def run(
        self, events: BrainEvents, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._events = events
        task_status.started()
        if self._greet:
            await self._say(events, self._responder.greeting(), reply=False)
        while True:
            answered = self._answered
            # An answered turn's audio is let go when no speech can join it any more,
            # also in a room whose client sends nothing (push to talk).
            deadline = math.inf if answered is None else answered.at + _JOIN_WITHIN_S
            job: _Job | None = None
            with trio.move_on_at(deadline):
                try:
                    job = await self._jobs_rx.receive()
                except trio.EndOfChannel:
                    return
            if job is None:
                if self._answered is answered:
                    self._answered = None
                continue
            match job:
                case Partial():
                    await self._partial(events, job)
                case Final():
                    await self._final(events, job)
                case Release(epoch=epoch, text=text):
                    if epoch == self._epoch and self._open:
                        await self._end(events, text)
                case Check():
                    await self._check(events, job)
                case Join():
                    await self._join(events, job)
                case TypedText(text=text):
                    self._answered = None  # a typed turn came between: speech is a new turn
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

    async def _final(self, events: BrainEvents, job: Final) -> None:
        """A pause in the turn (or its commit): transcribe, then end it or wait for more."""
        # The end of the pause is transcribed afresh, not taken from the early transcript:
        # an early clip's transcript of a short answer differs (a spoken booking went
        # from 4 of 4 callers to 2 of 4 when it was reused).
        try:
            text = await self._speech.transcribe(
                job.audio, language=self.options.language, prompt=self._hint_prompt()
            )
        except ProviderError as exc:
            if job.force or (not job.early and job.epoch == self._epoch and self._open):
                self._close_turn()
                await events.error(exc.code, exc.message)
            return
        if job.force:
            await self._end(events, text, at=job.at)
            return
        if job.epoch != self._epoch or not self._open:
            if text and self._open and not job.early:  # the user went on: what was heard so far
                await events.transcript(text, final=False)
            return
        wait = self._wait_after(text)
        if job.early:
            if wait > self._short_silence or not self._in_speech:
                return  # the VAD's end of speech decides
            # Complete: the turn ends now, a little before the VAD would have said so.
            await self._vad.wait_idle()  # the detector is changed below, not in a worker
            if job.epoch != self._epoch or not self._in_speech:
                return  # the user went on meanwhile (or the VAD ended it): as usual
            self._in_speech = False
            self._vad.detector.end_speech()
            await events.speech_stopped()
            await self._end(events, text)
            return
        if wait > self._short_silence:
            release = self._silence_from + wait
            if self._heard < release + self._min_speech:
                self._held = (job.epoch, release, text)
                if text:
                    await events.transcript(text, final=False)
                return
        await self._end(events, text)

    def _wait_after(self, text: str) -> int:
        """How much silence (16 kHz samples) ends a turn whose transcript is ``text``."""
        from ..speech.turns import ends_in_prompt_piece, reading

        if not text:
            return self._short_silence  # noise, a cough: nothing to wait for
        read = reading(text)
        if read == "unfinished":
            return self._max_silence
        more = self._short_silence + int(
            (self._max_silence - self._short_silence) * _UNCLEAR_WAIT_SHARE
        )
        if ends_in_prompt_piece(text, self._hint_prompt()):
            return more  # its end is the recognizer's guess, whatever a rule makes of it
        expected = self._step_expects(text)
        if expected or (expected is None and read == "complete"):
            return self._short_silence
        return more

    def _step_expects(self, text: str) -> bool | None:
        """Does a rule of the agent graph's current step take ``text``? None: no graph."""
        from ..agent.graph import Conversation
        from ..agent.vietnamese import Utterance as Said

        conversation = self._responder
        if not isinstance(conversation, Conversation):
            return None
        graph = conversation.graph
        node = conversation.node
        if node.final:
            node = graph.nodes[graph.start]  # the next turn starts the conversation again
        said = Said.of(text)
        try:
            return any(rule.when(conversation, said) for rule in (*node.rules, *graph.rules))
        except Exception:  # a matcher of the graph's own code: the turn still ends
            log.exception("an agent graph rule failed while reading a pause")
            return None

    async def _end(self, events: BrainEvents, text: str, *, at: float | None = None) -> None:
        """The turn is over (now, or at the client's commit ``at``): one final transcript
        and its reply (or nothing, for noise or a backchannel said over the agent)."""
        from ..speech.turns import is_backchannel

        over_agent, joined = self._over_agent, self._joined
        audio = self._utterance.audio().copy()  # heard again if the user goes on
        self._close_turn()
        if not text:
            return
        if over_agent:
            if is_backchannel(text):
                return  # "dạ", "vâng" over the agent: it keeps talking, no turn
            await events.barge_in()
        turn_ended = getattr(events, "turn_ended", None)
        if turn_ended is not None:  # the room times the reply's stages from these marks
            turn_ended(speech_ended_at=self._voiced_at, at=at)
        if joined:
            await events.transcript(text, final=True, joined=True)
        else:
            await events.transcript(text, final=True)
        checkpoint = getattr(self._responder, "checkpoint", None)
        answered = Answered(audio, trio.current_time(), checkpoint() if checkpoint else None)
        self._answered = answered  # until the reply is heard, more speech joins this turn
        # A graph conversation may confirm what a transcript makes it unsure of.
        respond = getattr(self._responder, "respond_heard", None)
        reply = await (respond or self._responder.respond)(text)
        answered.replied = bool(reply)
        await self._say(events, reply)

    def _close_turn(self) -> None:
        self._open = self._over_agent = self._joined = False
        self._held = None
        self._epoch += 1
        self._utterance.reset()

    async def _check(self, events: BrainEvents, job: Check) -> None:
        """Speech over the agent: barge in as soon as it is recognised as meant words."""
        from ..speech.turns import is_backchannel

        try:
            if job.turn_no != self._turn_no or not self._over_agent:
                return
            try:
                text = await self._speech.transcribe(job.audio, language=self.options.language)
            except ProviderError:
                return  # the turn's final decides
            if job.turn_no == self._turn_no and self._over_agent and text:
                if not is_backchannel(text):
                    self._over_agent = False
                    await events.barge_in()
        finally:
            self._checking = False

    async def _join(self, events: BrainEvents, job: Join) -> None:
        """The user went on before hearing the reply to their last turn: one turn.

        The conversation goes back to before that turn and the reply is dropped
        unheard; the turn's final transcript will be of both parts. Unless a tool ran
        in that turn (its effect is not undone): then its reply stands and the new
        speech is a turn of its own.
        """
        answered = job.answered
        rewind = getattr(self._responder, "rewind", None)
        rewound = False
        if answered.checkpoint is not None and callable(rewind):
            rewound = bool(rewind(answered.checkpoint))
        if not rewound:
            if self._open and self._turn_no == job.turn_no:
                rest = self._utterance.audio()[job.joined_samples :].copy()
                self._utterance.reset()
                self._utterance.append(rest)
                speaking = getattr(events, "agent_speaking", None)
                self._over_agent = bool(speaking and speaking())
            return
        self._joined = self._open and self._turn_no == job.turn_no
        if answered.replied:
            drop = getattr(events, "drop_reply", None)
            if drop is not None:
                await drop()

    def _hint_prompt(self) -> str | None:
        """What the conversation expects next, for Whisper (a responder may offer ``hints()``)."""
        from ..speech.asr import hint_prompt

        hints = getattr(self._responder, "hints", None)
        return hint_prompt(hints()) if callable(hints) else None

    async def _say(self, events: BrainEvents, text: str, *, reply: bool = True) -> None:
        if text:
            turn = await events.start_response(reply=reply)
            self._said = (turn.response_id, text)
            await turn.text_delta(text)
            await turn.finish()

    # ------------------------------------------------------------ room -> brain

    async def send_audio(self, pcm: bytes, *, rate: int = OUTPUT_SAMPLE_RATE) -> None:
        events = self._require_events()
        arrived = trio.current_time()
        if self._answered is not None and arrived - self._answered.at > _JOIN_WITHIN_S:
            self._answered = None  # too late to join: its audio is let go
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
        voiced = self._vad.detector.config.end_threshold
        if result.probabilities and max(result.probabilities) >= voiced:
            self._voiced_at = arrived
        appended = False
        for event in result.events:
            if event.kind == "speech_started":
                onset_at = arrived - (self._heard - event.sample) / _SAMPLE_RATE
                appended = await self._speech_started(events, event.sample, onset_at) or appended
            elif self._in_speech:
                self._in_speech = False
                self._silence_from = event.sample
                await events.speech_stopped()
                await self._jobs_tx.send(Final(self._utterance.audio().copy(), self._epoch))
        if self._open and not appended:
            self._utterance.append(samples)
        held = self._held
        if held is not None and not self._in_speech and self._heard >= held[1]:
            # At the deadline, unless speech may be beginning (the VAD confirms a start
            # only min_speech_ms into it): then once the VAD had time to confirm it.
            begins = self._vad.detector.config.start_threshold
            if self._heard >= held[1] + self._min_speech or all(
                p < begins for p in result.probabilities
            ):
                self._held = None
                await self._jobs_tx.send(Release(held[0], held[2]))
        if self._in_speech and self._early_epoch != self._epoch:
            silent = self._vad.detector.silence_ms
            if silent >= min(_EARLY_MS, self._short_silence / 2):
                self._early_epoch = self._epoch
                # Padded to the silence the VAD's end of speech would have: Whisper
                # hears the same clip either way (it reads trailing silence too).
                pad = max(0, self._short_silence - int(silent * _SAMPLE_RATE / 1000))
                audio = self._utterance.audio()
                audio = np.concatenate([audio, np.zeros(pad, dtype=np.float32)])
                self._offer(Final(audio, self._epoch, early=True))
        if self._in_speech:
            loud_now = bool(result.probabilities) and result.probabilities[-1] >= 0.5
            if self._over_agent and loud_now and not self._checking:
                # Only while the user is audibly speaking: Whisper makes words of a
                # short sound's trailing silence ("Cái gì?" of an eSpeak "ừ").
                spoken = (self._heard - self._onset) / _SAMPLE_RATE
                due = self._checked_at + _CHECK_EVERY_S if self._checked_at else _CHECK_FIRST_S
                if spoken >= due:
                    self._checked_at = spoken
                    check = Check(self._turn_no, self._utterance.audio().copy())
                    self._checking = self._offer(check)
            if self._utterance.partial_due() and self._utterance.seconds >= 2.0:
                self._offer(Partial(self._turn_no, self._utterance.take_partial()))

    async def _speech_started(self, events: BrainEvents, sample: int, onset_at: float) -> bool:
        """Speech began (at ``onset_at``, the clock); True when it opens a new turn (its
        audio, this frame's too, is in)."""
        self._in_speech = True
        self._epoch += 1
        self._held = None
        if self._open:
            await events.speech_started()  # the user goes on after a pause: the same turn
            return False
        answered, self._answered = self._answered, None
        self._open = True
        self._turn_no += 1
        self._checked_at = 0.0
        self._onset = sample
        self._utterance.reset()
        if answered is not None and self._may_join(events, answered, onset_at):
            # The user goes on before the reply was heard: the ended turn and this speech
            # are heard as one (the job drops the reply and rewinds the conversation).
            self._utterance.append(answered.audio)
            self._utterance.append(np.zeros(int(_JOIN_GAP_S * _SAMPLE_RATE), np.float32))
            joined = len(self._utterance.audio())
            self._utterance.append(self._since(sample - int(_PREROLL_S * _SAMPLE_RATE)))
            self._over_agent = False
            await events.speech_started()
            await self._jobs_tx.send(Join(answered, self._turn_no, joined))
            return True
        self._utterance.append(self._since(sample - int(_PREROLL_S * _SAMPLE_RATE)))
        await events.speech_started()
        speaking = getattr(events, "agent_speaking", None)
        if speaking is None:
            await events.barge_in()  # a room that cannot say: any speech interrupts
        else:
            self._over_agent = bool(speaking())
        return True

    @staticmethod
    def _may_join(events: BrainEvents, answered: Answered, onset_at: float) -> bool:
        """Speech from ``onset_at`` joins the ``answered`` turn: soon enough after its end,
        and before its reply could be heard (a room that cannot say: never)."""
        heard_by = getattr(events, "reply_heard_by", None)
        if heard_by is None or onset_at - answered.at > _JOIN_WITHIN_S:
            return False
        return not (answered.replied and heard_by(onset_at - _REACTION_S))

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

    def _offer(self, job: Partial | Check | Final) -> bool:
        try:
            self._jobs_tx.send_nowait(job)
        except trio.WouldBlock:
            return False  # skipped when the decider is behind
        return True

    async def commit_audio(self) -> None:
        self._require_events()
        if self._open:
            # The client says the turn is over: it ends, whatever it reads like.
            self._in_speech = False
            self._held = None
            self._epoch += 1
            audio = self._utterance.audio().copy()
            await self._jobs_tx.send(Final(audio, self._epoch, True, at=trio.current_time()))

    async def send_text(self, text: str) -> None:
        await self._jobs_tx.send(TypedText(text))

    async def cancel_response(self, response_id: str, *, played_ms: int) -> None:
        """A reply was cut: nothing upstream to stop, but the conversation's history keeps
        only the words the user heard of it (the room says which: ``text_heard``)."""
        heard = getattr(self._events, "text_heard", None)
        amend = getattr(self._responder, "amend_reply", None)
        said = self._said
        if heard is not None and amend is not None and said and said[0] == response_id:
            # That reply's entry, not the last one: the next may be decided already
            # (a typed turn while it was spoken), waiting for the voice.
            amend(heard(played_ms), said[1])

    def configure(self, options: SessionOptions) -> None:
        self.options = options
        self._utterance.language = options.language

    def _require_events(self) -> BrainEvents:
        if self._events is None:
            raise RuntimeError("LocalBrain used before run() started")
        return self._events
