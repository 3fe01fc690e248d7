"""The most obvious passwords, refused at account creation and password change.

The list is generated here rather than copied from a leaked-password corpus (no licence question,
nothing to download): the words and number runs that top every published list of common
passwords (English and the pinyin/number ones common in China), each alone, doubled, capitalised
and followed by the usual suffixes (digit runs, years, lucky numbers). Only those of at least 8
characters matter (shorter ones are refused anyway). Compared without regard to case.
"""

from __future__ import annotations

from functools import cache

# Words and runs found at the top of common-password lists (English; pinyin and numbers from China).
BASES = (
    "password passwd pass admin administrator root user guest test demo login welcome letmein "
    "iloveyou love qwerty qwertyuiop asdf asdfgh asdfghjkl zxcvbn zxcvbnm qazwsx qwerasdf 1qaz2wsx "
    "abc abcd abcdef abcdefg abcdefgh abc123 a123456 aa123456 123qwe qwe123 monkey dragon master "
    "shadow sunshine princess football baseball superman batman trustno1 whatever freedom "
    "hello hello123 secret changeme default system server computer internet "
    "woaini woaini1314 aini1314 wodemima mima zhangwei wangwei liwei caonima nihao "
    "cunxiang guangbo laba gonggao"
).split()
# Digit runs and numbers people pick (sequences, repeats, dates of luck: 520 = I love you, 1314 = forever).
NUMBERS = (
    "1 12 123 1234 12345 123456 1234567 12345678 123456789 1234567890 0123456789 987654321 "
    "11111111 00000000 88888888 66666666 12341234 11223344 147258369 159357 5201314 1314520 "
    "520 1314 666 888 999 000 111 2000 2008 2010 2020 2021 2022 2023 2024 2025 2026 2027 !"
).split()


@cache
def common() -> frozenset[str]:
    """The refused passwords, lower-cased (some thousands)."""
    found: set[str] = set()
    for base in BASES:
        for word in (base, base + base):
            found.add(word)
            for number in NUMBERS:
                found.update((word + number, number + word))
                found.add(word + number + "!")
    for number in NUMBERS:
        found.add(number)
        for repeat in (2, 3):
            found.add(number * repeat)
    for digit in "0123456789":
        for length in range(8, 17):
            found.add(digit * length)
    for length in range(8, 11):
        found.add("1234567890"[:length])
        found.add("9876543210"[:length])
    return frozenset(p.lower() for p in found if len(p) >= 8)


def is_common(password: str, *, username: str | None = None) -> bool:
    """Whether `password` is one of the obvious ones (or the username, alone or doubled)."""
    lowered = password.lower()
    if username and lowered in (username.lower(), username.lower() * 2):
        return True
    return lowered in common()
