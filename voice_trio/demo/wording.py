"""What the receptionist says and the phrases it listens for: the demo's own Vietnamese.

The replies built from facts (a booking read back, the opening hours) are written where
they are built; the fixed ones are here, with the words each rule matches. Matching is
by :meth:`Utterance.has <voice_trio.agent.vietnamese.Utterance.has>`, so tone marks are
optional in what the caller says ("huy" matches "hủy").
"""

from __future__ import annotations

from ..agent.graph import Conversation
from ..agent.vietnamese import Utterance, name_span, yes_or_no

# ------------------------------------------------------------------ replies

ASK_NAME = "Quý khách cho tôi xin tên người đặt lịch ạ?"
ASK_DAY = "Quý khách muốn đặt lịch vào ngày nào ạ?"
SAY_NAME_AGAIN = (
    "Xin lỗi quý khách. Quý khách vui lòng nói lại tên người đặt lịch, chậm và rõ từng tiếng, "
    "ví dụ: tôi tên là Lan ạ."
)
ANYTHING_ELSE = "Quý khách cần tôi giúp gì thêm không ạ?"
CHANGE_WHAT = "Quý khách muốn sửa tên, ngày hay giờ ạ? Quý khách cứ nói thông tin mới."

# Privacy. A booking from another call is found only by its code and its name together,
# and every failure says the same, so no answer tells whether a booking exists.
#: The answer to any code and name that do not both match one upcoming booking.
NO_MATCH = (
    "Xin lỗi, tôi không tìm thấy lịch hẹn nào khớp với mã lịch hẹn và tên này. Để bảo mật "
    "thông tin, tôi chỉ đọc lại hoặc hủy lịch hẹn đã đặt trong chính cuộc gọi này, hoặc khi "
    "quý khách cho biết đúng mã lịch hẹn cùng tên người đã đặt lịch ạ."
)
#: The answer to every try after :data:`.tools.MAX_CODE_TRIES` wrong ones.
TOO_MANY_TRIES = (
    "Xin lỗi, mã lịch hẹn hoặc tên đã không khớp nhiều lần, nên để bảo mật thông tin tôi "
    "không tra cứu lịch hẹn bằng mã trong cuộc gọi này nữa ạ."
)
ASK_BOTH = (
    "Để bảo mật thông tin, quý khách vui lòng cho tôi biết mã lịch hẹn và tên người đã đặt lịch ạ."
)
ASK_CODE = (
    "Để bảo mật thông tin, quý khách cho tôi xin thêm mã lịch hẹn ạ? Đó là mã sáu chữ số tôi "
    "đã đọc khi đặt lịch."
)
ASK_WHOSE = "Dạ, quý khách cho tôi xin thêm tên người đã đặt lịch ạ?"
FORGOT = (
    "Dạ, để bảo mật thông tin, khi không có mã lịch hẹn tôi chỉ xem lại hoặc hủy được lịch "
    "hẹn đã đặt trong chính cuộc gọi này thôi ạ."
)

# ------------------------------------------------------------------ phrases

GOODBYE = ("tạm biệt", "bye", "bai bai", "hẹn gặp lại", "không cần gì nữa", "vậy thôi",
           "không còn gì nữa", "thế thôi", "thôi cảm ơn", "hết rồi", "cúp máy")  # fmt: skip
ASK_TIME = ("mấy giờ", "bây giờ là", "giờ là mấy", "mấy h", "giờ hiện tại", "thời gian")
ASK_DATE = ("ngày mấy", "ngày bao nhiêu", "thứ mấy", "hôm nay là ngày", "hôm nay ngày",
            "ngày hôm nay", "hôm nay là thứ", "tháng mấy", "năm nay là năm")  # fmt: skip
ASK_HOURS = ("mở cửa", "đóng cửa", "giờ làm việc", "làm việc", "mấy giờ mở", "giờ mở")
THANKS = ("cảm ơn", "cám ơn", "thank", "thanks")
HELLO = ("xin chào", "chào", "alo", "a lô", "alô", "hello", "hi", "chào bạn", "chào em")
HELP = ("giúp được gì", "làm được gì", "làm gì được", "có thể làm gì", "hướng dẫn", "giúp gì")
CANCEL = ("hủy", "huỷ", "bỏ lịch", "không đến được", "không tới được", "cancel", "hủy bỏ")
LOOKUP = ("xem lại", "xem lịch", "nhắc lại", "đọc lại", "lịch của tôi", "lịch hẹn của tôi",
          "kiểm tra lịch", "kiểm tra lại", "tôi có lịch", "đã đặt", "tra cứu", "lịch hẹn của",
          "lịch của")  # fmt: skip
