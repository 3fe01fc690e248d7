"""Text preparation before synthesis: canonical characters and whitespace, then pieces.

`prepare` makes one canonical form of a notice, so that texts differing only in full-width vs.
half-width characters or stray spaces share one cache entry and are read the same way:

- full-width ASCII letters and digits become half-width (``２０２４`` -> ``2024``);
- clause and sentence punctuation becomes the Chinese full-width form (``,`` -> ``，``) except
  inside numbers and words (``1,000``, ``10:30``, ``3.5``, ``gov.cn`` are kept);
- spaces are collapsed, and dropped next to Chinese characters and punctuation;
- line breaks are kept (one per paragraph): they are hard piece boundaries and read as a pause.

`split` cuts a prepared text into pieces of at most ``max_chars`` characters, at line breaks and
after 。！？；, falling back to ，、： and finally to a cut that does not break a Latin word or a
number. It never cuts inside a character (it works on code points, and keeps combining marks
with their base).

Numbers, dates, times, money and phone numbers are rewritten as spoken after this step, by
`tts.reading.read_aloud`; keep the tests of both table-driven.
"""

from __future__ import annotations

import re
import unicodedata

from core.errors import InvalidInput

# Full-width forms of ASCII letters and digits (U+FF10.., U+FF21.., U+FF41..) -> ASCII.
_FULLWIDTH_ALNUM = {
    **{0xFF10 + i: ord("0") + i for i in range(10)},
    **{0xFF21 + i: ord("A") + i for i in range(26)},
    **{0xFF41 + i: ord("a") + i for i in range(26)},
}

# Characters that carry nothing to read and confuse engines.
_INVISIBLE = {ord(c): None for c in "\u200b\u200c\u200d\u2060\ufeff\u00ad"}

# Spaces of every width become an ordinary space; other line separators become a newline.
_SPACES = {
    ord(c): " "
    for c in "\t\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u202f\u205f\u3000\x0b\x0c"
}
_NEWLINES = {ord(c): "\n" for c in "\r\u0085\u2028\u2029"}

# Half-width punctuation -> Chinese form, applied unless both neighbours are ASCII letters/digits.
_TO_FULLWIDTH = {
    ",": "，",
    ".": "。",
    "!": "！",
    "?": "？",
    ";": "；",
    ":": "：",
    "(": "（",
    ")": "）",
}
# Full-width punctuation that has a single Chinese canonical form already.
_CANONICAL = str.maketrans({"．": "。", "｡": "。", "､": "、", "﹐": "，", "﹔": "；", "﹖": "？", "﹗": "！"})

# CJK ideographs, kana, CJK and full-width punctuation.
_CJK = re.compile(
    r"[\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
)

# Where a piece may end, best first: after a sentence, after a clause.
SENTENCE_ENDS = "。！？；"
CLAUSE_ENDS = "，、：…—"
# Closing marks that stay with the sentence they close.
_CLOSERS = "”’」』）》〉】〕\"')"

DEFAULT_PIECE_CHARS = 200


class TextError(InvalidInput):
    """The text cannot be spoken (empty, only punctuation, or too long); field ``text``."""

    def __init__(self, message: str) -> None:
        super().__init__("text", message)

    def __str__(self) -> str:
        # The field is the whole text: the message alone reads better to staff.
        return self.message


def prepare(text: str, *, max_chars: int | None = None) -> str:
    """Return the canonical form of a notice text; TextError if nothing is left to read."""
    if not isinstance(text, str):
        raise TextError("text must be a string")
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").translate(_NEWLINES).translate(_INVISIBLE)
    text = text.translate(_SPACES).translate(_FULLWIDTH_ALNUM).translate(_CANONICAL)
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) != "Cc")
    text = _punctuation_to_fullwidth(text)
    lines = [_squeeze_spaces(line) for line in text.split("\n")]
    text = "\n".join(line for line in lines if line)
    if not any(ch.isalnum() for ch in text):
        raise TextError("text is empty: nothing to read")
    if max_chars is not None and len(text) > max_chars:
        raise TextError(f"text is {len(text)} characters; at most {max_chars} are accepted")
    return text


def split(text: str, *, max_chars: int = DEFAULT_PIECE_CHARS) -> list[str]:
    """Cut prepared text into pieces of at most max_chars, at sentence ends where possible."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    pieces: list[str] = []
    for line in text.split("\n"):
        current = ""
        for sentence in _sentences(line):
            for part in _fit(sentence, max_chars):
                if len(current) + len(part) <= max_chars:
                    current += part
                else:
                    if current:
                        pieces.append(current)
                    current = part
        if current:
            pieces.append(current)
    return [p for p in (piece.strip() for piece in pieces) if p]


def _is_word_char(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _punctuation_to_fullwidth(text: str) -> str:
    out = []
    for i, ch in enumerate(text):
        full = _TO_FULLWIDTH.get(ch)
        if full is not None:
            before = text[i - 1] if i > 0 else ""
            after = text[i + 1] if i + 1 < len(text) else ""
            # 1,000 / 10:30 / 3.5 / gov.cn / v2.0 stay as written.
            if not (_is_word_char(before) and _is_word_char(after)):
                ch = full
        out.append(ch)
    return "".join(out)


def _squeeze_spaces(line: str) -> str:
    line = re.sub(r" +", " ", line.strip())
    # Chinese is written without spaces; a space next to a Chinese character or punctuation
    # mark is a typing accident, and some engines read it as a pause.
    return re.sub(r" (?=" + _CJK.pattern + r")|(?<=" + _CJK.pattern + r") ", "", line)


def _sentences(line: str) -> list[str]:
    """Split a line after each sentence end (with its closing quotes), keeping every character."""
    ends, closers = re.escape(SENTENCE_ENDS), re.escape(_CLOSERS)
    return [s for s in re.findall(f"[^{ends}]*(?:[{ends}]+[{closers}]*)?", line) if s]


def _fit(sentence: str, max_chars: int) -> list[str]:
    """Cut one sentence that is too long at clause ends, then at a safe character boundary."""
    parts: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]
        cut = max(window.rfind(ch, 0, max_chars) for ch in CLAUSE_ENDS) + 1
        if cut <= 0:
            cut = _safe_cut(rest, max_chars)
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        parts.append(rest)
    return parts


def _safe_cut(text: str, limit: int) -> int:
    """The largest cut position <= limit that splits neither a Latin word/number nor a character."""
    for cut in range(limit, 0, -1):
        left, right = text[cut - 1], text[cut]
        if unicodedata.combining(right) or right in "\u200d\ufe0f":
            continue
        if _is_word_char(left) and _is_word_char(right):
            continue
        if "\ud800" <= left <= "\udbff":
            continue
        return cut
    # One unbroken word longer than the limit: cut it anyway, but not before a combining mark.
    cut = limit
    while cut > 1 and unicodedata.combining(text[cut]):
        cut -= 1
    return cut
