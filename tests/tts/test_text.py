"""Text preparation and splitting (table-driven: add a row when you teach it something new)."""

from __future__ import annotations

import pytest

from tts.text import TextError, prepare, split

PREPARE_CASES = [
    # (given, expected)
    ("各位村民请注意。", "各位村民请注意。"),
    ("  各位村民  请注意 。 ", "各位村民请注意。"),
    ("各位村民请注意,明天停水!", "各位村民请注意，明天停水！"),
    ("真的吗?是的;好的:开始.", "真的吗？是的；好的：开始。"),
    ("缴费截止日期为１２月３１日。", "缴费截止日期为12月31日。"),
    ("ＡＢＣ村", "ABC村"),
    ("时间10:30,金额1,000.5元", "时间10:30，金额1,000.5元"),
    ("网址www.gov.cn", "网址www.gov.cn"),
    ("通知(第2号)", "通知（第2号）"),
    ("第一行\r\n\r\n\r\n第二行\r第三行", "第一行\n第二行\n第三行"),
    ("全角\u3000空格", "全角空格"),
    ("零宽\u200b字符\ufeff", "零宽字符"),
    ("控制\x07字符", "控制字符"),
    ("half width words  stay  apart", "half width words stay apart"),
    ("请拨打 12345 热线", "请拨打12345热线"),
]


@pytest.mark.parametrize(("given", "expected"), PREPARE_CASES)
def test_prepare_canonical_form(given: str, expected: str) -> None:
    assert prepare(given) == expected


def test_prepare_is_idempotent() -> None:
    for given, _ in PREPARE_CASES:
        once = prepare(given)
        assert prepare(once) == once


@pytest.mark.parametrize("given", ["", "   ", "\n\r\n\t", "\u3000\u3000", "。，！？", "...!!!", "\u200b"])
def test_prepare_rejects_text_with_nothing_to_read(given: str) -> None:
    with pytest.raises(TextError, match="empty"):
        prepare(given)


def test_prepare_rejects_too_long_text() -> None:
    with pytest.raises(TextError, match="at most 10"):
        prepare("一" * 11, max_chars=10)
    assert prepare("一" * 10, max_chars=10) == "一" * 10


SPLIT_CASES = [
    # (text, max_chars, expected pieces)
    ("短句。", 20, ["短句。"]),
    ("第一句。第二句！第三句？", 20, ["第一句。第二句！第三句？"]),
    ("第一句。第二句！第三句？", 5, ["第一句。", "第二句！", "第三句？"]),
    ("第一句。第二句！第三句？", 8, ["第一句。第二句！", "第三句？"]),
    ("他说：“走吧。”然后走了。", 8, ["他说：“走吧。”", "然后走了。"]),
    ("他说：“走吧。”然后走了。", 7, ["他说：", "“走吧。”", "然后走了。"]),
    ("甲乙；丙丁。", 3, ["甲乙；", "丙丁。"]),
    ("标题\n正文第一句。", 50, ["标题", "正文第一句。"]),
    ("一二三四五，六七八九十，壹贰叁", 8, ["一二三四五，", "六七八九十，", "壹贰叁"]),
    ("一" * 12, 5, ["一" * 5, "一" * 5, "一" * 2]),
    ("电话12345678请记好", 8, ["电话", "12345678", "请记好"]),
    ("abc 2024 defgh", 7, ["abc", "2024", "defgh"]),
    # A combining accent stays with its letter.
    ("一二e\u0301三", 3, ["一二", "e\u0301三"]),
]


@pytest.mark.parametrize(("text", "max_chars", "expected"), SPLIT_CASES)
def test_split_pieces(text: str, max_chars: int, expected: list[str]) -> None:
    pieces = split(text, max_chars=max_chars)
    assert pieces == expected
    assert all(len(p) <= max_chars for p in pieces)


def test_split_keeps_every_character_of_a_long_notice() -> None:
    sentence = "各位村民请注意，今年城乡居民医保缴费截止日期为十二月三十一日。"
    text = prepare((sentence + "请相互转告！\n") * 40)
    pieces = split(text, max_chars=200)
    assert len(pieces) > 1
    assert all(len(p) <= 200 for p in pieces)
    assert "".join(pieces) == text.replace("\n", "")
    # Pieces end at sentence boundaries when the text offers them.
    assert all(p[-1] in "。！？；" for p in pieces)
