"""Reading Vietnamese turns as speech recognition and typing give them, and writing them back."""

from __future__ import annotations

import datetime as dt

import pytest

from voice_trio.agent.vietnamese import (
    Utterance,
    extract_name,
    format_date,
    format_time,
    name_key,
    normalize,
    parse_day,
    parse_number,
    parse_time,
    strip_tones,
    yes_or_no,
)

TODAY = dt.date(2025, 11, 25)  # a Tuesday


def test_normalize_and_strip_tones() -> None:
    assert normalize("  Đặt   LỊCH hẹn!!  ") == "đặt lịch hẹn"
    assert normalize("Lúc 10h30, ngày 25/12.") == "lúc 10h30 ngày 25/12"
    # NFD input (as some keyboards send it) comes out NFC.
    assert normalize("Đă\u0323t li\u0323ch") == "đặt lịch"
    assert strip_tones("Đặt lịch, HỦY, thứ Bảy") == "Dat lich, HUY, thu Bay"
    assert name_key("  Nguyễn  Văn AN ") == "nguyen van an"


@pytest.mark.parametrize(
    ("text", "phrase", "expected"),
    [
        ("Tôi muốn ĐẶT LỊCH", "đặt lịch", True),
        ("toi muon dat lich", "đặt lịch", True),  # no marks at all
        ("toi muon đặt lich", "đặt lịch", True),  # some words marked, some not
        ("tôi muốn huỷ", "hủy", True),  # the tone mark on the other vowel
        ("hủy.", "huỷ", True),
        ("tạm biệt", "tám", False),  # marked words match only themselves
        ("tam", "tám", True),  # an unmarked word matches any with its letters
        ("đặt lịch", "lịch đặt", False),
        ("đặt, lịch", "đặt lịch", True),  # punctuation does not break a phrase match
    ],
)
def test_phrase_matching(text: str, phrase: str, expected: bool) -> None:
    assert Utterance.of(text).has(phrase) is expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("không trăm", 0),
        ("một", 1),
        ("mười", 10),
        ("mười một", 11),
        ("mười lăm", 15),
        ("muoi lam", 15),
        ("hai mươi", 20),
        ("hai mươi mốt", 21),
        ("hai muoi mot", 21),
        ("hai mươi tư", 24),
        ("hai lăm", 25),  # colloquial for hai mươi lăm
        ("ba mốt", 31),
        ("chín mươi chín", 99),
        ("một trăm", 100),
        ("một trăm linh năm", 105),
        ("hai trăm lẻ một", 201),
        ("ba trăm hai mươi", 320),
        ("hai nghìn không trăm hai mươi lăm", 2025),
        ("một ngàn", 1000),
        ("15", 15),
        ("bảy", 7),
        ("bay", 7),
        ("tám", 8),
    ],
)
def test_parse_number(text: str, value: int) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "xin chào", "tạm", "mười giờ", "lăm"])
def test_parse_number_refuses_what_is_not_a_number(text: str) -> None:
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9 giờ", (9, 0)),
        ("chín giờ", (9, 0)),
        ("chin gio", (9, 0)),
        ("chín giờ rưỡi", (9, 30)),
        ("chin gio ruoi", (9, 30)),
        ("10 giờ 30", (10, 30)),
        ("mười giờ ba mươi phút", (10, 30)),
        ("9 giờ 15 phút", (9, 15)),
        ("10h30", (10, 30)),
        ("10h", (10, 0)),
        ("10:30", (10, 30)),
        ("3 giờ chiều", (15, 0)),
        ("3 gio chieu", (15, 0)),
        ("ba giờ chiều", (15, 0)),
        ("7 giờ tối", (19, 0)),
        ("7 gio toi", (19, 0)),  # "toi" right after the time is "tối"
        ("12 giờ trưa", (12, 0)),
        ("1 giờ trưa", (13, 0)),
        ("10 giờ đêm", (22, 0)),
        ("8 giờ sáng", (8, 0)),
        ("chiều mai lúc 3 giờ", (15, 0)),
        ("buổi chiều 4 giờ", (16, 0)),
        ("mười giờ kém mười lăm", (9, 45)),
        ("15 giờ", (15, 0)),
        ("lúc 8", (8, 0)),
        ("Tôi muốn đặt lúc 9 giờ, à không, 10 giờ", (10, 0)),  # the last one wins
        ("TOI MUON DAT LICH 3 GIO CHIEU", (15, 0)),
    ],
)
def test_parse_time(text: str, expected: tuple[int, int]) -> None:
    assert parse_time(text) == dt.time(*expected)


