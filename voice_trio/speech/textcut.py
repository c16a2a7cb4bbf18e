"""Cut streamed text into clauses for clause-by-clause speech synthesis.

Boundaries: ``. ! ? ; : …`` (runs such as ``?!`` or ``...``, plus closing quotes or
brackets) followed by white space; line breaks; a comma followed by white space once
the clause is long (``comma_min_chars``); and, with no boundary at all, the last space
before ``max_chars``. ``3.5``, ``10:30`` and ``1.000.000`` are never cut (no space after
the mark), nor common abbreviations such as ``TP.`` or ``BS.``. Cuts fall only on
punctuation and spaces, so Vietnamese letters and their tone marks stay whole; clauses
come out NFC-normalised and stripped, and clauses with no letter or digit are dropped.
"""

from __future__ import annotations

import unicodedata

from ..errors import ConfigError

__all__ = ["ClauseCutter", "split_clauses"]

_STRONG = frozenset(".!?;:…。！？；：")
_COMMA = frozenset(",，、")
_CLOSERS = frozenset("\"'”’)]}»›")
_ABBREVIATIONS = frozenset(
    {
        "tp",
        "q",
        "p",
        "tx",
        "ts",
        "ths",
        "bs",
        "gs",
        "pgs",
        "ks",
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "no",
    }
)


def _is_abbreviation(buf: str, dot: int) -> bool:
    start = dot
    while start > 0 and buf[start - 1].isalpha():
        start -= 1
    word = buf[start:dot]
    return (
        bool(word)
        and word.lower() in _ABBREVIATIONS
        and (start == 0 or not buf[start - 1].isalnum())
    )


def _next_cut(buf: str, *, comma_min_chars: int, max_chars: int) -> int | None:
    """Index just past the first clause boundary in ``buf``, or None if not decided yet."""
    last_space = -1
    i = 0
    n = len(buf)
    while i < n:
        ch = buf[i]
        if ch in "\n\r\u2028\u2029":
            return i + 1
        if ch in _STRONG or ch in _COMMA:
            j = i
            while j < n and (buf[j] in _STRONG or buf[j] in _COMMA):
                j += 1
            while j < n and buf[j] in _CLOSERS:
                j += 1
            if j == n:
                return None  # the next character decides ("3." may become "3.5")
            if buf[j].isspace():
                run = buf[i:j]
                if any(c in _STRONG for c in run):
                    if not (run == "." and _is_abbreviation(buf, i)):
                        return j
                elif len(buf[:i].strip()) >= comma_min_chars:
                    return j
            i = j
            continue
        if ch.isspace():
            last_space = i
        if i >= max_chars:
            return last_space + 1 if last_space > 0 else i
        i += 1
    return None


def _clean(clause: str) -> str | None:
    clause = unicodedata.normalize("NFC", clause.strip())
    return clause if any(c.isalnum() for c in clause) else None


class ClauseCutter:
    """Incremental clause cutter for text deltas (e.g. from a language model).

    :meth:`feed` returns the clauses completed so far; :meth:`flush` returns the rest
    at the end of the text. The pending text stays under ``max_chars`` plus one delta.
    """

    __slots__ = ("_buf", "comma_min_chars", "max_chars")

    def __init__(self, *, comma_min_chars: int = 30, max_chars: int = 200) -> None:
        if max_chars < 1 or comma_min_chars < 0:
            raise ConfigError("max_chars must be >= 1 and comma_min_chars >= 0")
        self.comma_min_chars = comma_min_chars
        self.max_chars = max_chars
        self._buf = ""

    @property
    def pending(self) -> str:
        return self._buf

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        clauses: list[str] = []
        while (
            cut := _next_cut(
                self._buf, comma_min_chars=self.comma_min_chars, max_chars=self.max_chars
            )
        ) is not None:
            clause, self._buf = self._buf[:cut], self._buf[cut:]
            if (cleaned := _clean(clause)) is not None:
                clauses.append(cleaned)
        return clauses

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, ""
        cleaned = _clean(rest)
        return [cleaned] if cleaned is not None else []


def split_clauses(text: str, *, comma_min_chars: int = 30, max_chars: int = 200) -> list[str]:
    """Cut a whole text into clauses (see the module docstring for the rules)."""
    cutter = ClauseCutter(comma_min_chars=comma_min_chars, max_chars=max_chars)
    return [*cutter.feed(text), *cutter.flush()]
