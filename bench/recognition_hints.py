"""Recognition hints: what the graph understands of short spoken answers, with and without
the hints its current node gives Whisper, and what hints do to free speech.

Every clip is synthesised by eSpeak NG (``vi``) at two speeds, resampled to 16 kHz with
silence around it as a room hands it over, and transcribed by the server's own
recognizer (Whisper base, the server's decoding options). For each short answer a fresh
receptionist conversation is walked (by typed turns) to the question the answer
answers; the transcript is then handled by the graph and the outcome read off its
slots: **right** (the value said), **asked** (the graph asked to confirm or to say it
again: nothing stored), **confirm** (it read back the value said, for a yes),
**confirm?** (it read back another value, for the caller's "no"), **wrong** (a value
that was not said was kept: for a name, day or hour still read back before booking;
for a yes/no, booked or not against the caller's word). Free
speech: the word error rate of sentences outside the booking's vocabulary, with no
hints and with each node's hints. Noise: clips with no speech, with each node's hints:
how many become an answer.

    .venv/bin/python bench/recognition_hints.py [--speeds 150,190] [--out FILE]

Takes a few minutes on 2 cores (a few hundred Whisper calls).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trio

from voice_trio.agent import Conversation, Graph
from voice_trio.agent.vietnamese import name_key, say_number
from voice_trio.config import Settings
from voice_trio.demo import VIETNAM, build_receptionist
from voice_trio.providers.local import LocalSpeech
from voice_trio.speech.asr import hint_prompt
from voice_trio.speech.tts import EspeakOptions, EspeakTts
from voice_trio.speech.vad import Resampler

# Tuesday 25 November 2025, 10:30 in Hanoi (as the demo's tests).
NOW = dt.datetime(2025, 11, 25, 10, 30, tzinfo=VIETNAM)
TODAY = NOW.date()

# The typed turns that bring a fresh conversation to each question.
TO_NAME = ("Tôi muốn đặt lịch hẹn",)
TO_DAY = (*TO_NAME, "Tên tôi là Nguyễn Văn An")
TO_TIME = (*TO_DAY, "thứ sáu")
TO_CONFIRM = (*TO_TIME, "mười giờ sáng")

#: (turn type, what is said, the turns before it, the value the graph should hold).
ANSWERS: list[tuple[str, str, tuple[str, ...], Any]] = [
    ("name", "Tôi tên là Lan", TO_NAME, "Lan"),
    ("name", "Tên tôi là Nguyễn Văn An", TO_NAME, "Nguyễn Văn An"),
    ("name", "Tôi là Minh", TO_NAME, "Minh"),
    ("name", "Trần Thị Hoa", TO_NAME, "Trần Thị Hoa"),
    ("name", "Tôi tên là Hùng", TO_NAME, "Hùng"),
    ("name", "Lê Văn Nam", TO_NAME, "Lê Văn Nam"),
    ("name", "Phạm Thu Hà", TO_NAME, "Phạm Thu Hà"),
    ("day", "Thứ hai", TO_DAY, dt.date(2025, 12, 1)),
    ("day", "Thứ ba tuần sau", TO_DAY, dt.date(2025, 12, 2)),
    ("day", "Ngày mai", TO_DAY, dt.date(2025, 11, 26)),
    ("day", "Thứ sáu", TO_DAY, dt.date(2025, 11, 28)),
    ("day", "Thứ bảy", TO_DAY, dt.date(2025, 11, 29)),
    ("day", "Ngày kia", TO_DAY, dt.date(2025, 11, 27)),
    ("day", "Vào thứ năm", TO_DAY, dt.date(2025, 11, 27)),
    ("time", "Mười giờ sáng", TO_TIME, dt.time(10, 0)),
    ("time", "Lúc chín giờ rưỡi", TO_TIME, dt.time(9, 30)),
    ("time", "Hai giờ chiều", TO_TIME, dt.time(14, 0)),
    ("time", "Tám giờ sáng", TO_TIME, dt.time(8, 0)),
    ("time", "Ba giờ rưỡi chiều", TO_TIME, dt.time(15, 30)),
    ("time", "Lúc mười một giờ", TO_TIME, dt.time(11, 0)),
    ("time", "Bốn giờ chiều", TO_TIME, dt.time(16, 0)),
    ("yes/no", "Vâng, đúng rồi", TO_CONFIRM, True),
    ("yes/no", "Đúng rồi", TO_CONFIRM, True),
    ("yes/no", "Có", TO_CONFIRM, True),
    ("yes/no", "Vâng", TO_CONFIRM, True),
    ("yes/no", "Không", TO_CONFIRM, False),
    ("yes/no", "Không phải", TO_CONFIRM, False),
    ("yes/no", "Sai rồi", TO_CONFIRM, False),
]

#: Free speech: nothing here is an answer to any question of the receptionist.
FREE_SPEECH = [
    "Hôm nay trời đẹp quá, tôi muốn đi dạo ở công viên.",
    "Con mèo nhà tôi rất thích ăn cá.",
    "Tôi làm việc ở một công ty phần mềm tại Hà Nội.",
    "Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ.",
    "Cảm ơn bạn, hẹn gặp lại vào ngày mai.",
    "Bác sĩ ơi, dạo này tôi hay bị đau đầu và mất ngủ.",
    "Phòng khám có chỗ để xe máy không ạ?",
    "Mẹ tôi năm nay bảy mươi tuổi và vẫn còn khỏe.",
]

Outcome = str  # "right" | "asked" | "wrong"


class FixedClock:
    def __call__(self) -> dt.datetime:
        return NOW


def words_of(text: str) -> list[str]:
    """Lower case, no punctuation, numerals in words (Whisper writes either)."""
    text = unicodedata.normalize("NFC", text).lower()
    out: list[str] = []
    for token in re.findall(r"\w+", text):
        if token.isdigit() and int(token) < 1000:
            out += say_number(int(token)).split()
        else:
            out.append(token)
    return out


def wer(reference: str, heard: str) -> tuple[int, int]:
    """(word edits, reference words)."""
    ref, hyp = words_of(reference), words_of(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


async def walk(graph: Graph, turns: Sequence[str], n: int) -> Conversation:
    conversation = graph.conversation(session_id=f"bench-{n}")
    for text in turns:
        await conversation.handle_transcript(text)
    return conversation


async def outcome(conversation: Conversation, kind: str, heard: str, want: Any) -> Outcome:
    """What the graph made of ``heard`` at the question of ``kind``."""
    reply = await conversation.handle_transcript(heard, heard=True)
    slots = conversation.slots
    held = slots.get("unsure")
    if held is not None and held[0] == conversation.turns:  # asked to confirm a value
        value = held[2]
        if want is None:
            return "confirm"
        same = name_key(value) == name_key(want) if kind == "name" else value == want
        return "confirm" if same else "confirm?"
    if kind == "yes/no":
        booked = any(c.name == "book_appointment" and c.ok for c in reply.tool_calls)
        if booked:
            return "right" if want else "wrong"
        if reply.node == "booking":  # back to change something: a "no"
            return "wrong" if want else "right"
        return "asked"
    slot = {"name": "name", "day": "day", "time": "time"}[kind]
    got = slots.get(slot)
    if got is None:
        return "asked"
    if want is None:
        return "wrong"
    if kind == "name":
        return "right" if name_key(got) == name_key(want) else "wrong"
    return "right" if got == want else "wrong"


async def clip(tts: EspeakTts, text: str, speed: int) -> np.ndarray:
    pcm = await tts.synthesize(text, options=EspeakOptions(speed_wpm=speed))
    resampler = Resampler()
    return np.concatenate(
        [
            resampler.process(bytes(int(24_000 * 0.3) * 2)),
            resampler.process(pcm),
            resampler.process(bytes(int(24_000 * 0.4) * 2), last=True),
        ]
    )


def noise_clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(16_000) / 16_000
    return {
        "white noise 1 s": (rng.standard_normal(16_000) * 0.05).astype(np.float32),
        "hum 1 s": (0.1 * np.sin(2 * np.pi * 120 * t)).astype(np.float32),
        "breath 0.6 s": (rng.standard_normal(9_600) * np.hanning(9_600) * 0.08).astype(np.float32),
        "click + silence": np.concatenate([np.ones(80) * 0.5, np.zeros(12_000)]).astype(np.float32),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    speech = await LocalSpeech.load(settings)
    recognizer = speech.recognizer
    tts = EspeakTts()
    graph = build_receptionist(args.db, clock=FixedClock())
    speeds = [int(s) for s in args.speeds.split(",")]

    async def hear(audio: np.ndarray, prompt: str | None) -> str:
        return await trio.to_thread.run_sync(
            lambda: recognizer.transcribe_sync(audio, language="vi", prompt=prompt)
        )

    started = time.perf_counter()
    report: dict[str, Any] = {"speeds": speeds, "answers": [], "free": [], "noise": []}
    tally: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    n = 0
    for kind, text, before, want in ANSWERS:
        for speed in speeds:
            audio = await clip(tts, text, speed)
            probe = await walk(graph, before, n := n + 1)
            prompt = hint_prompt(probe.hints())
            for variant, p in (("none", None), ("hints", prompt)):
                heard = await hear(audio, p)
                got = await outcome(await walk(graph, before, n := n + 1), kind, heard, want)
                tally[(kind, variant)][got] += 1
                report["answers"].append(
                    {
                        "kind": kind,
                        "said": text,
                        "speed": speed,
                        "variant": variant,
                        "heard": heard,
                        "outcome": got,
                    }  # fmt: skip
                )
                print(f"{kind:7} {speed} {variant:5} {got:5} {text!r} -> {heard!r}", flush=True)
    # Every hint set the receptionist gives, for free speech and noise.
    prompts: dict[str, str | None] = {"none": None}
    for label, before in (("main", ()), ("name", TO_NAME), ("day", TO_DAY), ("time", TO_TIME),
                          ("yes/no", TO_CONFIRM)):  # fmt: skip
        prompts[label] = hint_prompt((await walk(graph, before, n := n + 1)).hints())
    free: dict[str, list[int]] = {label: [0, 0] for label in prompts}
    for text in FREE_SPEECH:
        for speed in speeds:
            audio = await clip(tts, text, speed)
            for label, prompt in prompts.items():
                heard = await hear(audio, prompt)
                edits, words = wer(text, heard)
                free[label][0] += edits
                free[label][1] += words
                report["free"].append(
                    {"said": text, "speed": speed, "hints": label, "heard": heard, "edits": edits}
                )
                print(f"free {speed} {label:6} {edits:2}/{words:2} {heard!r}", flush=True)
    false_answers: Counter[str] = Counter()
    for name, audio in noise_clips().items():
        for label, before in (("name", TO_NAME), ("day", TO_DAY), ("time", TO_TIME),
                              ("yes/no", TO_CONFIRM)):  # fmt: skip
            probe = await walk(graph, before, n := n + 1)
            for variant, p in (("none", None), ("hints", hint_prompt(probe.hints()))):
                heard = await hear(audio, p)
                got = "asked"
                if heard.strip():
                    got = await outcome(await walk(graph, before, n := n + 1), label, heard, None)
                # Nothing was said: a value kept, or a booking made, is accepted noise.
                accepted = got == "wrong"
                false_answers[variant] += accepted
                report["noise"].append(
                    {
                        "clip": name,
                        "question": label,
                        "variant": variant,
                        "heard": heard,
                        "accepted": accepted,
                    }  # fmt: skip
                )
                print(f"noise {name:16} {label:6} {variant:5} {heard!r} accepted={accepted}")
    report["seconds"] = round(time.perf_counter() - started, 1)
    columns = ("right", "confirm", "confirm?", "asked", "wrong")
    print("\n| turn type | clips | " + " | ".join(f"{c} (none / hints)" for c in columns) + " |")
    print("| --- | --- |" + " --- |" * len(columns))
    summary: dict[str, Any] = {}
    kinds = list(dict.fromkeys(k for k, *_ in ANSWERS))
    for kind in [*kinds, "all"]:
        group = kinds if kind == "all" else [kind]
        a = sum((tally[(k, "none")] for k in group), Counter())
        b = sum((tally[(k, "hints")] for k in group), Counter())
        summary[kind] = {"none": dict(a), "hints": dict(b), "clips": sum(a.values())}
        cells = " | ".join(f"{a[c]} / {b[c]}" for c in columns)
        print(f"| {kind} | {sum(a.values())} | {cells} |")
    print("\nfree speech WER (word edits / reference words):")
    for label, (edits, words) in free.items():
        print(f"  {label:7} {edits}/{words} = {edits / words:.1%}")
        summary[f"wer {label}"] = round(edits / words, 4)
    print(
        f"noise clips accepted as an answer: none {false_answers['none']}, "
        f"hints {false_answers['hints']} (of {len(noise_clips()) * 4} each)"
    )
    summary["noise accepted"] = dict(false_answers)
    report["summary"] = summary
    print(f"{report['seconds']} s")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeds", default="150,190", help="eSpeak NG words per minute")
    parser.add_argument("--db", default="/tmp/voice-trio-bench-hints.sqlite3")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args()
    result = trio.run(main, args)
    if args.out:
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1, default=str))
    sys.exit(0)
