"""How a Chinese announcer reads numbers: the spoken form of a prepared notice.

`read_aloud` rewrites the digits in a text (after `tts.text.prepare`) into the characters an
announcer would say, so every engine reads them the same way and the cache key is the text that
is actually spoken. Rules, first match wins at each position:

- phone numbers digit by digit, 1 as 幺: mobiles (``13812345678``), landlines with area code
  (``0558-1234567``), and short hotlines after 拨打/电话/热线/号码/致电/… or before 热线
  (``12345热线`` -> 幺二三四五); any other run of 7+ digits (accounts, ID numbers) digit by digit;
- dates: ``2024年12月31日``, ``2024-12-31``, ``2024/12/31``, ``2024.12.31`` -> 二零二四年十二月三十一日;
  a four-digit year before 年 digit by digit;
- times: ``8:00`` -> 八点, ``10:05`` -> 十点零五分, ``14:30:15`` -> 十四点三十分十五秒;
- money: ``¥1,200`` / ``1200元`` -> 一千二百元, ``12.50元`` -> 十二元五角, ``3.05元`` -> 三元零五分;
- percentages ``3.5%`` -> 百分之三点五; temperatures ``-5℃`` -> 零下五摄氏度, ``-5度`` -> 零下五度;
  a score ``3:1`` (not a time) -> 三比一;
- ranges between numbers or times (``3-5天``, ``8:00-10:00``) read 到;
- other numbers as quantities (cn2an): ``1,000`` -> 一千, ``2000`` -> 两千, ``2个`` -> 两个,
  ``0.05`` -> 零点零五; a number written with leading zeros (``007``) or glued to Latin
  letters (``G105``) digit by digit.

Keep the table in tests/tts/test_reading.py in step with these rules.
"""

from __future__ import annotations

import re

import cn2an

_DIGITS = dict(zip("0123456789", "零一二三四五六七八九", strict=True))
_PHONE_DIGITS = {**_DIGITS, "1": "幺"}

# Words after which a short digit run is a number to dial, not a quantity.
_DIAL_BEFORE = r"(?:拨打|致电|电话|热线|号码|手机|呼叫|联系方式|咨询|报警|求助|举报)[:：是为]?"
# Measure words after which 2 is read 两.
_LIANG_UNITS = "个位名人次天户条件项只头台辆把张间亩斤年周小"

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"

_MOBILE = re.compile(r"(?<![\d.])1[3-9]\d{9}(?![\d.])")
_LANDLINE = re.compile(r"(?<![\d.])(0\d{2,3})-(\d{7,8})(?![\d.])")
_HOTLINE_AFTER = re.compile(rf"({_DIAL_BEFORE})(\d{{3,6}})(?![\d.])")
_HOTLINE_BEFORE = re.compile(r"(?<![\d.])(\d{3,6})(?=热线|服务热线|专线)")
_LONG_DIGITS = re.compile(r"(?<![\d.,])\d{7,}(?![\d.,])")
_DATE = re.compile(r"(?<!\d)(\d{4})(?:年(\d{1,2})月(\d{1,2})|([-/.])(\d{1,2})\4(\d{1,2})(?![\d.]))([日号]?)")
_YEAR = re.compile(r"(?<!\d)(\d{4})(?=年)")
_TIME = r"(\d{1,2}):(\d{2})(?::(\d{2}))?"
_TIME_RANGE = re.compile(rf"(?<![\d:]){_TIME}\s*[-~～—至到]\s*{_TIME}(?![\d:])")
_CLOCK = re.compile(rf"(?<![\d:]){_TIME}(?![\d:])")
_MONEY_PREFIX = re.compile(rf"[¥￥]\s*({_NUM})(?:元)?")
_MONEY_YUAN = re.compile(rf"(?<![\d.,])({_NUM})元")
_PERCENT = re.compile(rf"(?<![\d.,])(-?{_NUM})[%％]")
_TEMPERATURE = re.compile(rf"(?<![\d.,])(-?{_NUM})\s*(?:℃|°C|摄氏度)")
_BELOW_ZERO = re.compile(rf"(?<![\d.,])-({_NUM})度")
_RATIO = re.compile(r"(?<![\d:])(\d+):(\d+)(?![\d:])")
_RANGE = re.compile(rf"(?<![\d.,])({_NUM})\s*[-~～—]\s*({_NUM})(?![\d.,])")
_LATIN_NUMBER = re.compile(r"(?<=[A-Za-z])\d+|\d+(?=[A-Za-z])")
_NUMBER = re.compile(rf"(?<![\d.,])(-?)({_NUM})(?![\d,])")


