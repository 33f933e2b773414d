"""TCVN3 (ABC) and VNI for Windows: the pre-Unicode Vietnamese encodings, and the mojibake they leave.

Owns: the byte tables of both encodings for every Vietnamese letter (lower and upper case, five tones,
ă â ê ô ơ ư đ), `encode_*` / `decode_*`, `mojibake` (what a migration that read legacy bytes as Windows-1252
produced: "C«ng ty" for "Công ty" in TCVN3, "Coâng ty" in VNI) and `repair_mojibake` (detect and undo it).

Written by hand because Python has no codec for either encoding and no PyPI package provides one
(domain.md, "Vietnamese text"). Tables follow the TCVN 5712:1993 VN3 ("ABC") font layout and the
VNI-Windows font layout.

TCVN3 is single-byte and has codes only for lowercase letters plus the capitals Ă Â Ê Ô Ơ Ư Đ: capitals
with a tone were drawn by the capital variant of the font (.VnTimeH) from the lowercase code. So encoding
"Á" gives the byte of "á", and decoding alone cannot tell them apart; `repair_mojibake` restores such
capitals from the neighbouring letters. VNI writes most letters as a base ASCII letter plus a mark byte,
and is lossless.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

__all__ = [
    "decode_tcvn3",
    "decode_vni",
    "encode_tcvn3",
    "encode_vni",
    "mojibake",
    "repair_mojibake",
]

# Tone order used in every row below: grave, hook above, tilde, acute, dot below.
_TONES = ("\u0300", "\u0309", "\u0303", "\u0301", "\u0323")


def _toned(base: str) -> list[str]:
    return [unicodedata.normalize("NFC", base + t) for t in _TONES]


# --- TCVN3 (ABC) -----------------------------------------------------------------------------------
_TCVN3_PLAIN = {"Ă": 0xA1, "Â": 0xA2, "Ê": 0xA3, "Ô": 0xA4, "Ơ": 0xA5, "Ư": 0xA6, "Đ": 0xA7,
                "ă": 0xA8, "â": 0xA9, "ê": 0xAA, "ô": 0xAB, "ơ": 0xAC, "ư": 0xAD, "đ": 0xAE}
# Bytes of the lowercase toned letters, rows in _TONES order.
_TCVN3_TONED_ROWS = {
    "a": (0xB5, 0xB6, 0xB7, 0xB8, 0xB9),
    "ă": (0xBB, 0xBC, 0xBD, 0xBE, 0xC6),
    "â": (0xC7, 0xC8, 0xC9, 0xCA, 0xCB),
    "e": (0xCC, 0xCE, 0xCF, 0xD0, 0xD1),
    "ê": (0xD2, 0xD3, 0xD4, 0xD5, 0xD6),
    "i": (0xD7, 0xD8, 0xDC, 0xDD, 0xDE),
    "o": (0xDF, 0xE1, 0xE2, 0xE3, 0xE4),
    "ô": (0xE5, 0xE6, 0xE7, 0xE8, 0xE9),
    "ơ": (0xEA, 0xEB, 0xEC, 0xED, 0xEE),
    "u": (0xEF, 0xF1, 0xF2, 0xF3, 0xF4),
    "ư": (0xF5, 0xF6, 0xF7, 0xF8, 0xF9),
    "y": (0xFA, 0xFB, 0xFC, 0xFD, 0xFE),
}


def _build_tcvn3() -> tuple[dict[str, int], dict[int, str]]:
    enc: dict[str, int] = dict(_TCVN3_PLAIN)
    for base, codes in _TCVN3_TONED_ROWS.items():
        for ch, code in zip(_toned(base), codes, strict=True):
            enc[ch] = code
            # No code of its own: the capital shares the lowercase byte (see module docstring).
            enc.setdefault(ch.upper(), code)
    dec = {code: ch for ch, code in enc.items() if not (ch.isupper() and ch.lower() in enc and
                                                         enc[ch.lower()] == code)}
    return enc, dec


_TCVN3_ENC, _TCVN3_DEC = _build_tcvn3()

# --- VNI for Windows --------------------------------------------------------------------------------
# Mark bytes (lowercase form; the uppercase form is the byte minus 0x20), per tone in _TONES order.
_VNI_TONE = (0xF8, 0xFB, 0xF5, 0xF9, 0xEF)  # ø û õ ù ï : plain vowel + tone
_VNI_CIRC = (0xE0, 0xE5, 0xE3, 0xE1, 0xE4)  # à å ã á ä : circumflex + tone
_VNI_BREVE = (0xE8, 0xFA, 0xFC, 0xE9, 0xEB)  # è ú ü é ë : breve + tone
_VNI_CIRC_PLAIN, _VNI_BREVE_PLAIN = 0xE2, 0xEA  # â, ê
_VNI_SINGLE_LOWER = {"ơ": 0xF4, "ư": 0xF6, "đ": 0xF1}
# i and ỵ are single bytes: ì ỉ ĩ í ị, and ỵ.
_VNI_I = (0xEC, 0xE6, 0xF3, 0xED, 0xF2)
_VNI_Y_DOT = 0xEE


def _build_vni() -> tuple[dict[str, bytes], dict[bytes, str]]:
    lower: dict[str, bytes] = {}
    for base in "aeouy":
        for ch, mark in zip(_toned(base), _VNI_TONE, strict=True):
            lower[ch] = base.encode() + bytes([mark])
    lower["ỵ"] = bytes([_VNI_Y_DOT])
    for base, plain in (("â", "a"), ("ê", "e"), ("ô", "o")):
        lower[base] = plain.encode() + bytes([_VNI_CIRC_PLAIN])
        for ch, mark in zip(_toned(base), _VNI_CIRC, strict=True):
            lower[ch] = plain.encode() + bytes([mark])
    lower["ă"] = b"a" + bytes([_VNI_BREVE_PLAIN])
    for ch, mark in zip(_toned("ă"), _VNI_BREVE, strict=True):
        lower[ch] = b"a" + bytes([mark])
    for base, code in (("ơ", 0xF4), ("ư", 0xF6)):
        lower[base] = bytes([code])
        for ch, mark in zip(_toned(base), _VNI_TONE, strict=True):
            lower[ch] = bytes([code, mark])
    lower["đ"] = bytes([_VNI_SINGLE_LOWER["đ"]])
    for ch, code in zip(_toned("i"), _VNI_I, strict=True):
        lower[ch] = bytes([code])
    enc: dict[str, bytes] = {}
    for ch, seq in lower.items():
        enc[ch] = seq
        # Capitals: ASCII base upper-cased, every byte >= 0xC0 moved down by 0x20 (Ù for ù, Ô for ô ...).
        enc[ch.upper()] = bytes(b - 0x20 if b >= 0xE0 else (b - 0x20 if 0x61 <= b <= 0x7A else b) for b in seq)
    dec = {seq: ch for ch, seq in enc.items()}
    return enc, dec


_VNI_ENC, _VNI_DEC = _build_vni()


# --- encode / decode --------------------------------------------------------------------------------
def encode_tcvn3(text: str) -> bytes:
    """Unicode -> TCVN3 bytes. Characters TCVN3 cannot hold become '?'; capitals with a tone share the
    lowercase code (the font drew the capital), so this is lossy for them."""
    out = bytearray()
    for ch in unicodedata.normalize("NFC", text):
        if ord(ch) < 0x80:
            out.append(ord(ch))
        else:
            out.append(_TCVN3_ENC.get(ch, 0x3F))
    return bytes(out)


def decode_tcvn3(data: bytes) -> str:
    """TCVN3 bytes -> Unicode (NFC). Bytes that are not Vietnamese letters decode as Latin-1."""
    return "".join(chr(b) if b < 0x80 else _TCVN3_DEC.get(b, chr(b)) for b in data)


def encode_vni(text: str) -> bytes:
    """Unicode -> VNI-Windows bytes. Characters VNI cannot hold become '?'."""
    out = bytearray()
    for ch in unicodedata.normalize("NFC", text):
        if ord(ch) < 0x80:
            out.append(ord(ch))
        else:
            out += _VNI_ENC.get(ch, b"?")
    return bytes(out)


def decode_vni(data: bytes) -> str:
    """VNI-Windows bytes -> Unicode (NFC); a base letter and its mark byte are read together."""
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        pair = data[i:i + 2]
        if len(pair) == 2 and pair in _VNI_DEC:
            out.append(_VNI_DEC[pair])
            i += 2
            continue
        b = data[i]
        out.append(chr(b) if b < 0x80 else _VNI_DEC.get(bytes([b]), chr(b)))
        i += 1
    return "".join(out)


# --- mojibake ---------------------------------------------------------------------------------------
def _cp1252_table() -> tuple[str, dict[str, int]]:
    chars = []
    for b in range(256):
        try:
            chars.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:
            # cp1252 leaves 0x81 0x8D 0x8F 0x90 0x9D undefined; readers fell back to Latin-1 there.
            chars.append(chr(b))
    return "".join(chars), {c: b for b, c in enumerate(chars)}


_CP1252, _CP1252_REV = _cp1252_table()
_ENCODERS = {"tcvn3": encode_tcvn3, "vni": encode_vni}
_DECODERS = {"tcvn3": decode_tcvn3, "vni": decode_vni}


def mojibake(text: str, encoding: str) -> str:
    """What an old system's Vietnamese text looks like after migration: encoded in `encoding`
    ('tcvn3' or 'vni'), then the bytes mis-read as Windows-1252 (Latin-1 for its undefined bytes)."""
    data = _ENCODERS[encoding](text)
    return "".join(_CP1252[b] for b in data)


def _as_legacy_bytes(text: str) -> bytes | None:
    """The bytes a mis-decoded text came from, or None if some character cannot come from one byte."""
    out = bytearray()
    for ch in text:
        b = _CP1252_REV.get(ch)
        if b is None:
            return None
        out.append(b)
    return bytes(out)


# Vietnamese syllable shape, tones removed: onset, nucleus, coda. Used only to score candidates.
_VIETNAMESE_LETTERS = frozenset(_TCVN3_ENC) | frozenset(_VNI_ENC)
_SYLLABLE = re.compile(
    r"(ngh|ng|gh|gi|kh|nh|ph|th|tr|ch|qu(?!u)|[bcdđghklmnprstvx])?"
    # "oo" (xoong, boong) is left out on purpose: it is rare, and it makes VNI's "oâ" read as TCVN3.
    r"(uyê|uya|ươ|uô|iê|yê|ưa|ua|ia|oa|oă|oe|uê|uy|uâ|uơ|[aăâeêioôơuưy])"
    r"(ng|nh|ch|[cmnptiyou])?"
)
_WORD = re.compile(r"[^\W\d_]+")
_TONE_MARKS = set(_TONES)


def _is_syllable(word: str) -> bool:
    """True if `word` has the shape of one Vietnamese syllable with at most one tone, carried by the
    nucleus (a tone on the final glide, as in VNI's "Thuyù", is not Vietnamese)."""
    word = unicodedata.normalize("NFC", word.lower())
    toned = [i for i, ch in enumerate(word) if _TONE_MARKS & set(unicodedata.normalize("NFD", ch))]
    if len(toned) > 1:
        return False
    bare = "".join(
        unicodedata.normalize("NFC", "".join(c for c in unicodedata.normalize("NFD", ch) if c not in _TONE_MARKS))
        for ch in word
    )
    m = _SYLLABLE.fullmatch(bare)
    if m is None:
        return False
    return not toned or m.start(2) <= toned[0] < m.end(2)


def _score(text: str) -> int:
    """Higher = more like Vietnamese: +1 per valid syllable, -1 per non-ASCII word that is not one,
    -1 per non-ASCII character that is not a Vietnamese letter (the « ¸ µ of TCVN3, the ä ë ï ö ü û of
    VNI)."""
    score = 0
    for word in _WORD.findall(text):
        if _is_syllable(word):
            score += 1
        elif not word.isascii():
            score -= 1
    score -= sum(1 for ch in text if ord(ch) >= 0x80 and ch not in _VIETNAMESE_LETTERS)
    return score


# Lowercase toned letters whose capital has no TCVN3 code: their case is lost in TCVN3.
_CASE_LOST = frozenset(ch for ch, code in _TCVN3_ENC.items() if ch.islower() and _TCVN3_ENC.get(ch.upper()) == code)


def _restore_case(text: str) -> str:
    """Undo TCVN3's lost capitals from the letters around them: a word whose known letters after the
    first are capitals is written in capitals; a word known only by its capital first letter ("Sè") is
    in capitals only if the whole text is; a lost first letter becomes a capital when the neighbouring
    words are capitalised ("Nguyễn Văn ánh" -> "Ánh") or it starts the text."""
    words = list(_WORD.finditer(text))

    def known(word: str) -> list[tuple[int, str]]:
        return [(j, ch) for j, ch in enumerate(word) if ch not in _CASE_LOST and ch.lower() != ch.upper()]

    tails = [ch for m in words for j, ch in known(m.group()) if j > 0]
    text_in_caps = bool(tails) and all(ch.isupper() for ch in tails)
    chars = list(text)
    for k, m in enumerate(words):
        word = m.group()
        if not any(ch in _CASE_LOST for ch in word):
            continue
        kn = known(word)
        tail = [ch for j, ch in kn if j > 0]
        if tail:
            caps = all(ch.isupper() for ch in tail)
        elif kn:  # only the first letter is known
            caps = text_in_caps and kn[0][1].isupper()
        else:
            caps = text_in_caps
        if caps:
            for j, ch in enumerate(word):
                if ch in _CASE_LOST:
                    chars[m.start() + j] = ch.upper()
        elif word[0] in _CASE_LOST:
            # Neighbours read from the already-restored text; a neighbour whose own first letter lost
            # its case says nothing, so at least one known, capitalised neighbour is needed.
            firsts = [chars[words[j].start()] for j in (k - 1, k + 1) if 0 <= j < len(words)]
            known_firsts = [c for c in firsts if c not in _CASE_LOST]
            # The first word of a field (a name, an address, a title) starts with a capital.
            if k == 0 or (known_firsts and all(c.isupper() for c in known_firsts)):
                chars[m.start()] = word[0].upper()
    return "".join(chars)


def repair_mojibake(text: str) -> tuple[str, str | None]:
    """Detect TCVN3 or VNI mojibake and undo it: (repaired NFC text, 'tcvn3' | 'vni'), or
    (text unchanged, None) when the text already reads as Unicode Vietnamese (or plain ASCII)."""
    data = _as_legacy_bytes(text)
    if data is None or data.isascii():
        return text, None
    best, best_enc, best_score = text, None, _score(text)
    for name in ("tcvn3", "vni"):
        candidate = _DECODERS[name](data)
        if name == "tcvn3":
            candidate = _restore_case(candidate)
        score = _score(candidate)
        if score > best_score:
            best, best_enc, best_score = candidate, name, score
    return best, best_enc


def legacy_tables() -> Mapping[str, Mapping[str, bytes]]:
    """Both encode tables, for tests and documentation: {'tcvn3': {char: bytes}, 'vni': {...}}."""
    return {"tcvn3": {c: bytes([b]) for c, b in _TCVN3_ENC.items()}, "vni": dict(_VNI_ENC)}
