"""``voice-trio check``: try the settings before a user does.

Each check does what a room would do first, once: the embedded models are
loaded (and the embedded voice says a word), the agent graph is built, Azure
OpenAI Realtime opens a session (closed as soon as ``session.created`` arrives),
Cartesia speaks a short Vietnamese sentence with the configured voice and model,
and Redis (with ``REDIS_URL``) answers a PING.
A wrong key, deployment or voice id is found here, not when the first user speaks.
Every detail shown goes through the same secret masking as the logs.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from .config import Settings, default_db_path
from .logs import Masker, secrets_of

__all__ = ["Result", "render", "run_checks"]

#: What the Cartesia check asks for: short, so it costs a fraction of a second of audio.
CARTESIA_PHRASE = "Xin chào."
#: Cartesia models that speak Vietnamese (../shared/PROVIDERS.md): sonic-3 and sonic-3.5.
CARTESIA_VIETNAMESE_MODELS = ("sonic-3",)


@dataclass(frozen=True, slots=True)
class Result:
    """One row of the table: ``ok`` None means not needed by these settings."""

    name: str
    ok: bool | None
    detail: str

    @property
    def word(self) -> str:
        return {True: "ok", False: "FAIL", None: "skip"}[self.ok]


async def run_checks(settings: Settings, *, timeout_s: float = 10.0) -> list[Result]:
    """Every check these settings call for, one after another (each within ``timeout_s``)."""
    brain, voice = settings.brain, settings.voice
    results = [Result("settings", True, f"valid; brain {brain}, voice {voice}")]
    checks: list[tuple[str, Callable[[], Awaitable[Result]] | None, str]] = [
        (
            "speech recognition",
            (lambda: _whisper(settings)) if brain == "local" else None,
            "the embedded brain's Whisper and Silero VAD",
        ),
        (
            "embedded voice",
            (lambda: _espeak(settings)) if voice == "local" else None,
            "eSpeak NG",
        ),
        (
            "agent graph",
            (lambda: _agent(settings)) if brain in ("local", "azure") else None,
            "the demo receptionist",
        ),
        (
            "azure realtime",
            (lambda: _azure(settings, timeout_s)) if brain == "azure" else None,
            "Azure OpenAI Realtime",
        ),
        (
            "cartesia",
            (lambda: _cartesia(settings, timeout_s)) if voice == "cartesia" else None,
            "Cartesia TTS",
        ),
        (
            "redis",
            (lambda: _redis(settings, timeout_s)) if settings.redis_url else None,
            "Redis (REDIS_URL)",
        ),
    ]
    for name, check, what in checks:
        if check is None:
            results.append(
                Result(name, None, f"{what}: not used with brain {brain}, voice {voice}")
            )
            continue
        with trio.move_on_after(timeout_s * 3) as scope:
            result = await check()
        if scope.cancelled_caught:
            result = Result(name, False, f"no answer within {timeout_s * 3:.0f} s")
        results.append(result)
    return results


def render(results: list[Result], settings: Settings | None = None) -> str:
    """The table ``voice-trio check`` prints, secrets masked."""
    mask = Masker(secrets_of(settings) if settings is not None else ())
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  result  detail"]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.word:<6}  {mask(r.detail)}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ embedded


async def _whisper(settings: Settings) -> Result:
    from .speech.asr import Recognizer
    from .speech.vad import SileroVad

    started = time.perf_counter()
    folder = Path(settings.asr_model_dir) if settings.asr_model_dir else None
    try:
        recognizer = await Recognizer.load(folder, cpu_threads=settings.asr_cpu_threads)
    except Exception as exc:  # the whole point is to say what is missing
        return Result("speech recognition", False, f"Whisper base: {_what(exc)}")
    try:
        await SileroVad.load()
    except Exception as exc:
        return Result("speech recognition", False, f"Silero VAD: {_what(exc)}")
    seconds = time.perf_counter() - started
    return Result(
        "speech recognition",
        True,
        f"Whisper base ({recognizer.model_dir}) and Silero VAD loaded in {seconds:.1f} s",
    )


async def _espeak(settings: Settings) -> Result:
    from .speech.tts import EspeakOptions, EspeakTts

    try:
        tts = EspeakTts(
            options=EspeakOptions(voice=settings.tts_voice, speed_wpm=settings.tts_speed_wpm),
            chunk_bytes=settings.ws_tts_chunk_bytes,
        )
        audio = b"".join([chunk async for chunk in tts.stream("Xin chào.")])
    except Exception as exc:
        return Result("embedded voice", False, f"eSpeak NG: {_what(exc)}")
    if not audio.strip(b"\0"):
        return Result("embedded voice", False, f"eSpeak NG voice {settings.tts_voice} was silent")
    return Result(
        "embedded voice",
        True,
        f"eSpeak NG voice {settings.tts_voice} said 'Xin chào' ({len(audio) // 48} ms)",
    )


async def _agent(settings: Settings) -> Result:
    from .demo import build_receptionist

    path = settings.agent_db_path or default_db_path()
    try:
        await trio.to_thread.run_sync(build_receptionist, path)
    except Exception as exc:
        return Result("agent graph", False, f"the demo receptionist ({path}): {_what(exc)}")
    return Result("agent graph", True, f"the demo receptionist, appointments in {path}")


# ----------------------------------------------------------------- providers


async def _azure(settings: Settings, timeout_s: float) -> Result:
    from .providers._socket import open_provider_socket
    from .providers.azure_realtime import realtime_url

    name = "azure realtime"
    version = settings.azure_openai_api_version
    where = f"deployment {settings.azure_openai_deployment} ({'preview' if version else 'GA'} URL)"
    headers = [(b"api-key", settings.azure_openai_api_key.encode())]
    if version:
        headers.append((b"OpenAI-Beta", b"realtime=v1"))
    try:
        url = realtime_url(
            settings.azure_openai_endpoint, settings.azure_openai_deployment, version or None
        )
        async with open_provider_socket(
            url, ssl_context=None, headers=headers, connect_timeout_s=timeout_s
        ) as ws:
            with trio.move_on_after(timeout_s):
                while True:
                    event = _json(await ws.get_message())
                    if event.get("type") == "session.created":
                        session = event.get("session") or {}
                        return Result(
                            name,
                            True,
                            f"{where}: session {session.get('id', '?')} opened, closed at once",
                        )
                    if event.get("type") == "error":
                        error = event.get("error") or {}
                        message = error.get("message") or error.get("code") or "no message"
                        return Result(name, False, f"{where}: Azure sent an error: {message}")
            return Result(name, False, f"{where}: no session.created within {timeout_s:.0f} s")
    except trio_websocket.ConnectionRejected as exc:
        return Result(name, False, _refused("Azure OpenAI", exc.status_code, _AZURE_HINTS))
    except trio_websocket.ConnectionClosed as exc:
        return Result(name, False, f"{where}: Azure closed the session ({_closed(exc)})")
    except trio_websocket.ConnectionTimeout:
        return Result(
            name, False, f"no answer from {settings.azure_openai_endpoint} within {timeout_s:.0f} s"
        )
    except (trio_websocket.HandshakeError, OSError, ValueError) as exc:
        return Result(
            name, False, f"could not reach {settings.azure_openai_endpoint}: {_what(exc)}"
        )


_AZURE_HINTS = {
    401: "refused the credentials: check AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT",
    403: "refused the credentials: check AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT",
    404: "has no such realtime deployment: check AZURE_OPENAI_DEPLOYMENT and "
    "AZURE_OPENAI_API_VERSION",
}


async def _cartesia(settings: Settings, timeout_s: float) -> Result:
    from .providers._socket import open_provider_socket
    from .providers.cartesia import tts_url

    name = "cartesia"
    voice_id, model, language = (
        settings.cartesia_voice_id,
        settings.cartesia_model,
        settings.voice_language,
    )
    if language == "vi" and not model.startswith(CARTESIA_VIETNAMESE_MODELS):
        return Result(
            name, False, f"CARTESIA_MODEL={model} does not speak Vietnamese (sonic-3, sonic-3.5 do)"
        )
    headers = [
        (b"Authorization", f"Bearer {settings.cartesia_api_key}".encode()),
        (b"Cartesia-Version", settings.cartesia_version.encode()),
    ]
    request = {
        "model_id": model,
        "transcript": CARTESIA_PHRASE,
        "voice": {"mode": "id", "id": voice_id},
        "language": language,
        # A fresh id each time: Cartesia refuses more input on a context that was ended.
        "context_id": f"voice-trio-check-{secrets.token_hex(4)}",
        "continue": False,
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
    }
    what = f"voice {voice_id} with {model} in {language}"
    try:
        url = tts_url(settings.cartesia_base_url)
        async with open_provider_socket(
            url, ssl_context=None, headers=headers, connect_timeout_s=timeout_s
        ) as ws:
            await ws.send_message(json.dumps(request))
            audio = 0
            with trio.move_on_after(timeout_s):
                while True:
                    message = _json(await ws.get_message())
                    kind = message.get("type")
                    if kind == "chunk":
                        audio += len(message.get("data") or "") * 3 // 4
                    if kind == "error":
                        return Result(
                            name, False, f"{what}: Cartesia answered {_cartesia_error(message)}"
                        )
                    if kind == "done" or message.get("done"):
                        break
            if not audio:
                return Result(name, False, f"{what}: no audio within {timeout_s:.0f} s")
            return Result(
                name, True, f"{what} said {CARTESIA_PHRASE!r} ({audio // 48} ms of audio)"
            )
    except trio_websocket.ConnectionRejected as exc:
        return Result(name, False, _refused("Cartesia", exc.status_code, _CARTESIA_HINTS))
    except trio_websocket.ConnectionClosed as exc:
        return Result(name, False, f"{what}: Cartesia closed the socket ({_closed(exc)})")
    except trio_websocket.ConnectionTimeout:
        return Result(
            name, False, f"no answer from {settings.cartesia_base_url} within {timeout_s:.0f} s"
        )
    except (trio_websocket.HandshakeError, OSError, ValueError) as exc:
        return Result(name, False, f"could not reach {settings.cartesia_base_url}: {_what(exc)}")


async def _redis(settings: Settings, timeout_s: float) -> Result:
    import coredis
    from coredis.retry import NoRetryPolicy

    from .errors import leaves

    started = time.perf_counter()
    try:
        client: coredis.Redis[str] = coredis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            connect_timeout=timeout_s,
            stream_timeout=timeout_s,
            retry_policy=NoRetryPolicy(),
        )
        async with client:
            await client.ping()
    except Exception as exc:  # reported, with the first real failure of a group
        found = leaves(exc, Exception) or [exc]
        return Result("redis", False, f"Redis (REDIS_URL) did not answer PING: {_what(found[0])}")
    ms = (time.perf_counter() - started) * 1000
    return Result("redis", True, f"answered PING ({ms:.0f} ms with the connect)")


_CARTESIA_HINTS = {
    401: "refused the key: check CARTESIA_API_KEY",
    403: "refused the key: check CARTESIA_API_KEY",
    400: "refused the request: check CARTESIA_VERSION",
}


def _cartesia_error(message: dict[str, Any]) -> str:
    status = message.get("status_code")
    text = message.get("message") or message.get("title") or message.get("error") or "an error"
    return f"{status}: {text}" if status else str(text)


def _refused(provider: str, status: int, hints: dict[int, str]) -> str:
    return f"{provider} answered HTTP {status}: " + hints.get(status, "refused the connection")


def _closed(exc: trio_websocket.ConnectionClosed) -> str:
    reason = exc.reason
    return "no close frame" if reason is None else f"{reason.code} {reason.reason or ''}".strip()


def _json(message: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(message)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _what(exc: BaseException) -> str:
    """``Class: message`` of an error, or of its cause when it says nothing itself."""
    cause = exc.__cause__ or exc.__context__
    if not str(exc) and cause is not None:
        return _what(cause)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
