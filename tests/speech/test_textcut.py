"""The clause cutter: boundaries, numbers, tone marks, streaming equivalence."""

from __future__ import annotations

import unicodedata

import pytest

from voice_trio.errors import ConfigError
from voice_trio.speech.textcut import ClauseCutter, split_clauses

TEXT = (
    "Xin chào! Tôi là lễ tân của phòng khám. Bạn muốn đặt lịch hẹn vào ngày nào? "
    "Chúng tôi mở cửa từ 7:30 đến 17:00; giá khám là 150.000 đồng.\n"
    "Địa chỉ: số 12, đường Nguyễn Trãi, TP. Hồ Chí Minh…"
)


def test_sentence_and_clause_marks() -> None:
    assert split_clauses(TEXT) == [
        "Xin chào!",
        "Tôi là lễ tân của phòng khám.",
        "Bạn muốn đặt lịch hẹn vào ngày nào?",
        "Chúng tôi mở cửa từ 7:30 đến 17:00;",
        "giá khám là 150.000 đồng.",
        "Địa chỉ:",
        "số 12, đường Nguyễn Trãi, TP. Hồ Chí Minh…",
    ]


def test_nothing_is_lost_and_tone_marks_stay_whole() -> None:
    clauses = split_clauses(TEXT)
    assert "".join(" ".join(clauses).split()) == "".join(TEXT.split())
    for clause in clauses:
        for word in clause.split():
            # every word is a whole word of the input: no letter or mark split off
            assert word in TEXT.split()


def test_nfd_input_comes_out_nfc() -> None:
    nfd = unicodedata.normalize("NFD", "Tiếng Việt. Được không?")
    assert split_clauses(nfd) == ["Tiếng Việt.", "Được không?"]


def test_commas_cut_only_long_clauses() -> None:
    short = "Vâng, tôi hiểu rồi."
    assert split_clauses(short) == [short]
    long = (
        "Nếu bạn muốn đổi lịch hẹn sang tuần sau vào buổi chiều, "
        "xin vui lòng gọi lại cho chúng tôi."
    )
    assert split_clauses(long, comma_min_chars=30) == [
        "Nếu bạn muốn đổi lịch hẹn sang tuần sau vào buổi chiều,",
        "xin vui lòng gọi lại cho chúng tôi.",
    ]


def test_quotes_and_runs_stay_with_their_clause() -> None:
    assert split_clauses('Anh ấy nói: "Được rồi!" Thật sao?! Ừ... vậy nhé.') == [
        "Anh ấy nói:",
        '"Được rồi!"',
        "Thật sao?!",
        "Ừ...",
        "vậy nhé.",
    ]


def test_punctuation_only_pieces_are_dropped() -> None:
    assert split_clauses("... !!! \n -- \n Xin chào.") == ["Xin chào."]
    assert split_clauses("  \n ") == []


def test_hard_limit_cuts_at_a_space() -> None:
    words = ["mười"] * 100
    clauses = split_clauses(" ".join(words), max_chars=50)
    assert all(len(c) <= 50 for c in clauses)
    assert " ".join(clauses).split() == words


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_streaming_deltas_give_the_same_clauses(step: int) -> None:
    cutter = ClauseCutter()
    out: list[str] = []
    for i in range(0, len(TEXT), step):
        out += cutter.feed(TEXT[i : i + step])
        assert len(cutter.pending) <= cutter.max_chars + step
    out += cutter.flush()
    assert out == split_clauses(TEXT)


def test_a_clause_is_released_once_the_next_character_decides() -> None:
    cutter = ClauseCutter()
    assert cutter.feed("Giá là 3.") == []  # "3." may still become "3.5"
    assert cutter.feed("5 triệu. Cả") == ["Giá là 3.5 triệu."]
    assert cutter.flush() == ["Cả"]


@pytest.mark.parametrize("kwargs", [{"max_chars": 0}, {"comma_min_chars": -1}])
def test_bad_limits_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        ClauseCutter(**kwargs)