def test_parse_time_daytime_reads_small_hours_as_afternoon() -> None:
    assert parse_time("3 giờ") == dt.time(3, 0)
    assert parse_time("3 giờ", daytime=True) == dt.time(15, 0)
    assert parse_time("3 giờ sáng", daytime=True) == dt.time(3, 0)
    assert parse_time("9 giờ", daytime=True) == dt.time(9, 0)


@pytest.mark.parametrize(
    "text",
    [
        "mấy giờ rồi",
        "bây giờ là mấy giờ",
        "tôi muốn đặt lịch",
        "ngày 25 tháng 12",
        "25/12",
        "25.12",
    ],
)
def test_parse_time_none(text: str) -> None:
    assert parse_time(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hôm nay", TODAY),
        ("hom nay", TODAY),
        ("chiều nay", TODAY),
        ("ngày mai", dt.date(2025, 11, 26)),
        ("ngay mai", dt.date(2025, 11, 26)),
        ("mai", dt.date(2025, 11, 26)),
        ("sáng mai 9 giờ", dt.date(2025, 11, 26)),
        ("ngày kia", dt.date(2025, 11, 27)),
        ("ngày mốt", dt.date(2025, 11, 27)),
        ("mốt", dt.date(2025, 11, 27)),
        ("hôm qua", dt.date(2025, 11, 24)),
        ("thứ hai", dt.date(2025, 12, 1)),
        ("thứ 2", dt.date(2025, 12, 1)),
        ("thu hai", dt.date(2025, 12, 1)),
        ("THỨ HAI", dt.date(2025, 12, 1)),
        ("thứ ba", dt.date(2025, 12, 2)),  # today is a Tuesday: the next one
        ("thứ ba tuần này", TODAY),
        ("thứ tư", dt.date(2025, 11, 26)),
        ("thu tu", dt.date(2025, 11, 26)),
        ("thứ năm", dt.date(2025, 11, 27)),
        ("thứ sáu", dt.date(2025, 11, 28)),
        ("thứ bảy", dt.date(2025, 11, 29)),
        ("thứ 7", dt.date(2025, 11, 29)),
        ("chủ nhật", dt.date(2025, 11, 30)),
        ("chu nhat", dt.date(2025, 11, 30)),
        ("thứ hai tuần sau", dt.date(2025, 12, 1)),
        ("thứ tư tuần sau", dt.date(2025, 12, 3)),
        ("ngày 25 tháng 12", dt.date(2025, 12, 25)),
        ("ngay 25 thang 12", dt.date(2025, 12, 25)),
        ("ngày hai mươi lăm tháng mười hai", dt.date(2025, 12, 25)),
        ("25/12", dt.date(2025, 12, 25)),
        ("25-12-2026", dt.date(2026, 12, 25)),
        ("25 tháng 12", dt.date(2025, 12, 25)),
        ("ngày 1 tháng 1", dt.date(2026, 1, 1)),  # already past this year: next year's
        ("ngày 10 tháng 11", dt.date(2026, 11, 10)),
        ("ngày 30", dt.date(2025, 11, 30)),
        ("ngày 5", dt.date(2025, 12, 5)),  # the 5th has passed this month
        ("mùng 5 tháng sau", dt.date(2025, 12, 5)),
        ("ngày 25 tháng 12 năm 2026", dt.date(2026, 12, 25)),
        ("3 ngày nữa", dt.date(2025, 11, 28)),
        ("ngày mai, à không, ngày kia", dt.date(2025, 11, 27)),  # the last one wins
        ("đặt lịch thứ sáu lúc 9 giờ", dt.date(2025, 11, 28)),
    ],
)
def test_parse_day(text: str, expected: dt.date) -> None:
    assert parse_day(text, TODAY) == expected