def read_aloud(text: str) -> str:
    """Return text with numbers, dates, times, money and phone numbers written as they are spoken."""
    text = _MOBILE.sub(lambda m: dial(m.group(0)), text)
    text = _LANDLINE.sub(lambda m: dial(m.group(1)) + dial(m.group(2)), text)
    text = _HOTLINE_AFTER.sub(lambda m: m.group(1) + dial(m.group(2)), text)
    text = _HOTLINE_BEFORE.sub(lambda m: dial(m.group(1)), text)
    text = _DATE.sub(_date, text)
    text = _YEAR.sub(lambda m: digits(m.group(1)), text)
    text = _TIME_RANGE.sub(lambda m: _clock(*m.groups()[:3]) + "到" + _clock(*m.groups()[3:]), text)
    text = _CLOCK.sub(lambda m: _clock(*m.groups()), text)
    text = _MONEY_PREFIX.sub(lambda m: _money(m.group(1)), text)
    text = _MONEY_YUAN.sub(lambda m: _money(m.group(1)), text)
    text = _PERCENT.sub(lambda m: "百分之" + quantity(m.group(1)), text)
    text = _TEMPERATURE.sub(_temperature, text)
    text = _BELOW_ZERO.sub(lambda m: "零下" + quantity(m.group(1)) + "度", text)
    text = _RATIO.sub(lambda m: quantity(m.group(1)) + "比" + quantity(m.group(2)), text)
    text = _LONG_DIGITS.sub(lambda m: digits(m.group(0)), text)
    text = _RANGE.sub(lambda m: quantity(m.group(1)) + "到" + quantity(m.group(2)), text)
    text = _LATIN_NUMBER.sub(lambda m: digits(m.group(0)), text)
    return _NUMBER.sub(_number, text)


def digits(run: str) -> str:
    """Read a digit string one digit at a time (二零二四)."""
    return "".join(_DIGITS[d] for d in run)


def dial(run: str) -> str:
    """Read a number to dial: one digit at a time, 1 as 幺 (幺二三四五)."""
    return "".join(_PHONE_DIGITS[d] for d in run if d.isdigit())


def quantity(number: str) -> str:
    """Read a number as an amount: ``1,000.5`` -> 一千点五, ``-3`` -> 负三, ``2000`` -> 两千."""
    number = number.replace(",", "")
    negative = number.startswith("-")
    number = number.lstrip("-")
    integer, _, fraction = number.partition(".")
    if len(integer) > 1 and integer.startswith("0"):
        spoken = digits(integer)  # 007, 0558: a code, not an amount
    else:
        spoken = cn2an.an2cn(integer, "low")
        # 2000 -> 两千, 20000 -> 两万, 200000000 -> 两亿; 二十, 二百 stay.
        spoken = re.sub(r"^二(?=[千万亿])", "两", spoken)
    if fraction:
        spoken += "点" + digits(fraction)
    return ("负" if negative else "") + spoken


def _number(m: re.Match[str]) -> str:
    sign, number = m.group(1), m.group(2)
    after = m.string[m.end() : m.end() + 1]
    if number == "2" and not sign and after and after in _LIANG_UNITS:
        return "两"
    return quantity(sign + number)


def _date(m: re.Match[str]) -> str:
    year, month, day = m.group(1), m.group(2) or m.group(5), m.group(3) or m.group(6)
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31):
        return m.group(0)
    return f"{digits(year)}年{quantity(str(int(month)))}月{quantity(str(int(day)))}{m.group(7) or '日'}"


def _clock(hour: str, minute: str, second: str | None) -> str:
    h, mnt = int(hour), int(minute)
    if h > 24 or mnt > 59:
        return f"{quantity(hour)}比{quantity(minute)}"  # a score or ratio, not a time
    spoken = ("两" if h == 2 else quantity(str(h))) + "点"
    if mnt or second:
        spoken += ("零" if mnt < 10 else "") + quantity(str(mnt)) + "分"
    if second and int(second):
        spoken += quantity(str(int(second))) + "秒"
    return spoken


def _money(amount: str) -> str:
    amount = amount.replace(",", "")
    yuan, _, cents = amount.partition(".")
    cents = (cents + "00")[:2] if len(cents) <= 2 else None
    if cents is None:  # more than two decimals: read as a decimal amount
        return quantity(amount) + "元"
    jiao, fen = int(cents[0]), int(cents[1])
    spoken = quantity(yuan) + "元" if int(yuan) or not (jiao or fen) else ""
    if jiao:
        spoken += quantity(str(jiao)) + "角"
    if fen:
        spoken += ("零" if spoken and not jiao else "") + quantity(str(fen)) + "分"
    return spoken


def _temperature(m: re.Match[str]) -> str:
    value = m.group(1)
    if value.startswith("-"):
        return "零下" + quantity(value[1:]) + "摄氏度"
    return quantity(value) + "摄氏度"
