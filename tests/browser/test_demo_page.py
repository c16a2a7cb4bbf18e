"""The demo page end to end: headless Chromium, a fake microphone, a real server.

Each test serves the embedded offline brain (server VAD, Whisper base, the
Vietnamese receptionist, eSpeak NG) in-process on 127.0.0.1:0 and opens the page
(static/) in Chromium with a fresh profile. The microphone is a WAV file of a
Vietnamese sentence synthesised with eSpeak NG, with silence around it. What is
asserted is what a user sees and hears: the transcript on the page, the page's
player figures (``voiceTrio.figures()``) and the socket traffic of the page.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from voice_trio.demo import build_receptionist
from voice_trio.speech.tts import EspeakTts

from ..support import RunningServer, running_server
from .demo_page import browser_missing, open_demo_page, write_mic_wav


@pytest.fixture(autouse=True)
def _browser_is_installed() -> None:
    # scripts/test.sh installs Chromium and Playwright: a missing one is a failure, not a skip.
    missing = browser_missing()
    if missing is not None:
        pytest.fail(missing)


SENTENCE = "Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ."
CHUNK_MS = 200  # WS_TTS_CHUNK_BYTES (9600) of 24 kHz PCM16: one assistant audio frame
LIMIT_S = 90  # per test; a run takes ~5-20 s


@asynccontextmanager
async def receptionist(local_speech: Any, db: Path, **fields: Any) -> AsyncIterator[RunningServer]:
    """A server with the local brain and the receptionist graph, as `voice-trio serve`."""
    graph = build_receptionist(db)
    async with running_server(
        voice_brain="local", speech=local_speech, agent=graph, **fields
    ) as server:
        yield server


async def mic_file(tmp_path: Path, *, before_s: float, after_s: float = 40.0) -> Path:
    """The fake microphone: silence, the sentence, then silence for longer than the test
    lasts (Chromium loops the file)."""
    speech = await EspeakTts().synthesize(SENTENCE)
    return write_mic_wav(tmp_path / "mic.wav", speech, before_s=before_s, after_s=after_s)


def ids(event: dict[str, Any]) -> dict[str, Any]:
    """The ``response_id`` of a response's event, to match its other events."""
    return {"response_id": event["response_id"]}


# The live panel's stage rows, in Vietnamese (the page's default), in order.
STAGE_LABELS_VI = [
    ("end_of_turn", "Chờ hết lượt nói"),
    ("asr", "Nhận dạng (tới câu chữ cuối)"),
    ("brain", "Trợ lý trả lời (tới chữ đầu tiên)"),
    ("tts", "Tổng hợp giọng (tới âm thanh đầu)"),
    ("total", "Tổng: từ lúc ngừng nói tới âm thanh đầu"),
]

# The stage rows on the panel once they are those of the response ``id``.
STAGE_PANEL_JS = """(id) => {
  const dl = document.querySelector('#stage-metrics');
  if (dl.dataset.responseId !== id) return null;
  const cells = [...dl.children].map((el) => el.textContent);
  const rows = [];
  for (let i = 0; i < cells.length; i += 2) rows.push([cells[i], cells[i + 1]]);
  return { rows, empty_hidden: document.querySelector('#stage-metrics-empty').hidden };
}"""


async def stage_panel_shows(page: Any, done: dict[str, Any]) -> dict[str, Any]:
    """The live panel shows the stages of ``done`` (a reply's response.done), as sent:
    five rows in order, labelled in Vietnamese, whole ms or "–"; returns the stages."""
    stages: dict[str, Any] = done["stages_ms"]
    assert isinstance(stages["total"], (int, float)) and stages["total"] > 0, done
    panel = await page.wait_for(STAGE_PANEL_JS, done["response_id"], timeout_s=5)
    assert panel["empty_hidden"], panel
    assert [label for label, _ in panel["rows"]] == [vi for _, vi in STAGE_LABELS_VI]
    for (key, _), (_, text) in zip(STAGE_LABELS_VI, panel["rows"], strict=True):
        if stages[key] is None:
            assert text == "–", (key, panel, stages)
        else:  # whole ms
            assert re.fullmatch(r"\d+", text), (key, panel)
            assert abs(int(text) - stages[key]) <= 0.5, (key, panel, stages)
    assert (await page.figures())["stages"] == {
        f"stage.{key}": stages[key] for key, _ in STAGE_LABELS_VI
    }
    return stages