@pytest.mark.parametrize(
    "text", ["tôi muốn đặt lịch", "9 giờ sáng", "tên tôi là Mai", "ngày 31 tháng 2", "tuần sau"]
)
def test_parse_day_none(text: str) -> None:
    assert parse_day(text, TODAY) is None


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("tôi tên là Lan", "Lan"),
        ("toi ten la lan", "Lan"),
        ("tên tôi là Nguyễn Văn An", "Nguyễn Văn An"),
        ("TÊN TÔI LÀ NGUYỄN VĂN AN", "Nguyễn Văn An"),
        ("ten toi la nguyen van an toi muon dat lich", "Nguyen Van An"),
        ("mình là Minh", "Minh"),
        ("minh la Minh", "Minh"),
        ("Xin chào, tôi tên là lan, tôi muốn đặt lịch", "Lan"),
        ("em tên Hoa ạ", "Hoa"),
        ("tên tôi là Thu thứ hai", "Thu"),
        ("tên tôi là Mai ngày mai 9 giờ", "Mai"),
        ("xem lịch hẹn của Trần Thị Bích", "Trần Thị Bích"),
        ("Đặt lịch cho Nguyễn Thị Hoa vào 14h ngày 1/12", "Nguyễn Thị Hoa"),
    ],
)
def test_extract_name(text: str, name: str) -> None:
    assert extract_name(text) == name


@pytest.mark.parametrize("text", ["tôi là khách", "tôi muốn đặt lịch", "Lan", "anh là ai"])
def test_extract_name_none(text: str) -> None:
    assert extract_name(text) is None


@pytest.mark.parametrize(
    ("text", "name"),
    [("Lan ạ", "Lan"), ("dạ Nguyễn Văn An", "Nguyễn Văn An"), ("huy", "Huy"), ("là Bình", "Bình")],
)
def test_extract_bare_name(text: str, name: str) -> None:
    assert extract_name(text, bare=True) == name


@pytest.mark.parametrize("text", ["xin chào", "tôi muốn đặt lịch", "9 giờ", "ừm", "cảm ơn"])
def test_extract_bare_name_none(text: str) -> None:
    assert extract_name(text, bare=True) is None


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("có", True),
        ("co", True),
        ("vâng", True),
        ("dạ vâng", True),
        ("đúng rồi", True),
        ("dung roi", True),
        ("Ừ", True),
        ("ok", True),
        ("dạ", True),
        ("chính xác", True),
        ("không", False),
        ("khong", False),
        ("ko", False),
        ("dạ không", False),
        ("không phải", False),
        ("chưa đúng", False),
        ("sai rồi", False),
        ("xin chào", None),
        ("", None),
    ],
)
def test_yes_or_no(text: str, answer: bool | None) -> None:
    assert yes_or_no(text) is answer


def test_format_date() -> None:
    assert format_date(dt.date(2025, 11, 24)) == "thứ Hai, ngày 24 tháng 11"
    assert format_date(dt.date(2025, 11, 30)) == "Chủ nhật, ngày 30 tháng 11"
    assert format_date(TODAY, TODAY) == "hôm nay, thứ Ba, ngày 25 tháng 11"
    assert format_date(dt.date(2025, 11, 26), TODAY) == "ngày mai, thứ Tư, ngày 26 tháng 11"
    assert format_date(dt.date(2025, 11, 27), TODAY) == "ngày kia, thứ Năm, ngày 27 tháng 11"
    assert format_date(dt.date(2025, 12, 1), TODAY) == "thứ Hai, ngày 1 tháng 12"
    assert format_date(dt.date(2026, 1, 2), TODAY) == "thứ Sáu, ngày 2 tháng 1 năm 2026"


