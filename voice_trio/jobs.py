"""Background jobs on Celery (issue #14): a closed room's summary and its usage record.

``CELERY_BROKER_URL`` (a Redis URL) turns them on. The Celery app is this
module's ``app``: ``celery -A voice_trio.jobs worker`` (or ``voice-trio worker``)
runs a worker, which reads the same settings from the environment as the
server and writes into the same transcript file (``TRANSCRIPT_DB_PATH``: the
worker runs on the server's host, or shares its volume).

Two tasks, both sent when a room's close is committed to the transcript store
(so the worker reads a whole transcript):

- ``voice_trio.jobs.summarize``: the session's summary. Local by default: what
  the demo receptionist's graph would make of it (:func:`local_summary`: the
  caller's intent by the graph's own phrases, the booking code and cancellation
  the receptionist said). With ``AZURE_OPENAI_CHAT_DEPLOYMENT`` set, a summary in
  Vietnamese written by that chat model (:func:`azure_summary`), the intent and
  booking code still the local ones.
- ``voice_trio.jobs.record_usage``: the room's usage row for billing.

The server side is :class:`JobQueue`: the room's close only appends to a
bounded backlog; one task hands jobs to the broker in a thread, under
``JOBS_TIMEOUT_S``. A broker that is down or slow costs a counted drop
(``voice_trio_jobs_dropped_total``), a rate-limited log line, and the room's
summary and usage written by the server itself instead (the local summary):
nothing of a conversation is lost, only the model-written summary.

Importing this module does not import Celery (0.25 s); ``app`` is made on first
use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio

from .agent.vietnamese import Utterance, code_span
from .config import Settings
from .demo.wording import BOOK as _BOOK
from .demo.wording import CANCEL as _CANCEL
from .demo.wording import LOOKUP as _LOOKUP
from .ratelog import RateLimitedLog
from .record import RoomClosed, Usage
from .transcripts import RECORD_OVERHEAD, Backlog, Summary, TranscriptStore, default_transcript_path

if TYPE_CHECKING:
    import celery  # type: ignore[import-untyped]

__all__ = ["JobQueue", "azure_summary", "local_summary", "make_app"]

log = logging.getLogger("voice_trio.jobs")

SUMMARIZE: Final = "voice_trio.jobs.summarize"
RECORD_USAGE: Final = "voice_trio.jobs.record_usage"
#: Jobs handed to the broker per thread call.
SEND_BATCH: Final = 50
#: After a failed send, the queue waits this long before the next (jobs meanwhile: dropped).
BACKOFF_S: Final = 1.0

#: What the chat model is asked (a call-centre summary, in Vietnamese).
SUMMARY_PROMPT: Final = (
    "Bạn tóm tắt cuộc gọi giữa khách hàng và lễ tân ảo của một phòng khám. Viết bằng tiếng "
    "Việt, tối đa ba câu: khách cần gì, lễ tân đã làm gì (đặt, xem hay hủy lịch hẹn, mã lịch "
    "hẹn nếu có), và việc gì còn dang dở. Không thêm thông tin không có trong cuộc gọi."
)

_INTENTS: Final = (
    # Checked in this order, as the receptionist's main node does.
    ("cancel", _CANCEL, "hủy lịch hẹn"),
    ("lookup", _LOOKUP, "xem lại lịch hẹn"),
    ("book", _BOOK, "đặt lịch hẹn"),
)
_INTENT_WORDS: Final = {name: words for name, _, words in _INTENTS}


def local_summary(turns: list[dict[str, Any]]) -> Summary:
    """What the receptionist's graph knows of a transcript, as a short Vietnamese summary.

    The intent of each user turn by the graph's own phrases; the booking made or
    cancelled from what the receptionist said (its full reply: a booking the
    caller cut off while it was read out was made all the same).
    """
    users = [t for t in turns if t["role"] == "user"]
    replies = [t for t in turns if t["role"] == "assistant"]
    intents: list[str] = []
    for turn in users:
        utterance = Utterance.of(turn["text"])
        for name, phrases, _ in _INTENTS:
            if utterance.has(*phrases):
                if name not in intents:
                    intents.append(name)
                break
    code: str | None = None
    cancelled = False
    for turn in replies:
        said = turn.get("full_text") or turn["text"]
        utterance = Utterance.of(said)
        if utterance.has("đã đặt lịch hẹn"):
            at = said.lower().find("mã lịch hẹn")
            found = code_span(said[at:]) if at >= 0 else None
            if found is not None:
                code = found[0]
        if utterance.has("đã hủy lịch hẹn"):
            cancelled = True
    interrupted = sum(1 for t in replies if t["status"] == "interrupted")
    parts = []
    if intents:
        parts.append("Khách gọi để " + " và ".join(_INTENT_WORDS[i] for i in intents) + ".")
    elif users:
        parts.append("Khách gọi để hỏi thông tin.")
    else:
        parts.append("Khách không nói gì.")
    if code is not None:
        parts.append(f"Đã đặt lịch hẹn, mã {code}.")
    if cancelled:
        parts.append("Đã hủy lịch hẹn.")
    parts.append(
        f"{len(users)} lượt khách nói, {len(replies)} lượt trả lời ({interrupted} bị ngắt)."
    )
    return Summary(
        text=" ".join(parts),
        written_by="local",
        intent=intents[0] if intents else ("other" if users else None),
        booking_code=code,
    )


def azure_summary(
    turns: list[dict[str, Any]],
    *,
    endpoint: str,
    api_key: str,
    deployment: str,
    api_version: str,
    timeout_s: float = 30.0,
) -> Summary:
    """A summary in Vietnamese by an Azure OpenAI chat deployment (chat completions API).

    Raises ``httpx.HTTPError`` or ``ValueError`` when the model cannot give one.
    The transcript sent is the text as heard; the intent and booking code are
    the local ones (facts, not the model's reading).
    """
    import httpx

    lines = [f"{'Khách' if t['role'] == 'user' else 'Lễ tân'}: {t['text']}" for t in turns]
    response = httpx.post(
        f"{endpoint.rstrip('/')}/openai/deployments/{deployment}/chat/completions",
        params={"api-version": api_version},
        headers={"api-key": api_key},
        json={
            "messages": [
                {"role": "system", "content": SUMMARY_PROMPT},
                {"role": "user", "content": "\n".join(lines) or "(cuộc gọi không có lời nào)"},
            ],
            "temperature": 0.2,
            "max_tokens": 400,
        },
        timeout=timeout_s,
    )
    response.raise_for_status()
    try:
        text = response.json()["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"the chat completion has no message ({exc!r})") from None
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the chat completion is empty")
    facts = local_summary(turns)
    return Summary(
        text=text.strip(),
        written_by="azure",
        intent=facts.intent,
        booking_code=facts.booking_code,
    )


# ------------------------------------------------------------------ the worker


def _store(settings: Settings) -> TranscriptStore:
    return TranscriptStore(settings.transcript_db_path or default_transcript_path())


def summarize(session_id: str, settings: Settings | None = None) -> Summary:
    """The worker's summary job: read the session's transcript, write its summary."""
    settings = settings or _worker_settings()
    store = _store(settings)
    try:
        turns = store.turns(session_id)
        summary = None
        if settings.azure_openai_chat_deployment:
            try:
                summary = azure_summary(
                    turns,
                    endpoint=settings.azure_openai_endpoint,
                    api_key=settings.azure_openai_api_key,
                    deployment=settings.azure_openai_chat_deployment,
                    api_version=settings.azure_openai_chat_api_version,
                )
            except Exception as exc:  # the model's answer, or none: the local summary
                log.warning("the chat model gave no summary (%s): the local one is kept", exc)
        if summary is None:
            summary = local_summary(turns)
        store.put_summary(session_id, summary)
        return summary
    finally:
        store.close()


def record_usage(
    session_id: str, closed_at: float, usage: dict[str, Any], settings: Settings | None = None
) -> None:
    """The worker's billing job: the room's usage row."""
    store = _store(settings or _worker_settings())
    try:
        store.put_usage(session_id, closed_at, msgspec.convert(usage, Usage), recorded_by="worker")
    finally:
        store.close()


_settings: Settings | None = None


def _worker_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def _configure(app: celery.Celery, broker_url: str, timeout_s: float) -> None:
    app.conf.update(
        broker_url=broker_url,
        task_ignore_result=True,
        result_backend=None,
        accept_content=["json"],
        task_serializer="json",
        # A dead broker fails a send within the timeout instead of retrying for ever.
        broker_connection_timeout=timeout_s,
        broker_connection_retry=False,
        broker_connection_max_retries=0,
        broker_connection_retry_on_startup=True,
        task_publish_retry=False,
        broker_transport_options={
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "max_retries": 0,
        },
        # A job whose worker died mid-run runs again on another.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
    )


def make_app(broker_url: str = "", timeout_s: float = 2.0) -> celery.Celery:
    """The worker's Celery app, its tasks registered (``broker_url`` empty: from the env)."""
    from celery import Celery

    settings = _worker_settings() if not broker_url else None
    url = broker_url or (settings.celery_broker_url if settings else "")
    app = Celery("voice_trio")
    _configure(app, url, timeout_s if settings is None else settings.jobs_timeout_s)

    @app.task(name=SUMMARIZE)  # type: ignore[untyped-decorator]
    def _summarize(session_id: str) -> None:
        summary = summarize(session_id)
        log.info("summary of %s written (%s)", session_id, summary.written_by)

    @app.task(name=RECORD_USAGE)  # type: ignore[untyped-decorator]
    def _record_usage(session_id: str, closed_at: float, usage: dict[str, Any]) -> None:
        record_usage(session_id, closed_at, usage)

    return app


_app: celery.Celery | None = None


def __getattr__(name: str) -> Any:
    # `celery -A voice_trio.jobs` looks up `app` here: made (with Celery) on first use.
    global _app
    if name == "app":
        if _app is None:
            _app = make_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------ the server side


class JobQueue:
    """The server's side: closed rooms' jobs, handed to the broker off the event loop.

    :meth:`room_committed` is called on the loop (once the room's records are in
    the transcript store) and only appends. :meth:`run` sends in a thread, one
    call at a time; a send that fails or outlasts ``timeout_s`` drops its jobs
    and hands their rooms to ``fallback`` (the store writes their summary and usage).
    """

    def __init__(
        self,
        broker_url: str,
        *,
        max_bytes: int,
        timeout_s: float,
        fallback: Callable[[RoomClosed], None],
        dropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.broker_url = broker_url
        self.timeout_s = timeout_s
        self.backlog: Backlog[RoomClosed] = Backlog(max_bytes)
        self._fallback = fallback
        self._dropped = dropped
        self._producer: celery.Celery | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._log = RateLimitedLog(log, level=logging.WARNING)
        self.sent = 0

    def room_committed(self, record: RoomClosed) -> None:
        if not self.backlog.put(record, RECORD_OVERHEAD + len(record.reason)):
            self._drop([record], "backlog full")

    def _drop(self, records: list[RoomClosed], why: str) -> None:
        self._dropped(2 * len(records))  # two jobs per room
        self._log.log(
            "dropped",
            "background jobs of %d rooms not sent (%s): their summary and usage are written here",
            len(records),
            why,
        )
        for record in records:
            self._fallback(record)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await self._drain()
        finally:
            # Stopping: the rooms whose jobs were not sent get their results from the store.
            for record, _ in self.backlog.take(len(self.backlog)):
                self._fallback(record)

    async def _drain(self) -> None:
        while True:
            await self.backlog.wait()
            batch = [record for record, _ in self.backlog.take(SEND_BATCH)]
            try:
                failure = await self._send_batch(batch)
            except BaseException:
                # Stopping mid-send: whether or not the broker has them, the store
                # writes their results (the same rows a worker would write).
                for record in batch:
                    self._fallback(record)
                raise
            if failure is not None:
                self._drop(batch, failure)
                await trio.sleep(BACKOFF_S)

    async def _send_batch(self, batch: list[RoomClosed]) -> str | None:
        """Send one batch; None, or why it failed."""
        # The thread cannot be cancelled: it is given up (abandoned) at the deadline,
        # and its sends bounded by the broker timeouts.
        with trio.move_on_after(self.timeout_s * 2 + 1):
            try:
                self.sent += await trio.to_thread.run_sync(
                    self._send, batch, limiter=self._limiter, abandon_on_cancel=True
                )
                return None
            except Exception as exc:
                return type(exc).__name__
        return "broker too slow"

    def _send(self, batch: list[RoomClosed]) -> int:
        if self._producer is None:
            from celery import Celery

            producer = Celery("voice_trio")
            _configure(producer, self.broker_url, self.timeout_s)
            self._producer = producer
        for record in batch:
            self._producer.send_task(SUMMARIZE, args=[record.session_id])
            self._producer.send_task(
                RECORD_USAGE,
                args=[record.session_id, record.at, msgspec.to_builtins(record.usage)],
            )
        return len(batch)
