"""Vietnamese text as the agent's rules read it: words, numbers, days, times, names.

Speech recognition and typing give the same words in many shapes: with or
without tone marks ("đặt lịch", "dat lich"), with the tone mark on either vowel
("hủy", "huỷ"), with odd casing and little punctuation. An :class:`Utterance`
holds the words of one turn in three forms, and :meth:`Utterance.has` matches a
phrase word by word:

- a word written *with* marks matches only the same word (the tone may sit on
  either vowel), so "tạm" (as in "tạm biệt") never reads as "tám" (eight);
- a word written *without* any mark matches every word that has the same
  letters once the marks are stripped, so "tam" may be "tám".

On top of that: number words (:func:`parse_number`), clock times
(:func:`parse_time`), days relative to a given ``today`` (:func:`parse_day`),
a person's name (:func:`extract_name`), a code read digit by digit
(:func:`code_span`), yes or no (:func:`yes_or_no`), and the way back into
natural Vietnamese (:func:`format_date`, :func:`format_time`, :func:`format_code`).
When one turn holds two days or two times ("ngày mai, à không, ngày kia") the
last one wins: a speaker corrects forward.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "WEEKDAYS",
    "Utterance",
    "Word",
    "code_span",
    "extract_name",
    "format_code",
    "format_date",
    "format_time",
    "name_key",
    "near_miss",
    "normalize",
    "parse_day",
    "parse_number",
    "parse_time",
    "say_number",
    "strip_tones",
    "yes_or_no",
]

#: Monday first, as ``date.weekday()`` counts.
WEEKDAYS = ("thứ Hai", "thứ Ba", "thứ Tư", "thứ Năm", "thứ Sáu", "thứ Bảy", "Chủ nhật")

# The five tone marks (combining, after NFD) and the digit each becomes in a key.
_TONES = {"\u0301": "1", "\u0300": "2", "\u0309": "3", "\u0303": "4", "\u0323": "5"}
# Numbers with separators stay one token: 10:30, 25/12, 25/12/2025, 10h30, 10h, 9g.
_TOKEN = re.compile(r"\d+(?:[:/.\-]\d+)+|\d+[hg]\d+|\d+[hg](?![^\W\d_])|\d+|[^\W\d_]+")


def normalize(text: str) -> str:
    """NFC, lower case, punctuation out, single spaces: ``"Đặt  Lịch!"`` -> ``"đặt lịch"``."""
    return " ".join(m.group() for m in _TOKEN.finditer(unicodedata.normalize("NFC", text).lower()))


def strip_tones(text: str) -> str:
    """Every diacritic removed and ``đ`` -> ``d``: ``"Đặt lịch"`` -> ``"Dat lich"``."""
    decomposed = unicodedata.normalize("NFD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.replace("đ", "d").replace("Đ", "D")


def _key(word: str) -> str:
    """The word with its tone mark taken off the vowel and put at the end as a digit.

    ``"hủy"`` and ``"huỷ"`` both give ``"huy3"``; vowel marks (``ă â ê ô ơ ư``) stay.
    """
    decomposed = unicodedata.normalize("NFD", word)
    tones = "".join(_TONES[c] for c in decomposed if c in _TONES)
    base = "".join(c for c in decomposed if c not in _TONES)
    return unicodedata.normalize("NFC", base) + tones


def name_key(name: str) -> str:
    """A person's name for comparison: no marks, lower case, single spaces."""
    return strip_tones(normalize(name))


@dataclass(frozen=True, slots=True)
class Word:
    """One word of an utterance."""

    #: As written (NFC), original case: used for names.
    orig: str
    #: Lower case, NFC.
    text: str
    #: No marks at all: ``"dat"``.
    plain: str
    #: Tone-placement independent: ``"đăt5"``.
    key: str

    @property
    def marked(self) -> bool:
        """Written with at least one diacritic (or ``đ``)."""
        return self.text != self.plain

    def matches(self, other: Word) -> bool:
        """Same word as ``other`` (a phrase's word); written without marks, any with its letters."""
        if self.key == other.key:
            return True
        return not self.marked and self.plain == other.plain

    @classmethod
    def of(cls, orig: str) -> Word:
        text = orig.lower()
        return cls(orig=orig, text=text, plain=strip_tones(text), key=_key(text))


@lru_cache(maxsize=4096)
def _phrase(phrase: str) -> tuple[Word, ...]:
    return tuple(Word.of(m.group()) for m in _TOKEN.finditer(unicodedata.normalize("NFC", phrase)))


