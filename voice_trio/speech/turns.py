"""How a Vietnamese transcript reads for turn-taking (pure text logic, no model).

Two questions the embedded brain asks of what the recognizer heard so far:

- :func:`reads_unfinished`: does the speaker stop in the middle of a phrase? A
  trailing continuation word ("và", "nhưng", "thì", "là"...) or a trailing comma
  or ellipsis says the sentence goes on, so a pause there is not the end of the
  turn (DESIGN.md section 10).
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


def is_backchannel(text: str) -> bool:
    """True when ``text`` has words and all of them are backchannel words ("dạ vâng")."""
    said = words(text)
    return bool(said) and all(w in _BACKCHANNEL_WORDS for w in said)
