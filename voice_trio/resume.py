"""Resume: a conversation outlives its connection, and (with Redis) its instance (issue #13).

After each turn a room's :class:`~voice_trio.session.Session` is marked; one task
per process (:meth:`SessionKeeper.run`) snapshots the marked sessions a few times
a second and keeps them for ``SESSION_RESUME_TTL_S``: in this process's memory
(bounded in bytes, oldest out first) and, with ``REDIS_URL``, in Redis under
``{REDIS_PREFIX}session:{id}``. A room opened for a session id that is kept gets
it back (:meth:`SessionKeeper.find`), on this instance or another: the agent
graph's node and slots, the recent turns as heard, the client's options.

Nothing waits on this: marking is a set insertion; a Redis read at a room's
start has the REDIS_TIMEOUT_S deadline, and Redis slow or down only means the
conversation starts afresh on another instance (counted in
``voice_trio_redis_errors_total{op="resume"}``).
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Final

import trio

from .session import Session

if TYPE_CHECKING:
    from .agent import Graph
    from .cluster import Cluster

__all__ = ["SessionKeeper"]

log = logging.getLogger("voice_trio.resume")

#: Seconds between two passes over the marked sessions.
KEEP_INTERVAL_S: Final = 0.25


class SessionKeeper:
    """The sessions a process keeps for resume."""

    def __init__(self, *, ttl_s: float, max_bytes: int) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        #: Redis, when the app has a cluster (set at start-up).
        self.cluster: Cluster | None = None
        #: The agent graph conversations are restored on.
        self.graph: Graph | None = None
        self._marked: dict[str, Session] = {}
        self._wake = trio.Event()
        # session id -> (kept until, snapshot), oldest first.
        self._kept: collections.OrderedDict[str, tuple[float, bytes]] = collections.OrderedDict()
        self._bytes = 0
        self.saved = self.restored = 0

    def mark(self, session: Session) -> None:
        """``session`` changed (a turn ended, the room closed): keep it again soon."""
        self._marked[session.session_id] = session
        self._wake.set()

    async def find(self, session_id: str) -> Session | None:
        """The kept session of ``session_id`` (here, else in Redis), or None."""
        self._expire(trio.current_time())
        kept = self._kept.get(session_id)
        data = kept[1] if kept is not None else None
        if data is None and self.cluster is not None:
            value = await self.cluster.get_value(f"session:{session_id}", "resume")
            data = value.encode() if value is not None else None
        if data is None:
            return None
        session = Session.restore(session_id, data, self.graph)
        if session is not None:
            self.restored += 1
        return session

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await self._keep_marked()
                await trio.sleep(KEEP_INTERVAL_S)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await self._keep_marked()  # the rooms closed by a shutdown are kept too

    async def _keep_marked(self) -> None:
        marked, self._marked = self._marked, {}
        now = trio.current_time()
        for session_id, session in marked.items():
            data = session.snapshot()
            if data is None:
                continue
            self._put(session_id, data, now)
            self.saved += 1
            if self.cluster is not None:
                await self.cluster.set_value(
                    f"session:{session_id}", data.decode(), int(self.ttl_s * 1000), "resume"
                )
        self._expire(now)

    def _put(self, session_id: str, data: bytes, now: float) -> None:
        old = self._kept.pop(session_id, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._kept[session_id] = (now + self.ttl_s, data)
        self._bytes += len(data)
        while self._bytes > self.max_bytes and self._kept:
            _, (_, dropped) = self._kept.popitem(last=False)
            self._bytes -= len(dropped)

    def _expire(self, now: float) -> None:
        kept = self._kept
        while kept:
            session_id, (until, data) = next(iter(kept.items()))
            if until > now:
                return
            del kept[session_id]
            self._bytes -= len(data)
