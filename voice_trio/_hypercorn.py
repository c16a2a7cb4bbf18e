"""A small, version-pinned adaptation of Hypercorn's WebSocket handshake.

Hypercorn 0.18 accepts permessage-deflate whenever a client offers it (browsers
always do) and has no setting to refuse it. Deflating PCM costs far more CPU
than it saves bytes (DESIGN.md section 1), so the server answers every
handshake as if no extension had been offered. RFC 6455 allows a server to
decline any extension; the client then sends plain frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hypercorn
from hypercorn.protocol import ws_stream

__all__ = ["refuse_permessage_deflate"]

_SUPPORTED = ("0.18.0",)


def refuse_permessage_deflate() -> None:
    """Patch ``ws_stream.Handshake.accept`` once; idempotent."""
    handshake = ws_stream.Handshake
    if getattr(handshake.accept, "_voice_trio_no_deflate", False):
        return
    version = getattr(hypercorn, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("hypercorn")
    if version not in _SUPPORTED:
        raise RuntimeError(
            f"voice_trio adapts Hypercorn {', '.join(_SUPPORTED)}'s WebSocket handshake; "
            f"found Hypercorn {version}. Install the pinned version (see pyproject.toml)."
        )
    original = handshake.accept

    def accept(
        self: Any, subprotocol: str | None, additional_headers: Iterable[tuple[bytes, bytes]]
    ) -> Any:
        self.extensions = None  # decline every offered extension
        return original(self, subprotocol, additional_headers)

    accept._voice_trio_no_deflate = True  # type: ignore[attr-defined]
    handshake.accept = accept  # type: ignore[method-assign]