class Utterance:
    """The words of one user turn, for matching rules against.

    ``breaks`` holds the indices of words that follow punctuation (a comma, a
    full stop): a name or a number does not run across one.
    """

    __slots__ = ("raw", "words", "breaks")

    def __init__(self, raw: str, words: tuple[Word, ...], breaks: frozenset[int]) -> None:
        self.raw = raw
        self.words = words
        self.breaks = breaks

    @classmethod
    def of(cls, text: str | Utterance) -> Utterance:
        if isinstance(text, Utterance):
            return text
        raw = unicodedata.normalize("NFC", text)
        words: list[Word] = []
        breaks: set[int] = set()
        last_end = 0
        for m in _TOKEN.finditer(raw):
            between = raw[last_end : m.start()]
            if words and any(not c.isspace() for c in between):
                breaks.add(len(words))
            words.append(Word.of(m.group()))
            last_end = m.end()
        return cls(text, tuple(words), frozenset(breaks))

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        return f"Utterance({self.raw!r})"

    @property
    def text(self) -> str:
        """Normalised: lower case, NFC, no punctuation."""
        return " ".join(w.text for w in self.words)

    @property
    def plain(self) -> str:
        """Normalised and without marks: ``"dat lich"``."""
        return " ".join(w.plain for w in self.words)

    def word_is(self, index: int, *choices: str) -> bool:
        """The word at ``index`` (if any) is one of ``choices`` (single words)."""
        if not 0 <= index < len(self.words):
            return False
        word = self.words[index]
        return any(len(p := _phrase(c)) == 1 and word.matches(p[0]) for c in choices)

    def find(self, phrase: str, start: int = 0) -> int:
        """Index of the first word of ``phrase`` at or after ``start``, or -1."""
        want = _phrase(phrase)
        if not want:
            return -1
        words = self.words
        for i in range(start, len(words) - len(want) + 1):
            if all(words[i + k].matches(w) for k, w in enumerate(want)):
                return i
        return -1

    def has(self, *phrases: str) -> bool:
        """Any of ``phrases`` occurs (word by word, see the module docstring)."""
        return any(self.find(p) >= 0 for p in phrases)

    def spans(self, phrases: Iterable[str]) -> list[tuple[int, int]]:
        """Every (start, end) where one of ``phrases`` occurs."""
        found = []
        for p in phrases:
            n = len(_phrase(p))
            i = self.find(p)
            while i >= 0:
                found.append((i, i + n))
                i = self.find(p, i + 1)
        return found

    def without(self, start: int, end: int) -> Utterance:
        """The same utterance with words ``start:end`` left out."""
        words = self.words[:start] + self.words[end:]
        shift = end - start
        breaks = {i if i < start else i - shift for i in self.breaks if not start < i < end}
        if start > 0 and start < len(words):
            breaks.add(start)  # what was around the cut does not join into one phrase
        return Utterance(self.raw, words, frozenset(breaks))


def near_miss(text: str | Utterance, choices: Iterable[str], *, cutoff: float = 0.7) -> str | None:
    """The choice that some words of ``text`` come closest to, marks ignored, if close enough.

    For a recogniser's near misses of an expected answer: "Tư sau" -> "thứ Sáu",
    "Vân, cúng sôi" -> "vâng, đúng rồi". Each choice is compared (as letters without
    marks) with every run of as many words of ``text``, one more and one fewer; the
    best ratio at or above ``cutoff`` wins, ties to the earlier choice. A near miss is
    a guess: confirm it with the caller before acting on it.
    """
    words = [w.plain for w in Utterance.of(text).words]
    best: tuple[float, str] | None = None
    for choice in choices:
        want = [w.plain for w in _phrase(choice)]
        target = " ".join(want)
        if not want or len(target) < 3:
            continue
        for n in {max(1, len(want) - 1), len(want), len(want) + 1}:
            for i in range(len(words) - n + 1):
                ratio = difflib.SequenceMatcher(None, " ".join(words[i : i + n]), target).ratio()
                if ratio >= cutoff and (best is None or ratio > best[0]):
                    best = (ratio, choice)
    return None if best is None else best[1]


# ------------------------------------------------------------------ numbers

_UNIT_WORDS = {
    "một": 1, "hai": 2, "ba": 3, "bốn": 4, "năm": 5,
    "sáu": 6, "bảy": 7, "bẩy": 7, "tám": 8, "chín": 9,
}  # fmt: skip
# Forms used only after a tens word: hai mươi mốt, hai mươi tư, mười lăm.
_AFTER_TENS_WORDS = {**_UNIT_WORDS, "mốt": 1, "tư": 4, "lăm": 5, "nhăm": 5}
_COLLOQUIAL_ONES = {"mốt": 1, "tư": 4, "lăm": 5}  # "hai lăm" = 25, "ba mốt" = 31
# "Hai mươi" and "ba mươi" said in one syllable, always with a unit after them:
# "hăm lăm" = 25, "hăm mốt" = 21 (not "the day after tomorrow"), "băm mốt" = 31.
_CONTRACTED_TENS_WORDS = {"hăm": 20, "băm": 30}