async def played_more_than(page: Any, ms: float, *, timeout_s: float = 30) -> dict[str, Any]:
    """Wait until the page's player has played more than ``ms`` of audio in all."""
    player: dict[str, Any] = await page.wait_for(
        "(ms) => { const p = voiceTrio.figures().player; return p && p.totalPlayedMs > ms && p; }",
        ms,
        timeout_s=timeout_s,
    )
    return player


async def test_spoken_turn_is_transcribed_answered_and_played(
    local_speech: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    wav = await mic_file(tmp_path, before_s=1.0)
    with trio.fail_after(LIMIT_S):
        async with (
            receptionist(local_speech, tmp_path / "db.sqlite3", agent_greeting=False) as server,
            open_demo_page(
                server.url, name=request.node.name, mic_wav=wav, session_id="browser-spoken"
            ) as page,
        ):
            await page.wait_for_state("ready")
            await page.click("#mic-btn")
            # The page's VAD hears the fake microphone; the server's VAD and Whisper too.
            await page.wait_for_message("out", "client_vad_speech_start")
            user = await page.wait_for_entry("user", "xin chào", timeout_s=40)
            await page.wait_for_entry("assistant", after=user["index"] + 1)
            # The reply is heard: the player plays it (silence from underruns not counted).
            await played_more_than(page, 500)
            # Its stages (stages_ms on its response.done) are on the live panel, as sent.
            done = await page.wait_for_message("in", "response.done")
            stages = await stage_panel_shows(page, done["msg"])
            # A spoken turn: the end of turn was timed too (the embedded brain says it).
            assert stages["end_of_turn"] is not None and stages["end_of_turn"] > 0, stages
            figures = await page.figures()
            assert figures["audioContext"] == "running", figures
            assert figures["framesSent"] > 30, figures  # 100 ms frames from the microphone
            assert figures["ttfaMs"] is not None and figures["ttfaMs"] >= 0, figures
            log = await page.ws_log()
            final = [e["msg"] for e in log if e.get("msg", {}).get("type") == "input.transcript"]
            assert final and final[-1]["final"] and final[-1]["text"] == user["text"], final
            await page.screenshot("end")


async def test_speech_over_the_greeting_ducks_it_until_the_server_cuts_it(
    local_speech: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The page's own VAD only ducks the agent (a hint to the server); the server
    confirms from the words that the user cut in, and its `interrupted` empties the
    page's player at once; the answer to what the user said plays at full gain."""
    # The microphone wakes the room, so the greeting (~8.6 s of speech) starts at
    # once; the sentence comes 3 s later, while the greeting plays.
    wav = await mic_file(tmp_path, before_s=3.0)
    with trio.fail_after(LIMIT_S):
        async with (
            receptionist(local_speech, tmp_path / "db.sqlite3") as server,
            open_demo_page(
                server.url, name=request.node.name, mic_wav=wav, session_id="browser-barge"
            ) as page,
        ):
            await page.wait_for_state("ready")
            await page.click("#mic-btn")
            greeting = (await page.wait_for_message("in", "response.started"))["msg"]
            await page.wait_for_entry("assistant", "^Xin chào")
            hint = await page.wait_for_message("out", "client_vad_speech_start", timeout_s=30)
            assert hint["fig"]["agentSpeaking"], hint  # said over the greeting
            cut = await page.wait_for_message("in", "interrupted", **ids(greeting), timeout_s=40)
            at_cut = cut["fig"]["player"]
            # Until the server's word the greeting went on, ducked: still playing, with
            # more waiting, at a quarter of its gain (the speech over it was >= 0.6 s
            # long before the server could confirm it, the ramp takes 50 ms).
            assert cut["fig"]["ducked"], cut
            assert at_cut["state"] == "playing" and at_cut["bufferedMs"] > CHUNK_MS, cut
            assert at_cut["gain"] == pytest.approx(0.25, abs=1e-6), cut
            assert at_cut["duckedMs"] > 100, cut
            assert 0 < at_cut["totalPlayedMs"] < 8000, cut
            # The page empties its player at once on `interrupted` ...
            cleared = await page.wait_for(
                "() => { const p = voiceTrio.figures().player;"
                " return p.bufferedMs === 0 && p.clearedMs > 0 && p; }",
                timeout_s=5,
            )
            assert cleared["clearedMs"] >= at_cut["bufferedMs"] - CHUNK_MS, (at_cut, cleared)
            # ... and nothing more of the greeting is played: up to the next response
            # the played total grew by less than one audio chunk.
            mark = (await page.ws_log()).index(cut)
            answer = await page.wait_for_message("in", "response.started", after=mark)
            grown = answer["fig"]["player"]["totalPlayedMs"] - at_cut["totalPlayedMs"]
            assert 0 <= grown < CHUNK_MS, (at_cut, answer["fig"]["player"])
            assert answer["fig"]["player"]["bufferedMs"] == 0, answer
            assert answer["fig"]["stages"] is None, answer  # a greeting is no timed reply

            first = (await page.entries())[0]
            assert first["role"] == "assistant" and first["text"].startswith("Xin chào,"), first
            assert first["badges"] == ["bị ngắt"], first  # "interrupted"
            # The sentence that cut in is heard and answered, and the answer plays at
            # full gain again (the user stopped talking).
            user = await page.wait_for_entry("user", "xin chào", timeout_s=40)
            assert user["index"] == 1, await page.entries()
            await page.wait_for_entry("assistant", after=2)
            player = await played_more_than(page, answer["fig"]["player"]["totalPlayedMs"] + 500)
            assert player["gain"] == 1 and not player["ducked"], player
            # The page never stopped the agent itself: no interrupt of its own.
            sent = [e["msg"]["type"] for e in await page.ws_log() if e["dir"] == "out"]
            assert "interrupt" not in sent, sent
            assert (await page.figures())["interruptsSent"] == 0
            assert await server.metric("voice_trio_interrupts_total") == 1
            await page.screenshot("end")


async def test_a_backchannel_over_the_greeting_ducks_it_and_it_plays_on(
    local_speech: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """ "ừ ... ok" said over the agent: the page ducks it while it is said and then
    brings it back to full gain; the server does not cut it, and all of it is heard."""
    speech = b"".join(
        [
            await EspeakTts().synthesize("ừ"),
            bytes(2 * 24_000 // 5),  # 0.2 s
            await EspeakTts().synthesize("ok"),
        ]
    )
    wav = write_mic_wav(tmp_path / "mic.wav", speech, before_s=3.0, after_s=40.0)
    with trio.fail_after(LIMIT_S):
        async with (
            receptionist(local_speech, tmp_path / "db.sqlite3") as server,
            open_demo_page(
                server.url, name=request.node.name, mic_wav=wav, session_id="browser-backchannel"
            ) as page,
        ):
            await page.wait_for_state("ready")
            await page.click("#mic-btn")
            greeting = (await page.wait_for_message("in", "response.started"))["msg"]
            hint = await page.wait_for_message("out", "client_vad_speech_start", timeout_s=30)
            assert hint["fig"]["agentSpeaking"], hint
            # Turned down while it is said, then back up while the greeting still plays.
            ducked = await page.wait_for(
                "() => { const p = voiceTrio.figures().player;"
                " return p.gain < 0.3 && p.state === 'playing' && p; }",
                timeout_s=10,
            )
            restored = await page.wait_for(
                "() => { const f = voiceTrio.figures(), p = f.player;"
                " return !f.ducked && p.gain === 1 && p.state === 'playing' && p.bufferedMs > 0"
                " && p; }",
                timeout_s=20,
            )
            assert restored["duckedMs"] >= ducked["duckedMs"] > 0, (ducked, restored)
            # The greeting plays to its end: completed, never interrupted.
            done = await page.wait_for_message("in", "response.done", **ids(greeting))
            assert done["msg"]["status"] == "completed", done
            end = await page.wait_for(
                "() => { const p = voiceTrio.figures().player; return !p.active && p; }",
                timeout_s=30,
            )
            assert end["clearedMs"] == 0 and end["totalPlayedMs"] > 6000, end
            log = await page.ws_log()
            kinds = [e["msg"]["type"] for e in log if e["dir"] == "in"]
            assert "interrupted" not in kinds, kinds
            finals = [
                e["msg"]["text"]
                for e in log
                if e["dir"] == "in" and e["msg"]["type"] == "input.transcript" and e["msg"]["final"]
            ]
            assert finals == [], finals  # a backchannel over the agent is no turn
            sent = [e["msg"]["type"] for e in log if e["dir"] == "out"]
            assert "interrupt" not in sent, sent
            assert await server.metric("voice_trio_interrupts_total") == 0


async def test_the_interrupt_button_while_the_next_reply_waits_cuts_what_the_server_holds(
    local_speech: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A typed turn opens the conversation: the greeting and then the answer are both
    sent at once, and the answer waits in the page's player behind the greeting. The
    Interrupt button during the greeting must cut the answer too (the server's current
    response, none of which was heard): the page says `played_ms` 0, empties its
    player at once, and the server answers with `interrupted`."""
    wav = await mic_file(tmp_path, before_s=1.0)  # the microphone stays off
    with trio.fail_after(LIMIT_S):
        async with (
            receptionist(local_speech, tmp_path / "db.sqlite3") as server,
            open_demo_page(
                server.url, name=request.node.name, mic_wav=wav, session_id="browser-queued"
            ) as page,
        ):
            await page.wait_for_state("ready")
            await page.type_text("mấy giờ rồi")
            greeting = (await page.wait_for_message("in", "response.started"))["msg"]
            done = await page.wait_for_message("in", "response.done", **ids(greeting))
            mark = (await page.ws_log()).index(done)
            answer = (await page.wait_for_message("in", "response.started", after=mark))["msg"]
            await page.wait_for_message("in", "response.done", **ids(answer))
            # By the server's clock the answer (~2 s) has been heard by now; in truth
            # the page is still playing the greeting and the answer waits behind it.
            await page.wait_for("() => voiceTrio.figures().player?.playedMs > 3000")
            await page.click("#interrupt-btn")
            cut = await page.wait_for_message("out", "interrupt", timeout_s=30)
            assert cut["msg"]["played_ms"] == 0, cut  # none of the answer was heard
            assert cut["fig"]["player"]["bufferedMs"] > 2000, cut  # greeting's rest + answer
            await page.wait_for_message("in", "interrupted", **ids(answer))
            idle = await page.wait_for(
                "() => { const p = voiceTrio.figures().player;"
                " return !p.active && p.bufferedMs === 0 && p; }",
                timeout_s=5,
            )
            grown = idle["totalPlayedMs"] - cut["fig"]["player"]["totalPlayedMs"]
            assert 0 <= grown < CHUNK_MS, (cut["fig"]["player"], idle)
            assert idle["clearedMs"] > 2000 - CHUNK_MS, idle
            assert await server.metric("voice_trio_interrupts_total") == 1


async def test_typed_turn_is_answered(
    local_speech: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    wav = await mic_file(tmp_path, before_s=1.0)  # the microphone stays off
    with trio.fail_after(LIMIT_S):
        async with (
            receptionist(local_speech, tmp_path / "db.sqlite3") as server,
            open_demo_page(
                server.url, name=request.node.name, mic_wav=wav, session_id="browser-typed"
            ) as page,
        ):
            await page.wait_for_state("ready")
            await page.type_text("mấy giờ rồi")
            assert await page.evaluate("() => document.querySelector('#text-input').value") == ""
            answer = await page.wait_for_entry("assistant", "Bây giờ là")
            entries = await page.entries()
            # The typed turn (shown once), the greeting it woke, then the answer.
            assert [(e["role"], e["text"][:9]) for e in entries] == [
                ("user", "mấy giờ r"),
                ("assistant", "Xin chào,"),
                ("assistant", "Bây giờ l"),
            ], entries
            assert answer["index"] == 2
            sent = [e["msg"] for e in await page.ws_log() if e["dir"] == "out"]
            assert sent == [{"type": "text", "text": "mấy giờ rồi"}], sent
            await played_more_than(page, 0)  # Enter was a gesture: the audio plays
            await page.screenshot("end")


async def test_with_auth_on_the_page_connects_with_the_token_it_was_given(
    local_speech: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from voice_trio import mint_token

    secret = "browser-test-secret-" + "z" * 32
    token = mint_token(secret, "browser-auth")
    wav = await mic_file(tmp_path, before_s=1.0)  # the microphone stays off
    with trio.fail_after(LIMIT_S):
        async with (
            receptionist(local_speech, tmp_path / "db.sqlite3", auth_secret=secret) as server,
            open_demo_page(
                server.url,
                name=request.node.name,
                mic_wav=wav,
                session_id="browser-auth",
                query=f"token={token}",
            ) as page,
        ):
            await page.wait_for_state("ready")
            await page.type_text("mấy giờ rồi")
            await page.wait_for_entry("assistant", "Bây giờ là")
            metrics = (await server.get("/metrics")).text
            assert "voice_trio_handshakes_refused_total" in metrics
            assert 'voice_trio_handshakes_refused_total{reason="token_missing"}' not in metrics


async def test_dropped_socket_reconnects_and_the_page_works_again(
    local_speech: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    wav = await mic_file(tmp_path, before_s=1.0)
    session_id = "browser-reconnect"
    with trio.fail_after(LIMIT_S):
        async with (
            receptionist(local_speech, tmp_path / "db.sqlite3") as server,
            open_demo_page(
                server.url, name=request.node.name, mic_wav=wav, session_id=session_id
            ) as page,
        ):
            await page.wait_for_state("ready")
            await page.type_text("mấy giờ rồi")
            await page.wait_for_entry("assistant", "Bây giờ là")
            # Another client takes the session id: the server closes the page's room
            # (4000 "replaced"); the page comes back on its own and takes it back.
            async with server.connect(session_id) as other:
                dropped = await page.wait_for(
                    "() => window.__wsLog.find((e) => e.dir === 'close' && e.conn === 1)"
                )
                assert (dropped["code"], dropped["reason"]) == (4000, "replaced"), dropped
                await page.wait_for(
                    "() => window.__wsLog.find((e) =>"
                    " e.conn === 2 && e.msg?.type === 'session.ready')"
                )
                assert await other.closed() == (4000, "replaced")
            await page.wait_for_state("ready")
            figures = await page.figures()
            assert figures["reconnects"] == 1 and figures["sessionId"] == session_id, figures
            banners = await page.evaluate("() => document.querySelector('#banners').textContent")
            assert banners == "", banners  # the "connection lost" banner is gone
            events = await page.evaluate("() => document.querySelector('#event-log').textContent")
            assert "socket.closed" in events and "socket.reconnected" in events, events
            log = await page.ws_log()
            ready = [e for e in log if e.get("msg", {}).get("type") == "session.ready"]
            assert [(e["conn"], e["msg"]["session_id"]) for e in ready] == [
                (1, session_id),
                (2, session_id),
            ]
            # The new room answers: a typed turn on the new connection.
            mark = len(log)
            await page.type_text("mấy giờ rồi")
            answers = await page.wait_for(
                "(mark) => { const a = window.__wsLog.slice(mark).filter((e) =>"
                " e.dir === 'in' && e.msg.type === 'response.text.done'"
                " && e.msg.text.startsWith('Bây giờ là')); return a.length && a; }",
                mark,
            )
            assert answers[0]["conn"] == 2, answers
            entries = await page.entries()
            assert sum("Bây giờ là" in e["text"] for e in entries) == 2, entries
            assert await server.metric("voice_trio_rooms_open") == 1
            await page.screenshot("end")