# After the booking phrases: "đặt lịch kiểm tra sức khỏe" is a booking.
LOOKUP_WEAK = ("kiểm tra",)
BOOK = ("đặt lịch", "đặt hẹn", "hẹn", "lịch hẹn", "đặt", "book", "đăng ký", "lịch khám",
        "muốn khám", "đi khám", "muốn gặp")  # fmt: skip
STOP = ("thôi", "không đặt nữa", "dừng", "dừng lại", "hủy", "huỷ", "bỏ qua", "để sau",
        "không cần nữa", "không đặt")  # fmt: skip
CLOSING = ("không", "ko", "k", "dạ", "ạ", "cần", "gì", "nữa", "đâu", "thôi", "rồi", "cảm",
           "ơn", "cám", "nhé", "nha", "vâng", "ừ", "em", "bạn", "à", "ờ", "có",
           "chưa")  # fmt: skip
# "Thôi" to the question for a booking code: no look-up, back to the main menu.
STOP_LOOKUP = ("thôi", "không cần", "bỏ qua", "dừng")
CHANGE = ("đổi", "sửa", "thay", "nhầm")
FORGOT_CODE = ("không nhớ", "quên", "không có mã", "không biết mã", "mất mã", "không còn mã")
# A turn that asks ("mấy giờ rồi?") fills no slot, even if it names a day.
QUESTION = ("mấy", "bao nhiêu")

# ------------------------------------------------------------------ recognition hints
# What each step expects to hear, handed to the recogniser (Node.hints): the phrases the
# step's rules listen for, in the words a caller says them. Short lists on purpose: a
# recogniser also writes a hint's words where they were not said.

#: The requests of the main menu (the first phrase of each rule's list, then greetings).
#: Not "tạm biệt": a prompt's word heard in noise must not end the call (measured: "Xin
#: chào, tôi muốn đặt lịch khám" came out "Xin chào, tạm biệt." with it in the prompt).
MAIN_HINTS = ("tôi muốn đặt lịch hẹn", "xem lại lịch hẹn", "hủy lịch hẹn",
              "bây giờ là mấy giờ")  # fmt: skip
#: A yes or a no to a read-back.
YES_NO_HINTS = ("vâng, đúng rồi", "có", "không", "không phải", "sai rồi")
#: How a caller gives a name. (Not a list of names: measured, Whisper then writes the
#: list out, or a family name, instead of the name said.)
NAME_INTRO = "tôi tên là"
#: The family names most Vietnamese names start with: a name that is only these is
#: not sure (a caller gives at least a given name).
FAMILY_NAMES = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ")
#: Given and middle names a caller's name is likely made of: a name heard with a word not
#: among these (or these with other tone marks) is read back for a yes before it is kept.
KNOWN_NAME_WORDS = (*FAMILY_NAMES, "Hồ", "Ngô", "Dương", "Lý", "Phan", "Võ", "Huỳnh",
    "Văn", "Thị", "Đức", "Hữu", "Công", "Quốc", "Xuân", "Ngọc", "Thu", "Minh", "Thanh",
    "An", "Anh", "Bình", "Châu", "Chi", "Cường", "Dũng", "Dung", "Duy", "Giang", "Hà",
    "Hải", "Hạnh", "Hiền", "Hiếu", "Hoa", "Hòa", "Hồng", "Hùng", "Hương", "Huy", "Khánh",
    "Khoa", "Lan", "Linh", "Long", "Mai", "Nam", "Nga", "Nhung", "Phong", "Phúc",
    "Phương", "Quân", "Quang", "Sơn", "Tâm", "Thảo", "Thắng", "Thúy", "Trang", "Trung",
    "Tú", "Tuấn", "Tùng", "Vân", "Việt", "Yến")  # fmt: skip
#: Days, besides the weekdays the clinic is open.
RELATIVE_DAYS = ("ngày mai", "ngày kia", "tuần sau")

# ------------------------------------------------------------------ matchers


def core(utterance: Utterance) -> Utterance:
    """The utterance without the name said in it ("tên tôi là Huy" is not "hủy")."""
    span = name_span(utterance)
    return utterance.without(*span) if span else utterance


def yes(conversation: Conversation, utterance: Utterance) -> bool:
    return yes_or_no(utterance) is True


def no(conversation: Conversation, utterance: Utterance) -> bool:
    return yes_or_no(utterance) is False