def _lexicon(table: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    by_key = {_key(w): v for w, v in table.items()}
    by_plain: dict[str, int] = {}
    for w, v in table.items():
        by_plain.setdefault(strip_tones(w), v)
    return by_key, by_plain


_UNITS = _lexicon(_UNIT_WORDS)
_AFTER_TENS = _lexicon(_AFTER_TENS_WORDS)
_COLLOQUIAL = _lexicon(_COLLOQUIAL_ONES)
_CONTRACTED_TENS = _lexicon(_CONTRACTED_TENS_WORDS)


def _lookup(word: Word, lexicon: tuple[dict[str, int], dict[str, int]]) -> int | None:
    by_key, by_plain = lexicon
    value = by_key.get(word.key)
    if value is None and not word.marked:
        value = by_plain.get(word.plain)
    return value


def _is(word: Word, *choices: str) -> bool:
    return any(len(p := _phrase(c)) == 1 and word.matches(p[0]) for c in choices)


def _tens(words: tuple[Word, ...], i: int) -> tuple[int, int] | None:
    """0..99 in words from ``words[i]``: (value, index after)."""
    n = len(words)
    if i >= n:
        return None
    tens = _lookup(words[i], _CONTRACTED_TENS)
    if tens is not None and i + 1 < n and (u := _lookup(words[i + 1], _AFTER_TENS)) is not None:
        return tens + u, i + 2
    if _is(words[i], "mười", "mươi"):
        value, j = 10, i + 1
        if j < n and (u := _lookup(words[j], _AFTER_TENS)) is not None:
            value, j = 10 + u, j + 1
        return value, j
    d = _lookup(words[i], _UNITS)
    if d is None:
        return None
    j = i + 1
    if j < n and _is(words[j], "mươi", "mười"):
        value, j = d * 10, j + 1
        if j < n and (u := _lookup(words[j], _AFTER_TENS)) is not None:
            value, j = value + u, j + 1
        return value, j
    if d >= 2 and j < n and (u := _lookup(words[j], _COLLOQUIAL)) is not None:
        return d * 10 + u, j + 1
    return d, j


def _below_thousand(words: tuple[Word, ...], i: int) -> tuple[int, int] | None:
    n = len(words)
    if i < n and _is(words[i], "không") and i + 1 < n and _is(words[i + 1], "trăm"):
        hundreds, j = 0, i + 2
    elif i + 1 < n and (d := _lookup(words[i], _UNITS)) is not None and _is(words[i + 1], "trăm"):
        hundreds, j = d, i + 2
    else:
        return _tens(words, i)
    value = hundreds * 100
    if j < n and _is(words[j], "linh", "lẻ"):
        if j + 1 < n and (u := _lookup(words[j + 1], _UNITS)) is not None:
            return value + u, j + 2
        return value, j
    rest = _tens(words, j)
    if rest is not None:
        return value + rest[0], rest[1]
    return value, j


def _number_at(words: tuple[Word, ...], i: int) -> tuple[int, int] | None:
    """A number in digits or words starting at ``words[i]``: (value, index after)."""
    if i >= len(words):
        return None
    if words[i].text.isdigit():
        return int(words[i].text), i + 1
    first = _below_thousand(words, i)
    if first is None:
        return None
    value, j = first
    if j < len(words) and _is(words[j], "nghìn", "ngàn"):
        value, j = value * 1000, j + 1
        rest = _below_thousand(words, j)
        if rest is not None:
            value, j = value + rest[0], rest[1]
    return value, j


def parse_number(text: str | Utterance) -> int | None:
    """The whole text as one number: ``"hai mươi mốt"`` -> 21, ``"15"`` -> 15, else None."""
    utt = Utterance.of(text)
    found = _number_at(utt.words, 0)
    if found is None or found[1] != len(utt.words):
        return None
    return found[0]


# -------------------------------------------------------------------- codes

# One digit read aloud: "bốn tám hai chín một ba", "không" for 0 ("linh" too).
_DIGITS = _lexicon({**_UNIT_WORDS, "không": 0, "linh": 0})
_DIGIT_TOKEN = re.compile(r"\d+(?:[.\-]\d+)*")  # 482913, 482-913, 482.913
# Words that lead into a code and go with it: "mã", "mã số", "mã lịch hẹn của tôi là".
_CODE_LEAD = ("mã", "số", "lịch", "hẹn", "của", "tôi", "mình", "em", "là", "code")


def _digits_of(word: Word) -> tuple[str, bool] | None:
    """A word's digits, and whether it was a numeral (not a word like "bốn")."""
    if _DIGIT_TOKEN.fullmatch(word.text):
        return re.sub(r"\D", "", word.text), True
    value = _lookup(word, _DIGITS)
    return (str(value), False) if value is not None else None


def code_span(text: str | Utterance, digits: int = 6) -> tuple[str, tuple[int, int]] | None:
    """A code of exactly ``digits`` digits, in numerals or read digit by digit, and
    where it is (word indices, with the words that lead into it, "mã số ...").

    ``"mã 482 913"``, ``"bốn tám hai chín một ba"`` and ``"482-913"`` all give
    ``"482913"``. A run with digit words too many at its ends drops them ("Nam 482913":
    "Nam" may be "năm", five); numerals are never split, so a phone number is no code.
    """
    utt = Utterance.of(text)
    words = utt.words
    i = 0
    while i < len(words):
        if _digits_of(words[i]) is None:
            i += 1
            continue
        j = i
        run: list[tuple[str, bool]] = []
        while j < len(words) and (d := _digits_of(words[j])) is not None:
            run.append(d)
            j += 1
        start, end = i, j
        while sum(len(d) for d, _ in run) > digits and not run[0][1]:
            run.pop(0)
            start += 1
        while sum(len(d) for d, _ in run) > digits and not run[-1][1]:
            run.pop()
            end -= 1
        if sum(len(d) for d, _ in run) == digits:
            while start > 0 and utt.word_is(start - 1, *_CODE_LEAD):
                start -= 1
            return "".join(d for d, _ in run), (start, end)
        i = j
    return None


_SAY_UNITS = ("không", "một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín")


def say_number(n: int) -> str:
    """0..999 in words, as people say them: 21 "hai mươi mốt", 15 "mười lăm",
    24 "hai mươi tư", 105 "một trăm linh năm"."""
    if not 0 <= n <= 999:
        raise ValueError(f"say_number takes 0..999, not {n}")
    if n >= 100:
        hundreds, rest = divmod(n, 100)
        head = f"{_SAY_UNITS[hundreds]} trăm"
        if not rest:
            return head
        return f"{head} linh {_SAY_UNITS[rest]}" if rest < 10 else f"{head} {say_number(rest)}"
    tens, unit = divmod(n, 10)
    if tens == 0:
        return _SAY_UNITS[unit]
    head = "mười" if tens == 1 else f"{_SAY_UNITS[tens]} mươi"
    if unit == 0:
        return head
    if unit == 5:
        return f"{head} lăm"
    if unit == 1 and tens > 1:
        return f"{head} mốt"
    if unit == 4 and tens > 1:
        return f"{head} tư"
    return f"{head} {_SAY_UNITS[unit]}"


def format_code(code: str) -> str:
    """A code to read aloud digit by digit: ``"482913"`` -> ``"4 8 2 9 1 3"``."""
    return " ".join(code)


# -------------------------------------------------------------------- names

_NAME_INTROS = (
    "tên của tôi là", "tên tôi là", "tên mình là", "tên em là", "tên con là", "tên cháu là",
    "tôi tên là", "mình tên là", "em tên là", "con tên là", "cháu tên là",
    "đổi tên thành", "sửa tên thành", "tên thành", "đặt tên là", "đặt lịch cho",
    "đặt hẹn cho", "lịch hẹn cho", "đặt cho",
    "tôi tên", "mình tên", "em tên", "tên là", "cho tên", "tên",
    "lịch hẹn của", "lịch của", "dưới tên", "đứng tên",
    "tôi là", "mình là", "em là", "cháu là", "chị là", "anh là",
)  # fmt: skip
# Words that end a name (or show that what follows an intro is not one). Written
# with marks they are matched exactly; written without, only the plain forms below
# count, which leave out common names ("Thu", "Minh", "Thanh", "Dung", "Sang", "Hà").
_NAME_STOPS = frozenset(
    _key(w)
    for w in (
        "và với muốn cần đặt lịch hẹn ngày hôm vào lúc thứ giờ sáng trưa chiều tối đêm tuần "
        "tháng ạ à nhé nha nhá đây ơi nhỉ đó này ấy có không ko được rồi là thì mà nhưng "
        "cho để tôi mình bạn đi ai gì người khách bệnh nhân hủy huỷ xem kiểm cảm ơn chào xin "
        "vâng dạ đúng sai ok nay qua kia mốt gọi nói hỏi bao nhiêu mấy sẽ đang đã thành tên "
        "số điện thoại khám lại luôn nữa ừ ờ ừm uh hello hi alo thôi dừng muốn"
    ).split()
)
_PLAIN_NAME_STOPS = frozenset(
    "va voi muon can lich hen ngay hom vao luc gio chieu trua a nhe nha day oi do nay ay co "
    "khong ko duoc roi la ma nhung cho de toi ban di ai gi nguoi khach benh xem kiem cam on "
    "chao xin vang da sai ok qua kia goi noi hoi bao nhieu may se ten so dien thoai kham luon "
    "nua uh hello hi alo thoi".split()
)
# Phrases that end a name where their first word, alone, may be a name ("Đạt", "Tuấn").
_NAME_END_PHRASES = ("đặt lịch", "đặt hẹn", "đặt cho", "tuần sau", "tuần tới", "tuần này",
                     "tháng sau", "tháng tới", "tháng này")  # fmt: skip
_POLITE = ("dạ", "ạ", "là", "tên", "nhé", "nha", "vâng", "em", "của")


def _stop(word: Word) -> bool:
    return word.key in _NAME_STOPS or (not word.marked and word.plain in _PLAIN_NAME_STOPS)


def _title(word: Word) -> str:
    return word.orig[:1].upper() + word.orig[1:].lower()


def _starts_time(utt: Utterance, i: int) -> bool:
    """A number in words starts here and an hour follows it: "... Thu Hà chín giờ rưỡi"."""
    number = _number_at(utt.words, i)
    if number is None or number[0] > 24 or number[1] in utt.breaks:
        return False  # "Bảy mười rưỡi" is Bảy and 10:30, not 70
    return utt.word_is(number[1], "giờ", "rưỡi")


def name_span(text: str | Utterance) -> tuple[int, int] | None:
    """Where a self-introduction's name is: (start, end) word indices, or None."""
    utt = Utterance.of(text)
    words = utt.words
    best: tuple[int, int] | None = None
    for intro in _NAME_INTROS:
        n = len(_phrase(intro))
        i = utt.find(intro)
        while i >= 0:
            start = end = i + n
            while (
                end < len(words)
                and end - start < 4
                and words[end].text.isalpha()
                and not _stop(words[end])
                and (end == start or end not in utt.breaks)
                and _weekday_at(utt, end) is None
                and not _starts_time(utt, end)
                and not any(utt.find(p, end) == end for p in _NAME_END_PHRASES)
            ):
                end += 1
            if end > start and (best is None or start < best[0]):
                best = (start, end)
            i = utt.find(intro, i + 1)
        if best is not None:
            return best  # the longest intro that matched wins
    return None


def extract_name(text: str | Utterance, *, bare: bool = False) -> str | None:
    """The name in "tôi tên là Lan", "tên tôi là Nguyễn Văn An", "mình là Minh".

    ``bare=True`` also takes an answer that is only a name ("Lan ạ", "dạ Nguyễn
    Văn An"), for when the agent has just asked for one. Names come back title-cased.
    """
    utt = Utterance.of(text)
    span = name_span(utt)
    if span is not None:
        return " ".join(_title(w) for w in utt.words[span[0] : span[1]])
    if not bare:
        return None
    words = [w for w in utt.words if not _is(w, *_POLITE)]
    if not 1 <= len(words) <= 4:
        return None
    if any(not w.text.isalpha() or _stop(w) for w in words):
        return None
    return " ".join(_title(w) for w in words)


# -------------------------------------------------------------------- times

_HOUR_WORDS = ("giờ", "h", "g")
_PERIODS = {"sáng": "morning", "trưa": "noon", "chiều": "afternoon", "tối": "evening",
            "đêm": "night", "khuya": "night"}  # fmt: skip
# Without marks, these are other common words ("tôi" = I, "sang" = over to): they
# count as a period only right next to the time.
_AMBIGUOUS_PLAIN_PERIODS = frozenset({"toi", "sang", "dem"})
_CLOCK_TOKEN = re.compile(r"(\d{1,2})([hg:])(\d{1,2})?")
_NOT_MINUTES = ("ngày", "tháng", "giờ", "hôm", "tuần", "năm")


def _period_at(utt: Utterance, i: int) -> str | None:
    if not 0 <= i < len(utt.words):
        return None
    for word, period in _PERIODS.items():
        if utt.words[i].matches(_phrase(word)[0]):
            return period
    return None


def _skip(utt: Utterance, i: int, step: int, *words: str) -> int:
    while 0 <= i < len(utt.words) and utt.word_is(i, *words):
        i += step
    return i


def _find_period(utt: Utterance, start: int, end: int) -> str | None:
    after = _period_at(utt, _skip(utt, end, 1, "buổi"))
    if after:
        return after
    before = _period_at(utt, _skip(utt, start - 1, -1, "lúc", "vào", "buổi"))
    if before:
        return before
    for i, word in enumerate(utt.words):
        period = _period_at(utt, i)
        if period and (word.marked or word.plain not in _AMBIGUOUS_PLAIN_PERIODS):
            return period
    return None


def _apply_period(hour: int, period: str | None, daytime: bool) -> int:
    if period == "morning":
        return 0 if hour == 12 else hour
    if period == "noon":
        return hour + 12 if 1 <= hour <= 4 else hour
    if period in ("afternoon", "evening"):
        return hour + 12 if hour < 12 else hour
    if period == "night":
        if hour == 12:
            return 0
        return hour + 12 if 6 <= hour < 12 else hour
    if daytime and 1 <= hour <= 6:
        return hour + 12
    return hour


def _times(utt: Utterance) -> list[tuple[int, int, int, int]]:
    """Every clock time as (start, end, hour, minute), hour as said (before the period),
    minutes negative for "kém" ("một giờ kém mười lăm": 1, -15)."""
    words = utt.words
    found = []
    i = 0
    while i < len(words):
        word = words[i]
        m = _CLOCK_TOKEN.fullmatch(word.text)
        if m is not None:
            found.append((i, i + 1, int(m.group(1)), int(m.group(3) or 0)))
            i += 1
            continue
        number = _number_at(words, i)
        if number is None:
            i += 1
            continue
        hour, j = number
        if j < len(words) and utt.word_is(j, *_HOUR_WORDS) and j not in utt.breaks:
            minute, end = _minutes(utt, j + 1)
            found.append((i, end, hour, minute))
            i = end
            continue
        if utt.word_is(j, "rưỡi") and j not in utt.breaks and hour <= 24:
            found.append((i, j + 1, hour, 30))  # "chín rưỡi": half past, "giờ" left out
            i = j + 1
            continue
        if i > 0 and utt.word_is(i - 1, "lúc") and not utt.word_is(j, *_NOT_MINUTES):
            minute, end = (30, j + 1) if utt.word_is(j, "rưỡi") else (0, j)
            found.append((i, end, hour, minute))
            i = end
            continue
        i = j
    return found


def _minutes(utt: Utterance, k: int) -> tuple[int, int]:
    """Minutes after "giờ" at ``words[k]``: (minutes, index after); negative for "kém"."""
    if k in utt.breaks:
        return 0, k
    if utt.word_is(k, "rưỡi"):
        return 30, k + 1
    if utt.word_is(k, "đúng"):
        return 0, k + 1
    if utt.word_is(k, "kém"):
        number = _number_at(utt.words, k + 1)
        if number is not None and 0 < number[0] < 60:
            end = number[1] + (1 if utt.word_is(number[1], "phút") else 0)
            return -number[0], end
        return 0, k
    number = _number_at(utt.words, k)
    if number is not None and number[0] < 60 and not utt.word_is(number[1], *_NOT_MINUTES):
        end = number[1] + (1 if utt.word_is(number[1], "phút") else 0)
        return number[0], end
    return 0, k


def parse_time(text: str | Utterance, *, daytime: bool = False) -> dt.time | None:
    """The clock time said in ``text`` (the last one if several), or None.

    "9 giờ", "chín giờ rưỡi" and "chín rưỡi" (9:30), "10h30", "10:30", "3 giờ chiều"
    (15:00), "mười giờ kém mười lăm" (9:45), "7 giờ tối" (19:00), "lúc 8". With
    ``daytime=True`` an hour from 1 to 6 said without a period ("3 giờ") is
    read as afternoon, as an office's callers mean it.
    """
    utt = _without_name(Utterance.of(text))
    times = _times(utt)
    if not times:
        return None
    start, end, hour, minute = times[-1]
    # The period goes with the hour as said: "một giờ kém mười lăm chiều" is 13:00 - 0:15.
    hour = _apply_period(hour, _find_period(utt, start, end), daytime)
    if minute < 0:
        hour, minute = (hour - 1) % 24, 60 + minute
    if hour == 24 and minute == 0:
        hour = 0
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    return dt.time(hour, minute)


# --------------------------------------------------------------------- days

_WEEKDAY_WORDS = {"hai": 0, "ba": 1, "tư": 2, "bốn": 2, "năm": 3, "sáu": 4, "bảy": 5, "bẩy": 5}
_RELATIVE = (
    ("hôm nay", 0), ("bữa nay", 0), ("sáng nay", 0), ("trưa nay", 0), ("chiều nay", 0),
    ("tối nay", 0), ("ngày mai", 1), ("ngày kia", 2), ("ngày mốt", 2), ("bữa mốt", 2),
    ("hôm qua", -1), ("bữa qua", -1), ("hôm kia", -2),
)  # fmt: skip
_DATE_TOKEN = re.compile(r"(\d{1,2})[/\-.](\d{1,2})(?:[/\-.](\d{2}|\d{4}))?")
_MONTH_NAMES = {"giêng": 1, "chạp": 12}


def _without_name(utt: Utterance) -> Utterance:
    span = name_span(utt)
    return utt.without(*span) if span else utt


def _make_date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _upcoming(month: int, day: int, today: dt.date) -> dt.date | None:
    """The day ``day``/``month`` on or after ``today``."""
    for year in (today.year, today.year + 1):
        date = _make_date(year, month, day)
        if date is not None and date >= today:
            return date
    return None


def _month_at(utt: Utterance, j: int, today: dt.date) -> tuple[int | None, int]:
    """The month after "tháng" at ``words[j]``: (month or None, index after)."""
    if utt.word_is(j, "sau", "tới", "này"):
        relative = 0 if utt.word_is(j, "này") else 1
        return (today.month - 1 + relative) % 12 + 1, j + 1
    for name, month in _MONTH_NAMES.items():
        if utt.word_is(j, name):
            return month, j + 1
    number = _number_at(utt.words, j)
    if number is not None and 1 <= number[0] <= 12:
        return number[0], number[1]
    return None, j


def _absolute(utt: Utterance, i: int, today: dt.date) -> tuple[dt.date | None, int] | None:
    """A day of the month from ``words[i]`` (a number): "25 tháng 12 năm 2025", "5"."""
    number = _number_at(utt.words, i)
    if number is None or not 1 <= number[0] <= 31:
        return None
    day, j = number
    if not utt.word_is(j, "tháng"):
        # "ngày 5": this month if still to come, else next month.
        if today.day <= day:
            return _make_date(today.year, today.month, day), j
        month = today.month % 12 + 1
        return _make_date(today.year + (month == 1), month, day), j
    said_month, j = _month_at(utt, j + 1, today)
    if said_month is None:
        return None
    month = said_month
    if utt.word_is(j, "năm") and (year := _number_at(utt.words, j + 1)) and year[0] >= 1900:
        return _make_date(year[0], month, day), year[1]
    return _upcoming(month, day, today), j


def _weekday_at(utt: Utterance, i: int) -> tuple[int, int] | None:
    """A weekday at ``words[i]`` ("thứ hai", "thứ 2", "chủ nhật", "cn"): (0..6, index after)."""
    if utt.word_is(i, "cn"):
        return 6, i + 1
    if utt.find("chủ nhật", i) == i or utt.find("chúa nhật", i) == i:
        return 6, i + 2
    if not utt.word_is(i, "thứ") or i + 1 >= len(utt.words):
        return None
    following = utt.words[i + 1]
    if following.text.isdigit() and 2 <= int(following.text) <= 7:
        return int(following.text) - 2, i + 2
    for name, weekday in _WEEKDAY_WORDS.items():
        if utt.word_is(i + 1, name):
            return weekday, i + 2
    return None


def _weekday_date(utt: Utterance, weekday: int, j: int, today: dt.date) -> tuple[dt.date, int]:
    monday = today - dt.timedelta(days=today.weekday())
    if utt.find("tuần này", j) == j:
        return monday + dt.timedelta(days=weekday), j + 2
    if utt.find("tuần sau", j) == j or utt.find("tuần tới", j) == j:
        return monday + dt.timedelta(days=7 + weekday), j + 2
    ahead = (weekday - today.weekday() - 1) % 7 + 1  # the next one, never today
    if utt.word_is(j, "tới", "này"):
        j += 1
    return today + dt.timedelta(days=ahead), j


def _days(utt: Utterance, today: dt.date) -> list[tuple[int, dt.date]]:
    """Every day said, as (word index, date)."""
    found: list[tuple[int, dt.date]] = []
    covered: set[int] = set()
    for phrase, offset in _RELATIVE:
        for start, end in utt.spans([phrase]):
            found.append((start, today + dt.timedelta(days=offset)))
            covered.update(range(start, end))
    words = utt.words
    i = 0
    while i < len(words):
        if i in covered:
            i += 1
            continue
        word = words[i]
        if (m := _DATE_TOKEN.fullmatch(word.text)) is not None:
            day, month, year = int(m.group(1)), int(m.group(2)), m.group(3)
            if year is not None:
                full = int(year) + (2000 if len(year) == 2 else 0)
                date = _make_date(full, month, day)
            else:
                date = _upcoming(month, day, today)
            if date is not None:
                found.append((i, date))
            i += 1
            continue
        if (weekday := _weekday_at(utt, i)) is not None:
            date, i_next = _weekday_date(utt, weekday[0], weekday[1], today)
            found.append((i, date))
            i = i_next
            continue
        if utt.word_is(i, "ngày", "mùng", "mồng"):
            j = i + 1
            if utt.word_is(i, "ngày") and utt.word_is(j, "mùng", "mồng"):
                j += 1
            absolute = _absolute(utt, j, today)
            if absolute is not None:
                if absolute[0] is not None:
                    found.append((i, absolute[0]))
                i = absolute[1]
                continue
        number = _number_at(words, i)
        if number is not None:
            value, j = number
            # "3 ngày nữa", "hai hôm nữa"
            if utt.word_is(j, "ngày", "hôm") and utt.word_is(j + 1, "nữa") and value <= 366:
                found.append((i, today + dt.timedelta(days=value)))
                i = j + 2
                continue
            # "25 tháng 12" without "ngày"
            if utt.word_is(j, "tháng") and (absolute := _absolute(utt, i, today)) is not None:
                if absolute[0] is not None:
                    found.append((i, absolute[0]))
                i = absolute[1]
                continue
            i = j
            continue
        if utt.word_is(i, "mai") and not utt.word_is(i - 1, "hoa", "cây"):
            found.append((i, today + dt.timedelta(days=1)))
        elif word.text == "mốt" and not utt.word_is(i - 1, "mươi", "mười"):
            found.append((i, today + dt.timedelta(days=2)))
        i += 1
    return found


def parse_day(text: str | Utterance, today: dt.date) -> dt.date | None:
    """The day said in ``text``, relative to ``today`` (the last one if several), or None.

    "hôm nay", "ngày mai"/"mai", "ngày kia"/"ngày mốt", "thứ hai".."chủ nhật"
    and "thứ 2".."thứ 7" (the next one after today; "tuần sau" and "tuần này"
    pick the week), "ngày 25 tháng 12", "25/12", "mùng 5", "3 ngày nữa".
    A day and month without a year is the next one on or after ``today``; a
    name ("tôi tên là Mai") is never read as a day.
    """
    utt = _without_name(Utterance.of(text))
    days = _days(utt, today)
    if not days:
        return None
    return max(days, key=lambda found: found[0])[1]


# --------------------------------------------------------------- yes and no

_NO = ("không", "ko", "k", "hông", "hổng", "chưa", "sai", "nhầm", "no", "đâu có", "không phải")
_YES = (
    "có", "vâng", "đúng", "ừ", "ừm", "uh", "ok", "oke", "okay", "được", "đồng ý",
    "chính xác", "phải", "xác nhận", "chuẩn", "yes", "chắc chắn", "đặt đi", "tốt",
)  # fmt: skip
_WEAK_YES = ("dạ", "ờ", "à", "ạ")


def yes_or_no(text: str | Utterance) -> bool | None:
    """True for "có", "vâng", "đúng rồi", "ok"; False for "không", "sai", "chưa"; else None.

    A "no" word wins over a "yes" word ("dạ không"). A bare "dạ" counts as yes.
    """
    utt = Utterance.of(text)
    if utt.has(*_NO):
        return False
    if utt.has(*_YES):
        return True
    if utt.words and all(_is(w, *_WEAK_YES) for w in utt.words):
        return True
    return None


# --------------------------------------------------------------- formatting


def format_date(date: dt.date, today: dt.date | None = None) -> str:
    """``"thứ Hai, ngày 25 tháng 11"``; with ``today``: "ngày mai, thứ Ba, ngày 26 tháng 11".

    The year is added when it is not ``today``'s year.
    """
    text = f"{WEEKDAYS[date.weekday()]}, ngày {date.day} tháng {date.month}"
    if today is None:
        return text
    if date.year != today.year:
        text += f" năm {date.year}"
    relative = {0: "hôm nay", 1: "ngày mai", 2: "ngày kia"}.get((date - today).days)
    return f"{relative}, {text}" if relative else text


def format_time(time: dt.time, *, words: bool = False) -> str:
    """``"10 giờ rưỡi sáng"``, ``"3 giờ chiều"``, ``"12 giờ trưa"``, ``"7 giờ 15 tối"``.

    As people say a time: the hour on a twelve-hour clock with the part of the day,
    half past as "rưỡi". Numerals stay numerals: the text is also shown, and eSpeak NG
    reads "21" as "hai mươi mốt" by itself. ``words=True`` spells the numbers out
    (``"mười giờ rưỡi sáng"``), as a recogniser writes what it hears.
    """
    say = say_number if words else str
    hour = time.hour
    if hour == 0:
        period = "đêm"
    elif hour < 12:
        period = "sáng"
    elif hour == 12:
        period = "trưa"
    elif hour < 18:
        period = "chiều"
    elif hour < 22:
        period = "tối"
    else:
        period = "đêm"
    shown = hour % 12 or 12
    if not time.minute:
        minutes = ""
    elif time.minute == 30:
        minutes = " rưỡi"
    elif time.minute < 10:
        minutes = f" {say(time.minute)} phút"
    else:
        minutes = f" {say(time.minute)}"
    return f"{say(shown)} giờ{minutes} {period}"
