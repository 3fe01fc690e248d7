"""Numbers read the way a Chinese announcer reads them (table-driven: add a row per new rule)."""

from __future__ import annotations

import pytest

from tts.reading import read_aloud
from tts.text import prepare

READING_CASES = [
    # (written, spoken)
    # dates
    ("缴费截止日期为2024年12月31日。", "缴费截止日期为二零二四年十二月三十一日。"),
    ("截止2024-12-31", "截止二零二四年十二月三十一日"),
    ("2025/1/5起", "二零二五年一月五日起"),
    ("2024.12.31", "二零二四年十二月三十一日"),
    ("2024年", "二零二四年"),
    ("12月31日", "十二月三十一日"),
    ("5月1号放假", "五月一号放假"),
    # times
    ("上午10:30开会", "上午十点三十分开会"),
    ("10:05", "十点零五分"),
    ("2:00", "两点"),
    ("14:30:15", "十四点三十分十五秒"),
    ("8:00-10:00", "八点到十点"),
    ("比分3:1", "比分三比一"),
    # money
    ("金额1,000.5元", "金额一千元五角"),
    ("每人12.50元", "每人十二元五角"),
    ("3.05元", "三元零五分"),
    ("0.5元", "五角"),
    ("¥1,200", "一千二百元"),
    ("共计3000元", "共计三千元"),
    ("补贴1.5万元", "补贴一点五万元"),
    # phone numbers and codes, digit by digit, 1 as 幺
    ("请拨打13812345678咨询", "请拨打幺三八幺二三四五六七八咨询"),
    ("电话：0558-1234567", "电话：零五五八幺二三四五六七"),
    ("请拨打12345热线", "请拨打幺二三四五热线"),
    ("报警电话110", "报警电话幺幺零"),
    ("账号6222021234567890", "账号六二二二零二一二三四五六七八九零"),
    ("G105国道", "G一零五国道"),
    ("007号", "零零七号"),
    # quantities
    ("增长3.5%", "增长百分之三点五"),
    ("-5℃", "零下五摄氏度"),
    ("气温-5度", "气温零下五度"),
    ("3-5天", "三到五天"),
    ("共2000人", "共两千人"),
    ("2个", "两个"),
    ("20个", "二十个"),
    ("第2号", "第二号"),
    ("0.05", "零点零五"),
    ("1,000", "一千"),
    ("10000", "一万"),
    ("22人", "二十二人"),
    # nothing to do
    ("各位村民请注意。", "各位村民请注意。"),
    ("十二月三十一日", "十二月三十一日"),
]


@pytest.mark.parametrize(("written", "spoken"), READING_CASES)
def test_read_aloud(written: str, spoken: str) -> None:
    assert read_aloud(written) == spoken


def test_full_width_digits_are_read_after_preparation() -> None:
    assert read_aloud(prepare("请于１２月３１日前拨打１３８１２３４５６７８。")) == (
        "请于十二月三十一日前拨打幺三八幺二三四五六七八。"
    )


def test_spoken_text_has_no_digits_left() -> None:
    notice = prepare(
        "各位村民：2024年度医保缴费标准为每人380元，截止日期2024-12-31，"
        "缴费时间8:30-17:00，咨询电话0558-6512345或13912345678，已有85.5%的村民缴费。"
    )
    spoken = read_aloud(notice)
    assert not any(ch.isdigit() for ch in spoken), spoken
