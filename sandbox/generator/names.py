"""Vietnamese personal names and the other word lists the generator draws from.

Owns: family names with their population shares (Nguyễn ~38%, Trần ~11%, Lê ~9.5%, Phạm ~7%, ...), middle
and given names by sex, ethnic groups and religions with rough shares, street and village names for
addresses, and the words company names are made of. Shares are rounded figures from published surname and
census statistics; they only need to look like a Vietnamese province, not to be exact.
Administrative units are NOT here: they come from `lienthong.adminunits`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# (name, weight in %): the long tail is spread over the rare names at the end.
FAMILY_NAMES: tuple[tuple[str, float], ...] = (
    ("Nguyễn", 38.4), ("Trần", 11.0), ("Lê", 9.5), ("Phạm", 7.1), ("Hoàng", 4.1), ("Huỳnh", 1.0),
    ("Phan", 4.5), ("Vũ", 3.4), ("Võ", 0.5), ("Đặng", 2.1), ("Bùi", 2.0), ("Đỗ", 1.4), ("Hồ", 1.3),
    ("Ngô", 1.3), ("Dương", 1.0), ("Lý", 0.5), ("Đào", 0.8), ("Đinh", 0.8), ("Mai", 0.6), ("Trịnh", 0.6),
    ("Lương", 0.5), ("Cao", 0.5), ("Tô", 0.4), ("Hà", 0.4), ("Lưu", 0.3), ("Tạ", 0.3), ("Lâm", 0.3),
    ("Vương", 0.3), ("Quách", 0.2), ("Phùng", 0.3), ("Đoàn", 0.5), ("Tăng", 0.2), ("Kiều", 0.2),
    ("Chu", 0.2), ("Triệu", 0.2), ("Mạc", 0.2), ("Nghiêm", 0.1), ("Ứng", 0.05), ("Thái", 0.2),
    ("Văn", 0.1), ("Khúc", 0.1), ("Lại", 0.2), ("Ninh", 0.1), ("Âu", 0.1),
)

MALE_MIDDLE: tuple[tuple[str, float], ...] = (
    ("Văn", 40), ("Đức", 10), ("Minh", 10), ("Hữu", 6), ("Quang", 6), ("Thành", 4), ("Công", 4),
    ("Xuân", 3), ("Hoàng", 3), ("Ngọc", 2), ("Anh", 2), ("Tuấn", 2), ("Đình", 4), ("Trọng", 2),
    ("Gia", 2), ("Bảo", 2), ("Mạnh", 1), ("Thế", 2), ("Quốc", 2), ("Tiến", 1),
)
FEMALE_MIDDLE: tuple[tuple[str, float], ...] = (
    ("Thị", 55), ("Ngọc", 6), ("Thu", 5), ("Thanh", 5), ("Minh", 4), ("Phương", 3), ("Hồng", 3),
    ("Mai", 2), ("Kim", 3), ("Bảo", 2), ("Khánh", 2), ("Hoài", 1), ("Thùy", 2), ("Diệu", 1),
    ("Quỳnh", 2), ("Lan", 1), ("Hải", 1), ("Ánh", 1), ("Thảo", 1),
)
MALE_GIVEN: tuple[str, ...] = (
    "An", "Anh", "Bình", "Cường", "Dũng", "Duy", "Đạt", "Đức", "Hải", "Hiếu", "Hoàng", "Hùng", "Huy",
    "Hưng", "Khánh", "Khoa", "Kiên", "Lâm", "Long", "Lợi", "Mạnh", "Minh", "Nam", "Nghĩa", "Nhật",
    "Phong", "Phúc", "Quang", "Quân", "Sơn", "Tâm", "Thắng", "Thành", "Thịnh", "Tiến", "Toàn", "Trọng",
    "Trung", "Tuấn", "Tùng", "Việt", "Vinh", "Vũ", "Hậu", "Khải", "Lộc", "Thái", "Thuận", "Định",
    "Bảo", "Chiến", "Công", "Giang", "Hào", "Hiển", "Hòa", "Ích", "Khôi", "Luân", "Ngọc", "Phát",
    "Quý", "Sang", "Tài", "Thanh", "Thông", "Tú", "Tường", "Uy", "Văn", "Vượng", "Ánh", "Ân", "Ứng",
)
FEMALE_GIVEN: tuple[str, ...] = (
    "Anh", "Chi", "Dung", "Giang", "Hà", "Hạnh", "Hằng", "Hiền", "Hoa", "Hòa", "Hồng", "Hương", "Huyền",
    "Lan", "Linh", "Loan", "Mai", "My", "Nga", "Ngân", "Ngọc", "Nhung", "Oanh", "Phương", "Quỳnh", "Tâm",
    "Thảo", "Thu", "Thủy", "Trang", "Trinh", "Tuyết", "Vân", "Yến", "Thư", "Vy", "Hân", "Nhi", "Châu",
    "Diệp", "Hạ", "Hậu", "Huệ", "Lệ", "Liên", "Ly", "Lý", "Mận", "Nguyệt", "Nhàn", "Phượng", "Quyên",
    "Thoa", "Thơ", "Thắm", "Thúy", "Trâm", "Uyên", "Xuân", "Yên", "Ánh", "Ân", "Ý", "Ngà", "Đào", "Bích",
)

ETHNIC_GROUPS: tuple[tuple[str, float], ...] = (
    ("Kinh", 96.5), ("Tày", 0.8), ("Mường", 0.7), ("Hoa", 0.9), ("Khmer", 0.2), ("Thái", 0.2),
    ("Nùng", 0.3), ("Dao", 0.2), ("H'Mông", 0.1), ("Sán Dìu", 0.1),
)
RELIGIONS: tuple[tuple[str, float], ...] = (
    ("Không", 86.0), ("Phật giáo", 8.0), ("Công giáo", 5.0), ("Tin lành", 0.5), ("Cao Đài", 0.3),
    ("Phật giáo Hòa Hảo", 0.2),
)

STREETS: tuple[str, ...] = (
    "Lạch Tray", "Lê Lợi", "Trần Phú", "Hoàng Văn Thụ", "Điện Biên Phủ", "Tô Hiệu", "Lê Thánh Tông",
    "Nguyễn Trãi", "Quang Trung", "Hai Bà Trưng", "Trần Hưng Đạo", "Lê Hồng Phong", "Văn Cao",
    "Nguyễn Văn Linh", "Đà Nẵng", "Cầu Đất", "Lý Thường Kiệt", "Phạm Văn Đồng", "Ngô Quyền", "Bạch Đằng",
    "Lê Duẩn", "Trường Chinh", "Nguyễn Đức Cảnh", "Hùng Vương", "Chợ Con", "Mê Linh", "Minh Khai",
)
VILLAGE_WORDS: tuple[str, ...] = (
    "Đông", "Tây", "Nam", "Bắc", "Trung", "Thượng", "Hạ", "Tiền", "Hậu", "An", "Phú", "Lạc", "Hòa",
)

# Company names: "<legal form> <trade> <brand>". Each trade carries its English word and VSIC codes.
TRADES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("THƯƠNG MẠI", "TRADING", ("4610", "4632", "4649", "4669", "4711", "4719")),
    ("XÂY DỰNG", "CONSTRUCTION", ("4100", "4210", "4290", "4312", "4330")),
    ("VẬN TẢI", "TRANSPORT", ("4933", "5012", "5022", "5210", "5229")),
    ("DỊCH VỤ", "SERVICES", ("8299", "7020", "5610", "9610", "8230")),
    ("SẢN XUẤT", "MANUFACTURING", ("1410", "2220", "2592", "3100", "1079")),
    ("ĐẦU TƯ", "INVESTMENT", ("6810", "6619", "7020")),
    ("CÔNG NGHỆ", "TECHNOLOGY", ("6201", "6202", "6209", "6311")),
    ("THỦY SẢN", "SEAFOOD", ("0321", "1020", "4632")),
    ("LOGISTICS", "LOGISTICS", ("5229", "5210", "5224")),
    ("THƯƠNG MẠI VÀ DỊCH VỤ", "TRADING AND SERVICES", ("4659", "4669", "8299", "4610")),
    ("XUẤT NHẬP KHẨU", "IMPORT EXPORT", ("4610", "4659", "4690")),
    ("CƠ KHÍ", "MECHANICAL ENGINEERING", ("2592", "2511", "3312")),
)
BRANDS: tuple[tuple[str, str], ...] = (
    ("HỒNG BÀNG", "HONG BANG"), ("AN PHÁT", "AN PHAT"), ("HẢI ĐĂNG", "HAI DANG"), ("MINH ANH", "MINH ANH"),
    ("PHÚ THỊNH", "PHU THINH"), ("TÂN CẢNG", "TAN CANG"), ("ĐÔNG Á", "DONG A"), ("HOÀNG GIA", "HOANG GIA"),
    ("BẢO LONG", "BAO LONG"), ("THÀNH ĐẠT", "THANH DAT"), ("VIỆT HẢI", "VIET HAI"), ("ĐẠI DƯƠNG", "DAI DUONG"),
    ("TRƯỜNG AN", "TRUONG AN"), ("NAM TRIỆU", "NAM TRIEU"), ("LẠCH TRAY", "LACH TRAY"), ("ĐỒ SƠN", "DO SON"),
    ("CÁT BÀ", "CAT BA"), ("THỦY NGUYÊN", "THUY NGUYEN"), ("KIẾN AN", "KIEN AN"), ("HƯNG THỊNH", "HUNG THINH"),
    ("QUANG MINH", "QUANG MINH"), ("PHƯƠNG ĐÔNG", "PHUONG DONG"), ("SAO VIỆT", "SAO VIET"),
    ("NHẬT QUANG", "NHAT QUANG"), ("AN LẠC", "AN LAC"), ("HẢI AN", "HAI AN"), ("BẠCH ĐẰNG", "BACH DANG"),
    ("VĨNH BẢO", "VINH BAO"), ("TIÊN LÃNG", "TIEN LANG"), ("KINH BẮC", "KINH BAC"), ("TOÀN CẦU", "TOAN CAU"),
    ("ÁNH DƯƠNG", "ANH DUONG"), ("HƯNG PHÁT", "HUNG PHAT"), ("THIÊN PHÚC", "THIEN PHUC"),
    ("TRÍ ĐỨC", "TRI DUC"), ("AN KHÁNH", "AN KHANH"), ("NGỌC LINH", "NGOC LINH"), ("HÀ THÀNH", "HA THANH"),
    ("SÔNG CẤM", "SONG CAM"), ("DUYÊN HẢI", "DUYEN HAI"), ("THĂNG LONG", "THANG LONG"),
    ("PHÚ QUÝ", "PHU QUY"), ("ĐẠI PHÁT", "DAI PHAT"), ("TÂN PHONG", "TAN PHONG"), ("VẠN XUÂN", "VAN XUAN"),
)
# Generic secondary activities, appended to an enterprise's trade codes.
EXTRA_VSIC: tuple[str, ...] = (
    "4620", "4641", "4652", "4663", "4722", "4773", "4933", "5210", "5610", "6810", "7310", "7410",
    "7730", "8121", "8299", "4322", "4520", "1622", "2396", "3320",
)


def weights(pairs: tuple[tuple[str, float], ...]) -> tuple[pa.Array, np.ndarray]:
    """Split (value, weight) pairs into an Arrow string array and normalised probabilities."""
    values = pa.array([v for v, _ in pairs], pa.string())
    p = np.array([w for _, w in pairs], dtype=np.float64)
    return values, p / p.sum()


def draw(rng: np.random.Generator, pairs: tuple[tuple[str, float], ...], n: int) -> pa.Array:
    """n draws from weighted values, as an Arrow string array (vectorised: one take)."""
    values, p = weights(pairs)
    return values.take(pa.array(rng.choice(len(p), size=n, p=p)))