@pytest.mark.parametrize(
    ("hour", "minute", "text"),
    [
        (10, 30, "10 giờ rưỡi sáng"),
        (9, 0, "9 giờ sáng"),
        (9, 5, "9 giờ 5 phút sáng"),
        (12, 0, "12 giờ trưa"),
        (15, 0, "3 giờ chiều"),
        (16, 45, "4 giờ 45 chiều"),
        (19, 0, "7 giờ tối"),
        (23, 0, "11 giờ đêm"),
        (0, 0, "12 giờ đêm"),
    ],
)
def test_format_time(hour: int, minute: int, text: str) -> None:
    assert format_time(dt.time(hour, minute)) == text


@pytest.mark.parametrize(
    ("hour", "minute"), [(8, 0), (9, 30), (10, 45), (12, 0), (15, 0), (16, 5), (19, 0)]
)
def test_format_time_reads_back(hour: int, minute: int) -> None:
    assert parse_time(format_time(dt.time(hour, minute))) == dt.time(hour, minute)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("ten toi la tran thi lan", "Tran Thi Lan"),
        ("ten toi la Nhi", "Nhi"),
        ("toi la dang van tuan", "Dang Van Tuan"),
        ("toi ten la Dat dat lich ngay mai", "Dat"),
        ("ten toi la Thang tuan sau", "Thang"),
        ("tên tôi là Đạt, đặt lịch ngày mai", "Đạt"),
    ],
)
def test_names_that_are_also_words(text: str, name: str) -> None:
    assert extract_name(text) == name


# ------------------------------------------------------- spoken days and times, both ways


@pytest.mark.parametrize(
    ("text", "number"),
    [("hăm lăm", 25), ("hăm mốt", 21), ("hăm tư", 24), ("ham lam", 25), ("băm mốt", 31)],
)
def test_contracted_tens(text: str, number: int) -> None:
    # "Hăm" and "băm" are "hai mươi" and "ba mươi" said in one syllable.
    assert parse_number(text) == number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chín rưỡi sáng", (9, 30)),  # "giờ" left out, as people say it
        ("mười rưỡi", (10, 30)),
        ("hai rưỡi chiều", (14, 30)),
        ("mười một rưỡi trưa", (11, 30)),
        ("9 rưỡi sáng mai", (9, 30)),
    ],
)
def test_half_past_without_gio(text: str, expected: tuple[int, int]) -> None:
    assert parse_time(text, daytime=True) == dt.time(*expected)


@pytest.mark.parametrize("text", ["một tháng rưỡi", "hai tiếng rưỡi", "hăm", "ngày rưỡi"])
def test_half_of_something_else_is_no_time(text: str) -> None:
    assert parse_time(text, daytime=True) is None


