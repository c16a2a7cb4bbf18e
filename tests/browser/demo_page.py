"""The demo page (static/) in a real headless Chromium, driven from trio tests.

Playwright's sync API runs its own asyncio loop and must stay on the thread that
started it, so one dedicated thread owns the browser for a test; the trio side
hands it callables (``await page.call(fn)``) and waits on a ``trio.Event``, so the
server under test (in-process, on the trio loop) keeps running meanwhile.

Chromium is the system's (Debian package ``chromium``), never a downloaded one;
it runs offline, with a fake microphone that plays a WAV file made by the test
(Chromium loops it, from its start, each time the page opens the microphone).
Every wait is on a condition in the page, with a timeout.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import soxr
import trio

CHROMIUM = os.environ.get("VOICE_TRIO_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
MIC_RATE = 48_000  # what Chromium's fake capture device reads most safely

# Records the page's socket traffic (JSON both ways, counts of binary frames),
# with the page's figures at each message: the tests read `window.__wsLog`.
WS_TAP = """
(() => {
  const log = [];
  const NativeWebSocket = window.WebSocket;
  const figures = () => (window.voiceTrio ? window.voiceTrio.figures() : null);
  const QUIET = new Set(["metrics", "response.text.delta", "ping", "pong"]);
  let conn = 0;
  window.__wsLog = log;
  window.__wsAudioIn = 0;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      const id = ++conn;
      this.addEventListener("message", (ev) => {
        if (typeof ev.data !== "string") {
          window.__wsAudioIn += ev.data.byteLength;
          return;
        }
        const msg = JSON.parse(ev.data);
        if (QUIET.has(msg.type)) return;
        log.push({ dir: "in", conn: id, t: performance.now(), msg, fig: figures() });
      });
      this.addEventListener("close", (ev) => {
        const { code, reason } = ev;
        log.push({ dir: "close", conn: id, t: performance.now(), code, reason });
      });
    }
    send(data) {
      if (typeof data === "string") {
        const msg = JSON.parse(data);
        const t = performance.now();
        if (!QUIET.has(msg.type)) log.push({ dir: "out", t, msg, fig: figures() });
      }
      return super.send(data);
    }
  };
})();
"""

# The conversation as shown: one object per <li> of #transcript.
ENTRIES_JS = """
() => [...document.querySelectorAll("#transcript > li")].map((li) => ({
  role: ["user", "assistant", "error", "notice"].find((r) => li.classList.contains(r)) ?? null,
  partial: li.classList.contains("partial"),
  who: li.querySelector(".who")?.textContent ?? "",
  badges: [...li.querySelectorAll(".badge")].map((b) => b.textContent),
  text: li.querySelector(".text")?.textContent ?? "",
}))
"""


def chromium_args(mic_wav: Path) -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        # Offline: every host name but the loopback server's fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic_wav}",
    ]


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the 'playwright' Python package is not installed (pip install playwright)"
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set VOICE_TRIO_CHROMIUM)"
    return None


def write_mic_wav(path: Path, pcm24k: bytes, *, before_s: float, after_s: float) -> Path:
    """24 kHz PCM16 speech -> a 48 kHz 16-bit mono WAV with silence around it."""
    speech = np.frombuffer(pcm24k, dtype="<i2").astype(np.float32) / 32768.0
    speech = soxr.resample(speech, 24_000, MIC_RATE)
    audio = np.concatenate(
        [np.zeros(int(before_s * MIC_RATE)), speech, np.zeros(int(after_s * MIC_RATE))]
    )
    samples = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIC_RATE)
        w.writeframes(samples.tobytes())
    return path


class _BrowserThread:
    """One thread that runs every Playwright call of one browser, in order."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="playwright", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

    async def call(self, fn: Callable[[], Any]) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: Any) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        self._jobs.put((fn, future))
        await done.wait()
        return future.result()

    def stop(self, last: Callable[[], Any]) -> None:
        """Run ``last`` after the jobs already queued, then end the thread."""
        self._jobs.put((last, concurrent.futures.Future()))
        self._jobs.put(None)

    async def join(self) -> bool:
        """Wait (up to 20 s) for the thread to finish its jobs; True if it did."""
        await trio.to_thread.run_sync(self._thread.join, 20.0, abandon_on_cancel=True)
        return not self._thread.is_alive()


