"""Generate demo_county.json: 阜南县 (Funan County, Anhui) at real scale, deterministically.

Run from the repository root:  python core/data/make_demo_county.py

The 28 townships are Funan's real towns and townships plus two invented ones; the 334
village names are invented (surname + place suffix + 村) and unique in the county.
Populations are random but plausible and sum to about 1.7 million; households are
population / ~3.3. The same seed always produces the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 341225
OUT = Path(__file__).with_name("demo_county.json")

COUNTY_CODE = "341225000000"
COUNTY_NAME = "阜南县"
VILLAGE_COUNT = 334
MIN_VILLAGES, MAX_VILLAGES = 8, 18
TARGET_POPULATION = 1_710_000

# 镇 get township codes 100.., 乡 get 200.. (as in many real code tables).
TOWNS = [
    "鹿城镇", "会龙镇", "王家坝镇", "王化镇", "洪河桥镇", "方集镇", "中岗镇", "柴集镇",
    "新村镇", "朱寨镇", "地城镇", "黄岗镇", "焦陂镇", "张寨镇", "王堰镇", "苗集镇",
    "赵集镇", "田集镇", "曹集镇", "三塔镇", "宋集镇",
]  # fmt: skip
XIANG = ["段郢乡", "公桥乡", "郜台乡", "于集乡", "老观乡", "龙王乡", "许堂乡"]

SURNAMES = (
    "张李王刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董程曹袁邓许沈曾彭吕苏卢蒋"
    "蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟"
    "龙万段雷钱汤尹黎易常武乔贺赖龚文"
)
SUFFIXES = list("庄楼集营寨湖岗圩郢店桥塘洼台园湾寺")


def _village_counts(rng: random.Random, townships: int) -> list[int]:
    """Spread VILLAGE_COUNT over the townships unevenly, each within [MIN, MAX]."""
    counts = [MIN_VILLAGES] * townships
    extra = VILLAGE_COUNT - sum(counts)
    while extra:
        i = rng.randrange(townships)
        if counts[i] < MAX_VILLAGES:
            counts[i] += 1
            extra -= 1
    return counts


def _village_names(rng: random.Random) -> list[str]:
    """VILLAGE_COUNT distinct names like 张庄村, a few with a direction prefix (东李楼村)."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < VILLAGE_COUNT:
        name = rng.choice(SURNAMES) + rng.choice(SUFFIXES)
        if rng.random() < 0.08:
            name = rng.choice("东西南北前后大小") + name
        name += "村"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _households(rng: random.Random, population: int) -> int:
    return round(population / rng.uniform(3.1, 3.5))


def build() -> list[dict[str, object]]:
    """All rows of the demo county, parents first."""
    rng = random.Random(SEED)
    township_codes = [f"341225{100 + i}000" for i in range(len(TOWNS))]
    township_codes += [f"341225{200 + i}000" for i in range(len(XIANG))]
    township_names = TOWNS + XIANG
    counts = _village_counts(rng, len(township_names))
    names = iter(_village_names(rng))

    # Raw village sizes: the county seat (鹿城镇) has bigger villages; then scale to the target.
    villages: list[tuple[str, str, float]] = []
    for t, (tcode, count) in enumerate(zip(township_codes, counts, strict=True)):
        scale = 1.5 if t == 0 else 1.0
        for v in range(count):
            size = scale * rng.lognormvariate(0, 0.3)
            villages.append((tcode, f"{tcode[:9]}{201 + v}", size))
    factor = TARGET_POPULATION / sum(size for _, _, size in villages)

    village_rows: dict[str, list[dict[str, object]]] = {code: [] for code in township_codes}
    for tcode, vcode, size in villages:
        population = max(800, round(size * factor))
        village_rows[tcode].append(
            {
                "code": vcode,
                "name": next(names),
                "level": "village",
                "parent_code": tcode,
                "population": population,
                "households": _households(rng, population),
            }
        )

    township_rows = []
    for tcode, tname in zip(township_codes, township_names, strict=True):
        population = sum(int(r["population"]) for r in village_rows[tcode])
        households = sum(int(r["households"]) for r in village_rows[tcode])
        township_rows.append(
            {
                "code": tcode,
                "name": tname,
                "level": "township",
                "parent_code": COUNTY_CODE,
                "population": population,
                "households": households,
            }
        )
    county = {
        "code": COUNTY_CODE,
        "name": COUNTY_NAME,
        "level": "county",
        "parent_code": None,
        "population": sum(int(r["population"]) for r in township_rows),
        "households": sum(int(r["households"]) for r in township_rows),
    }
    rows: list[dict[str, object]] = [county, *township_rows]
    for tcode in township_codes:
        rows.extend(village_rows[tcode])
    return rows


def main() -> None:
    rows = build()
    # One region per line: small diffs when the generator changes.
    text = "[\n" + ",\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n]\n"
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(rows)} regions, population {rows[0]['population']}, to {OUT}")


if __name__ == "__main__":
    main()
