"""The embedded brain's ears and voice, with your own language model deciding (docs/customise.md).

The embedded brain (``VOICE_BRAIN=local``) hears with Silero VAD and Whisper and
speaks with the room's voice; what it says comes from a *responder*: the agent
graph by default. Here the responder is a chat model behind an
OpenAI-compatible HTTP API (``POST {base}/v1/chat/completions``: a hosted
model, or vLLM / llama.cpp / Ollama on your own machine), through httpx::

    LLM_URL=http://127.0.0.1:11434 LLM_MODEL=qwen2.5 .venv/bin/python examples/llm_responder.py

The conversation (its bounded history) is kept in the room's
:class:`~voice_trio.session.Session`, so it survives the brain being torn down
when idle and started again. (The app still loads ``AGENT_GRAPH``, the demo
receptionist by default, at start-up; this brain does not use it.)
"""

from __future__ import annotations

import argparse
import collections
import os
from functools import partial
from typing import Any

import httpx
import msgspec
import trio

from voice_trio.app import VoiceTrioApp
from voice_trio.config import ConfigError, Settings
from voice_trio.errors import ProviderError
from voice_trio.providers import Brain
from voice_trio.providers.local import LocalBrain
from voice_trio.session import Session

__all__ = ["ChatResponder", "LlmApp"]

SYSTEM = (
    "Bạn là trợ lý giọng nói, trả lời bằng tiếng Việt tự nhiên, ngắn gọn (một hai câu), "
    "không dùng ký hiệu hay markdown vì câu trả lời sẽ được đọc thành tiếng."
)
#: The history sent with each turn is bounded by characters, not only turns.
HISTORY_CHARS = 8000


class ChatResponder:
    """One room's conversation with the model (the local brain's ``Responder``)."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        system: str = SYSTEM,
        greeting: str = "",
        timeout_s: float = 20.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.system = system
        self._greeting = greeting
        self.timeout = httpx.Timeout(timeout_s)
        self.history: collections.deque[dict[str, str]] = collections.deque()

    def greeting(self) -> str:
        if self._greeting:
            self._remember("assistant", self._greeting)
        return self._greeting

    async def respond(self, text: str) -> str:
        self._remember("user", text)
        messages = [{"role": "system", "content": self.system}, *self.history]
        try:
            async with httpx.AsyncClient(timeout=self.timeout, headers=self._headers) as client:
                response = await client.post(
                    self.url, json={"model": self.model, "messages": messages}
                )
        except httpx.TransportError as exc:
            raise ProviderError(
                "llm_unavailable", f"the language model could not be reached: {type(exc).__name__}"
            ) from None
        if response.status_code in (401, 403):
            raise ProviderError("llm_auth", "the language model refused the key", fatal=True)
        if response.status_code != 200:
            raise ProviderError("llm_failed", f"the language model answered {response.status_code}")
        try:
            reply = str(response.json()["choices"][0]["message"]["content"]).strip()
        except (ValueError, KeyError, IndexError, TypeError):
            raise ProviderError(
                "llm_failed", "the language model's answer is not a chat reply"
            ) from None
        self._remember("assistant", reply)
        return reply

    def _remember(self, role: str, content: str) -> None:
        self.history.append({"role": role, "content": content})
        while (
            sum(len(m["content"]) for m in self.history) > HISTORY_CHARS and len(self.history) > 1
        ):
            self.history.popleft()


class LlmApp(VoiceTrioApp):
    """The app whose local brain decides with :class:`ChatResponder`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        llm_url: str | None = None,
        llm_model: str | None = None,
        llm_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(settings, **kwargs)
        self.llm_url = llm_url or os.environ.get("LLM_URL", "")
        self.llm_model = llm_model or os.environ.get("LLM_MODEL", "default")
        self.llm_key = os.environ.get("LLM_API_KEY", "") if llm_key is None else llm_key
        if not self.llm_url:
            raise ConfigError("set LLM_URL to the chat API's base URL")

    def make_brain(self, session: Session) -> Brain:
        settings = self.settings
        first = session.conversation is None
        if first:
            # Kept in the session: the next brain of this room goes on with it.
            session.conversation = ChatResponder(
                base_url=self.llm_url, model=self.llm_model, api_key=self.llm_key
            )
        return LocalBrain(
            session.options,
            speech=self._require_speech(),
            responder=session.conversation,
            greet=first and settings.agent_greeting,
            end_silence_ms=settings.vad_end_silence_ms,
            partial_interval_s=settings.asr_partial_interval_s,
        )


def main() -> None:
    from voice_trio.server import serve

    parser = argparse.ArgumentParser(description="voice-trio with a chat model deciding")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # The embedded brain, whatever VOICE_BRAIN says: it is the one that takes a responder.
    app = LlmApp(msgspec.structs.replace(Settings.from_env(), voice_brain="local"))
    trio.run(partial(serve, app, host=args.host, port=args.port))


if __name__ == "__main__":
    main()