class DemoPage:
    """The demo page open in headless Chromium; each call runs on the browser thread."""

    def __init__(self, thread: _BrowserThread, name: str) -> None:
        self._thread = thread
        self.name = name
        self.console: list[str] = []
        self._page: Any = None

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(playwright_page, *args)`` in the browser thread."""
        return await self._thread.call(lambda: fn(self._page, *args))

    async def evaluate(self, js: str, arg: Any = None) -> Any:
        return await self.call(lambda page: page.evaluate(js, arg))

    async def wait_for(self, js: str, arg: Any = None, *, timeout_s: float = 30) -> Any:
        """Wait until the JS function ``js(arg)`` returns something truthy; return it.

        Polled from here (every 20 ms, each look a quick call) rather than with
        Playwright's own wait, so that a test cancelled meanwhile is not left
        waiting on the browser thread."""
        with trio.move_on_after(timeout_s):
            while not (value := await self.evaluate(js, arg)):
                await trio.sleep(0.02)
            return value
        raise AssertionError(f"not true after {timeout_s:g} s: {js} with {arg!r}")

    async def figures(self) -> dict[str, Any]:
        """``voiceTrio.figures()``: the page's live state (static/js/app.js)."""
        figures: dict[str, Any] = await self.evaluate("() => voiceTrio.figures()")
        return figures

    async def ws_log(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = await self.evaluate("() => window.__wsLog")
        return log

    async def entries(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await self.evaluate(ENTRIES_JS)
        return entries

    async def wait_for_entry(
        self, role: str, pattern: str = r"\S", *, after: int = 0, timeout_s: float = 30
    ) -> dict[str, Any]:
        """The first final (not partial) transcript entry of ``role`` at index >= ``after``
        whose text matches ``pattern`` (a JS regular expression, case-insensitive); the
        entry with its ``index``."""
        entry: dict[str, Any] = await self.wait_for(
            f"([role, pattern, after]) => ({ENTRIES_JS})()"
            ".map((e, index) => ({...e, index})).slice(after).find((e) => e.role === role"
            " && !e.partial && e.text.trim() !== '…' && new RegExp(pattern, 'i').test(e.text))",
            [role, pattern, after],
            timeout_s=timeout_s,
        )
        return entry

    async def wait_for_state(self, state: str, *, timeout_s: float = 30) -> None:
        """The connection pill's state: ready, waiting, connecting, ..."""
        await self.wait_for(
            "(state) => document.querySelector('#conn-state').dataset.state === state",
            state,
            timeout_s=timeout_s,
        )

    async def wait_for_message(
        self, direction: str, kind: str, *, after: int = 0, timeout_s: float = 30, **fields: Any
    ) -> dict[str, Any]:
        """The first logged socket message (``in``/``out``) of ``kind`` at index >= ``after``
        with these fields; the log entry, with the page's figures when it passed."""
        entry: dict[str, Any] = await self.wait_for(
            "([dir, kind, after, fields]) => window.__wsLog.slice(after).find((e) =>"
            " e.dir === dir && e.msg?.type === kind"
            " && Object.entries(fields).every(([k, v]) => e.msg[k] === v))",
            [direction, kind, after, fields],
            timeout_s=timeout_s,
        )
        return entry

    async def type_text(self, text: str) -> None:
        """Type a turn into the text box and press Enter (a user gesture, as a person's)."""

        def type_(page: Any) -> None:
            page.fill("#text-input", text)
            page.press("#text-input", "Enter")

        await self.call(type_)

    async def click(self, selector: str) -> None:
        await self.call(lambda page: page.click(selector))

    async def screenshot(self, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{label}.png"
        await self.call(lambda page: page.screenshot(path=str(path), full_page=True))
        return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "page"


def _kill_leftovers(profile: Path) -> None:
    """Kill any Chromium process of this test's profile still alive (by pid)."""
    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(str(profile) in arg for arg in cmdline):
            mine.append(proc)
    for proc in mine:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(mine, timeout=10)


@contextlib.asynccontextmanager
async def open_demo_page(
    url: str, *, name: str, mic_wav: Path, session_id: str, query: str = ""
) -> AsyncIterator[DemoPage]:
    """Chromium on the demo page at ``url`` (``?session=session_id`` and ``query``), fresh profile.

    On the way out the browser is closed and its processes are killed even when
    the test failed or was cancelled; a failed test leaves a screenshot, the
    page's console and its socket log under test-artifacts/browser/.
    """
    from playwright.sync_api import sync_playwright

    name = _slug(name)
    profile = Path(tempfile.mkdtemp(prefix="voice-trio-chromium-"))
    thread = _BrowserThread()
    page = DemoPage(thread, name)
    state: dict[str, Any] = {}

    def launch() -> None:
        state["pw"] = pw = sync_playwright().start()
        state["context"] = context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=chromium_args(mic_wav),
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(30_000)
        context.add_init_script(WS_TAP)
        pg = context.pages[0] if context.pages else context.new_page()
        pg.on("console", lambda m: page.console.append(f"{m.type}: {m.text}"))
        pg.on("pageerror", lambda e: page.console.append(f"pageerror: {e}"))
        page._page = pg
        pg.goto(f"{url}/?session={session_id}{'&' + query if query else ''}")

    def close() -> None:
        with contextlib.suppress(Exception):
            if "context" in state:
                state["context"].close()
        with contextlib.suppress(Exception):
            if "pw" in state:
                state["pw"].stop()

    try:
        await thread.call(launch)
        yield page
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await _save_failure(page)
        raise
    finally:
        with trio.CancelScope(shield=True):
            thread.stop(close)
            if not await thread.join():
                # A call is stuck in the browser: killing it ends the call, then close() runs.
                _kill_leftovers(profile)
                await thread.join()
            _kill_leftovers(profile)
            shutil.rmtree(profile, ignore_errors=True)


async def _save_failure(page: DemoPage) -> None:
    if page._page is None:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):
        await page.screenshot("failed")
    with contextlib.suppress(Exception):
        log = await page.ws_log()
        (ARTIFACTS / f"{page.name}-failed-ws.json").write_text(
            json.dumps(log, ensure_ascii=False, indent=1)
        )
    (ARTIFACTS / f"{page.name}-failed-console.txt").write_text("\n".join(page.console))


__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "DemoPage",
    "browser_missing",
    "open_demo_page",
    "write_mic_wav",
]
