"""A voice that wraps another text-to-speech HTTP API through httpx (docs/customise.md).

The API it speaks to (adapt ``HttpVoice._request`` to yours)::

    POST {TTS_HTTP_URL}/v1/tts          Authorization: Bearer {TTS_HTTP_KEY}
    {"text": "Xin chào.", "voice": "...", "language": "vi", "sample_rate": 24000,
     "format": "pcm_s16le"}
    -> 200, the body: raw PCM16 mono at 24 kHz, streamed

Run a server whose rooms speak through it (the brain as configured: the
embedded one by default, ``VOICE_BRAIN=echo`` to hear your typed text back)::

    TTS_HTTP_URL=http://127.0.0.1:9000 .venv/bin/python examples/http_voice.py --port 8000

The room streams the brain's text deltas into :meth:`HttpVoice.speak`, which
cuts them into clauses and posts each one as soon as it is complete, so the
first words are heard before the brain has finished. Failures are
``ProviderError`` s: the room sends an ``error`` event, ends the response
(``interrupted``) and goes on; a refused key is fatal (the room closes 1011).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import trio

from voice_trio.app import VoiceTrioApp
from voice_trio.config import OUTPUT_SAMPLE_RATE, Settings
from voice_trio.errors import ConfigError, ProviderError
from voice_trio.providers import SessionOptions, Voice
from voice_trio.session import Session
from voice_trio.speech.textcut import ClauseCutter

__all__ = ["HttpVoice", "HttpVoiceApp"]


class HttpVoice:
    """One response's text in, the API's PCM16 out (the ``providers.Voice`` shape)."""

    name = "http"

    def __init__(
        self,
        options: SessionOptions,
        *,
        base_url: str,
        api_key: str = "",
        voice: str = "default",
        timeout_s: float = 10.0,
    ) -> None:
        self.options = options
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # The client chose a voice with session.config: it wins over the server's.
        self.voice = options.voice or voice
        self.timeout = httpx.Timeout(timeout_s)

    async def speak(
        self, text: trio.MemoryReceiveChannel[str], emit: Callable[[bytes], Awaitable[None]]
    ) -> None:
        cutter = ClauseCutter()
        # One client (one connection, kept alive) per response; the turn's cancel
        # scope closes it on interrupt, mid-request or mid-body.
        async with httpx.AsyncClient(timeout=self.timeout, headers=self._headers) as client:
            async for delta in text:
                for clause in cutter.feed(delta):
                    await self._say(client, clause, emit)
            for clause in cutter.flush():
                await self._say(client, clause, emit)

    async def _say(
        self, client: httpx.AsyncClient, clause: str, emit: Callable[[bytes], Awaitable[None]]
    ) -> None:
        carry = b""  # a sample split between two pieces of the body
        try:
            url, body = f"{self.base_url}/v1/tts", self._request(clause)
            async with client.stream("POST", url, json=body) as response:
                if response.status_code in (401, 403):
                    status = response.status_code
                    message = f"the TTS API refused the key ({status})"
                    raise ProviderError("tts_auth", message, fatal=True)
                if response.status_code != 200:
                    raise ProviderError(
                        "tts_failed", f"the TTS API answered {response.status_code}"
                    )
                async for piece in response.aiter_bytes():
                    piece = carry + piece
                    whole = len(piece) - len(piece) % 2
                    carry = piece[whole:]
                    if whole:
                        await emit(piece[:whole])
        except httpx.TransportError as exc:
            # The message names the failure, never the key (it is in a header only).
            raise ProviderError(
                "tts_unavailable", f"the TTS API could not be reached: {type(exc).__name__}"
            ) from None

    def _request(self, clause: str) -> dict[str, Any]:
        return {
            "text": clause,
            "voice": self.voice,
            "language": self.options.language,
            "sample_rate": OUTPUT_SAMPLE_RATE,
            "format": "pcm_s16le",
        }


class HttpVoiceApp(VoiceTrioApp):
    """The app with :class:`HttpVoice` as every room's voice (the brain as configured)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        tts_url: str | None = None,
        tts_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings, **kwargs)
        self.tts_url = tts_url or os.environ.get("TTS_HTTP_URL", "")
        self.tts_key = os.environ.get("TTS_HTTP_KEY", "") if tts_key is None else tts_key
        if not self.tts_url:
            raise ConfigError("set TTS_HTTP_URL to the TTS API's base URL")

    def make_voice(self, session: Session) -> Voice | None:
        return HttpVoice(session.options, base_url=self.tts_url, api_key=self.tts_key)


def main() -> None:
    from voice_trio.server import serve

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app = HttpVoiceApp(Settings.from_env())
    trio.run(partial(serve, app, host=args.host, port=args.port))


if __name__ == "__main__":
    main()
