"""How a Vietnamese transcript reads for turn-taking (pure text logic, no model).

Two questions the embedded brain asks of what the recognizer heard so far:

- :func:`reads_unfinished`: does the speaker stop in the middle of a phrase? A
  trailing continuation word ("và", "nhưng", "thì", "là"...) or a trailing comma
  or ellipsis says the sentence goes on, so a pause there is not the end of the
  turn (DESIGN.md section 10).
- :func:`ends_in_prompt_piece`: did the recognizer finish an unclear ending with
  words of its own prompt (the recognition hints)? Then the transcript's end is
  not evidence that the sentence ended.
- :func:`is_backchannel`: is it only "dạ", "vâng", "ừ"... said over the agent to
  show one listens? Such words do not interrupt the agent.

Both read words, not letters: tone marks count ("là" is a continuation, "lá" a
leaf), and casing and punctuation do not.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

__all__ = [
    "BACKCHANNELS",
    "CONTINUATIONS",
    "Reading",
    "ends_in_prompt_piece",
    "is_backchannel",
    "reading",
    "reads_unfinished",
    "words",
]

#: Words after which a Vietnamese clause goes on (conjunctions, copula, particles
#: that need what follows): a pause after one of them is mid-sentence.
CONTINUATIONS = frozenset(
    {"và", "nhưng", "nên", "thì", "là", "mà", "của", "để", "hoặc", "hay", "với", "vì",
     "nếu", "khi", "còn", "rằng", "cho", "bởi", "tại", "hoặc là", "hay là", "vì vậy"}
)  # fmt: skip

#: What a listener says over the speaker without taking the turn.
BACKCHANNELS = frozenset(
    {"dạ", "vâng", "ừ", "ừm", "ừ ừ", "à", "ờ", "ạ", "ok", "okay", "ô kê", "uh", "um", "hmm",
     "hm", "ừa", "dạ vâng", "vâng ạ", "dạ ạ", "ờ ờ", "à à", "ừm ừm", "um um", "ồ", "ơ"}
)  # fmt: skip
_BACKCHANNEL_WORDS = frozenset(w for phrase in BACKCHANNELS for w in phrase.split())

_WORD = re.compile(r"[^\W_]+")
# A clause left open in writing: a trailing comma, dash, colon or ellipsis.
_OPEN_END = re.compile(r"(?:,|;|:|-|–|—|\.\.\.|…)\s*$")

Reading = Literal["unfinished", "complete", "unclear"]


def words(text: str) -> list[str]:
    """The words of ``text``: NFC, lower case, no punctuation."""
    return _WORD.findall(unicodedata.normalize("NFC", text).lower())


def reads_unfinished(text: str) -> bool:
    """True when ``text`` stops mid-phrase: a trailing continuation word, comma or ellipsis."""
    stripped = unicodedata.normalize("NFC", text).strip()
    if not stripped:
        return False
    if _OPEN_END.search(stripped):
        return True
    said = words(stripped)
    if not said:
        return False
    return said[-1] in CONTINUATIONS or " ".join(said[-2:]) in CONTINUATIONS


def reading(text: str) -> Reading:
    """``unfinished`` (:func:`reads_unfinished`), ``complete`` (a sentence that ends:
    ``.``, ``!`` or ``?``) or ``unclear`` (no mark either way)."""
    if reads_unfinished(text):
        return "unfinished"
    return "complete" if re.search(r"[.!?]\s*$", text.strip()) else "unclear"


# Where a transcript's clauses (and a hint prompt's phrases) part.
_CLAUSE_BREAK = re.compile(r"[,;:.!?…]+")


def _clauses(text: str) -> list[list[str]]:
    return [said for part in _CLAUSE_BREAK.split(text) if (said := words(part))]


def ends_in_prompt_piece(text: str, prompt: str | None) -> bool:
    """True when the last clause of ``text`` is two or more words from the tail or the
    middle of one of the ``prompt``'s phrases (not the whole of it, nor its start),
    after words of its own.

    Whisper fills an ending it hears badly (a quiet "và" before a pause) with words
    of its prompt: "Tôi muốn đặt lịch hẹn và" came out "Tôi muốn đặt lịch hẹn, mấy
    giờ." with "bây giờ là mấy giờ" among the hints. That is not evidence that the
    sentence ended. A whole hint phrase as the last clause ("Vâng, đúng rồi.") is an
    answer, and so is the start of one ("Dạ, mười giờ." of "mười giờ sáng").
    """
    if not prompt:
        return False
    clauses = _clauses(text)
    if len(clauses) < 2:
        return False
    tail = clauses[-1]
    if len(tail) < 2:
        return False  # one word inside a hint ("..., lịch.") is too little to say so
    for phrase in _clauses(prompt):
        if len(tail) >= len(phrase):
            continue
        for i in range(1, len(phrase) - len(tail) + 1):
            if phrase[i : i + len(tail)] == tail:
                return True
    return False


def is_backchannel(text: str) -> bool:
    """True when ``text`` has words and all of them are backchannel words ("dạ vâng")."""
    said = words(text)
    return bool(said) and all(w in _BACKCHANNEL_WORDS for w in said)
