"""Turn-taking of the embedded brain on eSpeak speech with pauses inside sentences.

Each sentence is said by eSpeak NG (``vi``) with a pause of ``--pause-ms`` inside it
(eSpeak's own SSML ``<break>``: after "và", "nhưng", "thì", "là" or a comma) and
fed to a LocalBrain at real-time pace, 100 ms frames, on the shared models, with
the demo receptionist's first step deciding. Per sentence: how many turns it
became (1 = kept whole). Then the short complete answers: how much silence after
the speech ended went by before the turn was decided. Then barge-in: the same
sentences said over a speaking agent, and the time from the speech's onset to
the brain's barge-in (real time, as fed).

    .venv/bin/python bench/turn_pauses.py [--pause-ms 800] [--max-end-silence-ms 1500]

Run it with another checkout first on PYTHONPATH to measure that one (a brain
without ``max_end_silence_ms`` ends every turn at VAD_END_SILENCE_MS).
"""

from __future__ import annotations

import argparse
import inspect
import io
import subprocess
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import trio

from voice_trio.agent.graph import Conversation
from voice_trio.config import Settings
from voice_trio.demo import build_receptionist
from voice_trio.providers import SessionOptions
from voice_trio.providers.local import LocalBrain, LocalSpeech

RATE = 16_000
PAUSED = [
    ("Tôi muốn đặt lịch hẹn và", "đổi số điện thoại của tôi."),
    ("Tôi muốn đến khám nhưng", "tôi bận vào buổi sáng."),
    ("Tên tôi là", "Nguyễn Văn An."),
    ("Tôi bị đau đầu nên", "muốn gặp bác sĩ."),
    ("Nếu thứ hai bận thì", "thứ ba cũng được."),
    ("Xin chào,", "tôi muốn đặt lịch hẹn."),
    ("Vào thứ hai tuần sau,", "lúc mười giờ sáng."),
    ("Tôi muốn hỏi giờ mở cửa hoặc", "số điện thoại của phòng khám."),
    ("Cho tôi hỏi,", "phòng khám có mở cửa vào chủ nhật không?"),
    ("Số điện thoại của tôi là", "không chín tám bảy."),
]
SHORT = ["Xin chào.", "Cảm ơn bạn.", "Tạm biệt.", "Tôi muốn đặt lịch hẹn."]


def espeak(ssml: str) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "-v", "vi", "-m", "--stdout", ssml], capture_output=True, check=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        ints = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return soxr.resample(ints.astype(np.float32) / 32768, rate, RATE).astype(np.float32)


class Turns(Conversation):
    def __init__(self, graph: Any, *, over_agent: bool = False) -> None:
        super().__init__(graph, session_id="bench")
        self.asked: list[tuple[float, str]] = []
        #: The final transcripts that stand (a joined one replaces the one it continues).
        self.finals: list[str] = []
        self.barged: list[float] = []
        self.over_agent = over_agent

    async def respond(self, text: str) -> str:
        self.asked.append((time.perf_counter(), text))
        return ""

    respond_heard = respond  # what the brain calls for a spoken turn (recognition hints)

    async def speech_started(self) -> None:
        pass

    async def speech_stopped(self) -> None:
        pass

    async def transcript(self, text: str, *, final: bool, joined: bool = False) -> None:
        if final and joined and self.finals:
            self.finals[-1] = text
        elif final:
            self.finals.append(text)

    def reply_heard_by(self, at: float) -> bool:
        return False  # nothing is said: speech that goes on may join an ended turn

    async def drop_reply(self) -> None:
        pass

    async def barge_in(self) -> None:
        self.barged.append(time.perf_counter())

    def agent_speaking(self) -> bool:
        return self.over_agent

    async def start_response(self, *, reply: bool = True) -> Any:
        raise AssertionError("nothing is said")

    async def error(self, code: str, message: str, *, fatal: bool = False) -> None:
        print("error", code, message)


async def run_one(
    speech: LocalSpeech, audio: np.ndarray, max_end: int, db: Path, *, over_agent: bool = False
) -> tuple[Turns, float]:
    turns = Turns(build_receptionist(db), over_agent=over_agent)
    kwargs: dict[str, Any] = {"partial_interval_s": 60.0}
    if "max_end_silence_ms" in inspect.signature(LocalBrain).parameters:
        kwargs["max_end_silence_ms"] = max_end
    brain = LocalBrain(SessionOptions(language="vi"), speech=speech, responder=turns, **kwargs)
    data = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    async with trio.open_nursery() as nursery:
        await nursery.start(brain.run, turns)
        start = time.perf_counter()
        t0 = trio.current_time()
        for n, i in enumerate(range(0, len(data), 3200)):
            await trio.sleep_until(t0 + n * 0.1)
            await brain.send_audio(data[i : i + 3200], rate=RATE)
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    return turns, start


def onset_s(audio: np.ndarray) -> float:
    return float(np.flatnonzero(np.abs(audio) > 0.01)[0] / RATE)


def end_s(audio: np.ndarray) -> float:
    return float(np.flatnonzero(np.abs(audio) > 0.01)[-1] / RATE)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause-ms", type=int, default=800)
    parser.add_argument("--max-end-silence-ms", type=int, default=1500)
    args = parser.parse_args()
    speech = LocalSpeech.load_sync(Settings())
    db = Path(tempfile.mkdtemp()) / "bench.sqlite3"
    z = np.zeros(RATE // 2, np.float32)
    async with trio.open_nursery() as nursery:
        await nursery.start(speech.run)
        whole = 0
        for first, second in PAUSED:
            audio = np.concatenate(
                [z, espeak(f'{first} <break time="{args.pause_ms}ms"/> {second}'), z, z, z, z, z]
            )
            turns, _ = await run_one(speech, audio, args.max_end_silence_ms, db)
            whole += len(turns.finals) == 1
            joined = len(turns.asked) - len(turns.finals)
            print(
                f"{len(turns.finals)} turn(s){f' ({joined} joined)' if joined else ''}: "
                f"{first} | {second} -> {turns.finals}"
            )
        print(f"pause {args.pause_ms} ms: {whole} of {len(PAUSED)} sentences kept whole")
        delays = []
        for text in SHORT:
            audio = np.concatenate([z, espeak(text), z, z, z, z])
            turns, start = await run_one(speech, audio, args.max_end_silence_ms, db)
            if turns.asked:
                delays.append(turns.asked[0][0] - start - end_s(audio))
            print(f"{text!r}: decided {delays[-1] * 1000:.0f} ms after its end: {turns.asked}")
        print(f"short answers: speech end -> decided, median {np.median(delays) * 1000:.0f} ms")
        cuts = []
        for first, second in PAUSED:
            audio = np.concatenate([z, espeak(f"{first} {second}"), z, z, z])
            turns, start = await run_one(
                speech, audio, args.max_end_silence_ms, db, over_agent=True
            )
            if turns.barged:
                cuts.append(turns.barged[0] - start - onset_s(audio))
        print(
            f"barge-in: {len(cuts)} of {len(PAUSED)}; onset -> barge-in median "
            f"{np.median(cuts) * 1000:.0f} ms, max {max(cuts) * 1000:.0f} ms"
        )
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