@pytest.mark.parametrize(
    ("text", "day", "time"),
    [
        ("chín giờ rưỡi sáng thứ ba", dt.date(2025, 12, 2), (9, 30)),
        ("chin gio ruoi sang thu ba", dt.date(2025, 12, 2), (9, 30)),
        ("Chín giờ rưỡi sáng, thứ Ba.", dt.date(2025, 12, 2), (9, 30)),
        ("9h30 sáng thứ 3", dt.date(2025, 12, 2), (9, 30)),
        ("Thứ Ba, 9 giờ rưỡi.", dt.date(2025, 12, 2), (9, 30)),
        ("chín rưỡi sáng thứ ba tuần sau", dt.date(2025, 12, 2), (9, 30)),
        ("sáng thứ hai lúc tám giờ", dt.date(2025, 12, 1), (8, 0)),
        ("hai giờ chiều thứ năm tuần sau", dt.date(2025, 12, 4), (14, 0)),
        ("năm giờ chiều thứ năm", dt.date(2025, 11, 27), (17, 0)),  # five, and Thursday
        ("thứ năm lúc năm giờ chiều", dt.date(2025, 11, 27), (17, 0)),
        ("ba giờ chiều mai", dt.date(2025, 11, 26), (15, 0)),
        ("mười giờ kém mười lăm sáng thứ sáu", dt.date(2025, 11, 28), (9, 45)),
        ("bốn giờ bốn lăm chiều ngày hăm sáu", dt.date(2025, 11, 26), (16, 45)),
        ("chín giờ sáng ngày mùng hai tháng mười hai", dt.date(2025, 12, 2), (9, 0)),
        ("ngày hăm mốt lúc mười rưỡi", dt.date(2025, 12, 21), (10, 30)),  # not "mốt"
    ],
)
def test_a_day_and_a_time_in_one_turn(text: str, day: dt.date, time: tuple[int, int]) -> None:
    assert parse_day(text, TODAY) == day
    assert parse_time(text, daytime=True) == dt.time(*time)


def test_every_minute_said_reads_back() -> None:
    # What the agent says, it understands when it is said back to it.
    for minute_of_day in range(24 * 60):
        time = dt.time(*divmod(minute_of_day, 60))
        assert parse_time(format_time(time)) == time, format_time(time)


def test_every_day_said_reads_back() -> None:
    for ahead in range(800):
        day = TODAY + dt.timedelta(days=ahead)
        assert parse_day(format_date(day, TODAY), TODAY) == day, format_date(day, TODAY)
        if ahead < 365:  # without the year: the next such day, which this is
            assert parse_day(format_date(day), TODAY) == day, format_date(day)


def test_a_booking_read_back_reads_back() -> None:
    # The receptionist's read-back: "9 giờ rưỡi sáng, ngày mai, thứ Tư, ngày 26 tháng 11".
    for ahead, (hour, minute) in enumerate([(8, 0), (9, 30), (12, 0), (13, 30), (16, 45)]):
        day, time = TODAY + dt.timedelta(days=ahead * 9), dt.time(hour, minute)
        said = f"{format_time(time)}, {format_date(day, TODAY)}"
        assert (parse_day(said, TODAY), parse_time(said)) == (day, time), said


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Đặt lịch cho Phạm Thu Hà chín giờ rưỡi sáng thứ ba", "Phạm Thu Hà"),
        ("dat lich cho tran thi lan muoi gio sang mai", "Tran Thi Lan"),
        ("tên tôi là Nguyễn Văn Bảy mười rưỡi", "Nguyễn Văn Bảy"),  # a name that is a number
        ("tôi tên là Năm", "Năm"),
    ],
)
def test_a_name_ends_where_a_spoken_time_begins(text: str, name: str) -> None:
    assert extract_name(text) == name


@pytest.mark.parametrize(
    ("text", "daytime", "expected"),
    [
        ("một giờ kém mười lăm", True, (12, 45)),  # quarter to one in an office's day
        ("một giờ kém mười lăm", False, (0, 45)),
        ("1 giờ kém 15 trưa", False, (12, 45)),
        ("1 giờ kém 15 chiều", False, (12, 45)),
        ("một giờ kém mười lăm sáng", True, (0, 45)),
        ("12 giờ kém 15 đêm", False, (23, 45)),
        ("8 giờ kém 5 tối", False, (19, 55)),
        ("ba giờ kém mười", True, (14, 50)),
    ],
)
def test_to_the_hour_takes_the_period_of_the_hour_said(
    text: str, daytime: bool, expected: tuple[int, int]
) -> None:
    assert parse_time(text, daytime=daytime) == dt.time(*expected)
