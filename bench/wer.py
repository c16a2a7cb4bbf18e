"""Word error rate of the embedded pipeline on sentences with pauses inside them.

Synthetic speech, not human recordings: each sentence is said by eSpeak NG's
``vi`` voice with pauses of 400-900 ms inserted where a speaker pauses (after a
comma or a continuation word such as "và", "nhưng", "thì", "là", "nên"), as
eSpeak's own SSML ``<break>``. It is fed at real-time pace, in 100 ms frames,
to a real LocalBrain (the shared models, the settings' VAD and pause bounds) whose
responder is the demo receptionist on its first step; the pipeline's transcript
of a sentence is its final transcripts joined (a split sentence is two turns, each
recognised alone). Against it: Whisper base on the whole clip, once (the
recognizer as the pipeline has it, without a prompt; and with the first step's
hints as the prompt, as the pipeline's recognitions have them).

Text is compared as words: NFC, lower case, punctuation out, numerals as words
(up to three digits as a number, "10" = "mười"; longer runs digit by digit, as
codes and phone numbers are read); WER = word edit distance / reference words,
summed over the sentences. eSpeak's Vietnamese is
robotic and Whisper base hears it far worse than people: the absolute figures
are not those of human speech; the gap between the columns is what this
measures (what splitting a sentence at a pause costs).

    .venv/bin/python bench/wer.py [--limit N] [--seed 15] [--out results/wer.json]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio
from turn_pauses import Turns, espeak  # the same speech and the same fake room (bench/)

from voice_trio.agent.vietnamese import say_number
from voice_trio.config import Settings
from voice_trio.demo import build_receptionist
from voice_trio.providers import SessionOptions
from voice_trio.providers.local import LocalBrain, LocalSpeech
from voice_trio.speech.asr import hint_prompt
from voice_trio.speech.turns import words

RATE = 16_000
FRAME = 3200  # bytes: 100 ms of 16 kHz PCM16
# "|" marks a pause: the receptionist's domain first, then everyday speech.
SENTENCES = [
    "Xin chào, | tôi muốn đặt lịch hẹn.",
    "Tôi muốn đặt lịch hẹn và | đổi số điện thoại của tôi.",
    "Tên tôi là | Trần Thị Mai.",
    "Tôi muốn đặt lịch vào thứ hai tuần sau, | lúc chín giờ sáng.",
    "Tôi bị đau đầu mấy hôm nay nên | muốn gặp bác sĩ.",
    "Nếu thứ ba bận thì | thứ tư cũng được.",
    "Cho tôi hỏi, | phòng khám có mở cửa vào chủ nhật không?",
    "Tôi muốn xem lại lịch hẹn của tôi, | mã là bốn tám hai chín một ba.",
    "Tôi muốn hủy lịch hẹn vì | tuần sau tôi phải đi công tác.",
    "Số điện thoại của tôi là | không chín một hai ba bốn năm sáu.",
    "Vâng, | đúng rồi.",
    "Không, | tôi muốn đổi sang buổi chiều.",
    "Tôi muốn khám răng hoặc | khám mắt cũng được.",
    "Bác sĩ ơi, | con tôi bị sốt từ tối qua.",
    "Phòng khám mở cửa lúc mấy giờ | và đóng cửa lúc mấy giờ?",
    "Tôi đã đặt lịch hôm qua nhưng | quên mất mã lịch hẹn.",
    "Cho tôi đặt lịch lúc hai giờ chiều, | ngày mai.",
    "Tôi tên là Lê Văn Hùng, | tôi muốn khám tổng quát.",
    "Hôm nay là thứ mấy | và bây giờ là mấy giờ?",
    "Cảm ơn bạn nhiều, | hẹn gặp lại.",
    "Tôi muốn đặt lịch cho mẹ tôi, | bà tên là Phạm Thị Lan, | vào sáng thứ sáu.",
    "Xin lỗi, | tôi nói lại, | tên tôi là Đỗ Minh Tuấn.",
    "Hôm nay trời đẹp quá nên | tôi muốn đi dạo.",
    "Tôi thích uống cà phê sữa đá, | nhưng vợ tôi thích trà.",
    "Chúng tôi đi Đà Nẵng vào mùa hè và | ở đó một tuần.",
    "Khi tôi về đến nhà thì | trời đã tối.",
    "Anh ấy học tiếng Anh để | đi làm ở nước ngoài.",
    "Mẹ tôi nấu phở rất ngon, | cả nhà ai cũng thích.",
    "Tôi không đi được vì | xe của tôi bị hỏng.",
    "Cuốn sách này là của | thầy giáo tôi.",
    "Thành phố Hồ Chí Minh rất đông người, | nhất là vào giờ tan tầm.",
    "Nếu mai trời mưa thì | chúng ta ở nhà xem phim.",
    "Em gái tôi là | sinh viên năm thứ hai.",
    "Tôi muốn mua một cái áo | và một đôi giày.",
    "Buổi sáng tôi thường chạy bộ, | sau đó ăn sáng với gia đình.",
    "Ông bà tôi sống ở quê, | cách Hà Nội khoảng một trăm cây số.",
    "Con mèo nằm ngủ trên ghế | còn con chó chạy ngoài sân.",
    "Tôi sẽ gọi lại cho bạn sau, | bây giờ tôi đang bận.",
]


def normal(text: str) -> list[str]:
    """The words compared: :func:`words`, with numerals written out."""
    out: list[str] = []
    for word in words(text):
        if not word.isdigit():
            out.append(word)
        elif len(word) <= 3 and not (len(word) > 1 and word[0] == "0"):
            out.extend(say_number(int(word)).split())
        else:
            out.extend(say_number(int(digit)) for digit in word)
    return out


def edits(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions, insertions, deletions)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


async def pipeline(
    speech: LocalSpeech, settings: Settings, audio: np.ndarray, db: Path
) -> list[str]:
    heard = Turns(build_receptionist(db))  # its final transcripts that stand
    brain = LocalBrain(
        SessionOptions(language="vi"),
        speech=speech,
        responder=heard,
        end_silence_ms=settings.vad_end_silence_ms,
        max_end_silence_ms=settings.vad_max_end_silence_ms,
        partial_interval_s=settings.asr_partial_interval_s,
    )
    data = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    async with trio.open_nursery() as nursery:
        await nursery.start(brain.run, heard)
        t0 = trio.current_time()
        for n, i in enumerate(range(0, len(data), FRAME)):
            await trio.sleep_until(t0 + n * 0.1)
            await brain.send_audio(data[i : i + FRAME], rate=RATE)
        # The tail is longer than the longest pause: wait for the last recognitions.
        with trio.move_on_after(10):
            while speech.asr_limiter.statistics().borrowed_tokens or (  # noqa: ASYNC110
                brain._jobs_rx.statistics().current_buffer_used
            ):
                await trio.sleep(0.1)  # polled: recognitions run in worker threads
            await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    return heard.finals


def whisper(speech: LocalSpeech, clip: np.ndarray, prompt: str | None) -> str:
    """Whisper base once on the whole clip (no prompt: the recognizer's own options)."""
    return speech.recognizer.transcribe_sync(clip, language="vi", prompt=prompt)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N sentences")
    parser.add_argument("--seed", type=int, default=15, help="seed of the pause lengths")
    parser.add_argument("--pause-min-ms", type=int, default=400)
    parser.add_argument("--pause-max-ms", type=int, default=900)
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = parser.parse_args()
    settings = Settings()
    speech = LocalSpeech.load_sync(settings)
    db = Path(tempfile.mkdtemp()) / "wer.sqlite3"
    prompt = hint_prompt(Turns(build_receptionist(db)).hints())
    rng = random.Random(args.seed)
    sentences = SENTENCES[: args.limit] if args.limit else SENTENCES
    lead, tail = np.zeros(RATE // 2, np.float32), np.zeros(int(2.5 * RATE), np.float32)
    rows: list[dict[str, Any]] = []
    totals = {"ref": 0, "pipeline": 0, "whole": 0, "whole_prompted": 0}
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(speech.run)
        for sentence in sentences:
            parts = [part.strip() for part in sentence.split("|")]
            pauses = [
                rng.randrange(args.pause_min_ms, args.pause_max_ms + 1, 50) for _ in parts[1:]
            ]
            breaks = zip(pauses, parts[1:], strict=True)
            ssml = parts[0] + "".join(f' <break time="{ms}ms"/> {part}' for ms, part in breaks)
            clip = espeak(ssml)
            finals = await pipeline(speech, settings, np.concatenate([lead, clip, tail]), db)
            whole = await trio.to_thread.run_sync(whisper, speech, clip, None)
            whole_prompted = await trio.to_thread.run_sync(whisper, speech, clip, prompt)
            ref = normal(" ".join(parts))
            row: dict[str, Any] = {
                "reference": " ".join(parts),
                "pauses_ms": pauses,
                "turns": len(finals),
                "pipeline": " | ".join(finals),
                "whole": whole,
                "whole_prompted": whole_prompted,
                "ref_words": len(ref),
                "pipeline_edits": edits(ref, normal(" ".join(finals))),
                "whole_edits": edits(ref, normal(whole)),
                "whole_prompted_edits": edits(ref, normal(whole_prompted)),
            }
            rows.append(row)
            totals["ref"] += len(ref)
            for key in ("pipeline", "whole", "whole_prompted"):
                totals[key] += row[f"{key}_edits"]
            print(
                f"{len(finals)} turn(s) pauses {pauses} ms | WER pipeline "
                f"{row['pipeline_edits'] / len(ref):.0%} whole {row['whole_edits'] / len(ref):.0%}"
                f" | {row['reference']}\n    pipeline: {row['pipeline']}\n    whole:    {whole}",
                flush=True,
            )
        nursery.cancel_scope.cancel()
    split = sum(row["turns"] > 1 for row in rows)
    summary: dict[str, Any] = {
        "sentences": len(rows),
        "reference_words": totals["ref"],
        "split": split,
        "unheard": sum(row["turns"] == 0 for row in rows),
        "wer_pipeline": totals["pipeline"] / totals["ref"],
        "wer_whole": totals["whole"] / totals["ref"],
        "wer_whole_prompted": totals["whole_prompted"] / totals["ref"],
        "pause_ms": [args.pause_min_ms, args.pause_max_ms],
        "seed": args.seed,
        "seconds": time.perf_counter() - started,
    }
    print(
        f"{len(rows)} sentences, {totals['ref']} words; split into more than one turn: {split}\n"
        f"WER pipeline {summary['wer_pipeline']:.1%}, Whisper base on the whole clip "
        f"{summary['wer_whole']:.1%} (with the first step's hints as prompt "
        f"{summary['wer_whole_prompted']:.1%})"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "sentences": rows}, indent=1) + "\n")


if __name__ == "__main__":
    trio.run(main)
