"""Reading a booking code out of a turn: numerals, digits read as words, with the words
that lead into it (so the name said in the same turn still reads as a name)."""

from __future__ import annotations

import pytest

from voice_trio.agent.vietnamese import Utterance, code_span, extract_name, format_code


@pytest.mark.parametrize(
    ("text", "code", "rest"),
    [
        ("482913", "482913", ""),
        ("mã 482 913", "482913", ""),
        ("482-913", "482913", ""),
        ("bốn tám hai chín một ba", "482913", ""),
        ("bon tam hai chin mot ba", "482913", ""),
        ("mã không một hai ba bốn năm", "012345", ""),
        ("tên Lan, mã số 482913", "482913", "tên lan"),
        ("mã lịch hẹn của tôi là 482913, tên tôi là Lan", "482913", "tên tôi là lan"),
        ("Nam 482913", "482913", "nam"),  # "Nam" may be "năm" (five): numerals win
    ],
)
def test_codes(text: str, code: str, rest: str) -> None:
    found = code_span(text)
    assert found is not None and found[0] == code
    assert Utterance.of(text).without(*found[1]).text == rest


@pytest.mark.parametrize(
    "text", ["0912345678", "48291", "lúc 9 giờ", "không nhớ mã", "ngày 25/11", "hai ba"]
)
def test_not_codes(text: str) -> None:
    assert code_span(text) is None


def test_the_name_beside_a_code() -> None:
    utt = Utterance.of("xem lịch hẹn của Lan mã 482913")
    found = code_span(utt)
    assert found is not None
    assert extract_name(utt.without(*found[1])) == "Lan"


def test_format_code() -> None:
    assert format_code("482913") == "4 8 2 9 1 3"
