from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from core import regions
from core.models import RegionLevel
from core.regions import ImportResult, InvalidRegionCode, RegionImportError

COUNTY = "341225000000"
TOWN = "341225100000"
VILLAGE = "341225100201"
HEADER = "code,name,level,parent_code,population,households\n"


def write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# --- the shipped demo file --------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_rows() -> list[dict]:
    return json.loads(regions.DEMO_FILE.read_text(encoding="utf-8"))


def test_demo_file_has_funan_at_real_scale(demo_rows):
    levels = Counter(row["level"] for row in demo_rows)
    assert levels == {"county": 1, "township": 28, "village": 334}
    county = demo_rows[0]
    assert (county["code"], county["name"], county["parent_code"]) == (COUNTY, "阜南县", None)
    assert 1_600_000 <= county["population"] <= 1_800_000
    assert 3.0 <= county["population"] / county["households"] <= 3.6


def test_demo_file_codes_are_unique_and_consistent(demo_rows):
    codes = [row["code"] for row in demo_rows]
    assert len(codes) == len(set(codes))
    by_code = {row["code"]: row for row in demo_rows}
    for row in demo_rows:
        assert regions.validate_code(row["code"]).value == row["level"]
        assert row["parent_code"] == regions.parent_of(row["code"])
        if row["parent_code"]:
            assert row["parent_code"] in by_code
        assert row["population"] > 0 and row["households"] > 0


def test_demo_file_names_and_spread(demo_rows):
    townships = [row for row in demo_rows if row["level"] == "township"]
    assert len({t["name"] for t in townships}) == 28
    assert all(t["name"].endswith(("镇", "乡")) for t in townships)
    per_town = Counter(row["parent_code"] for row in demo_rows if row["level"] == "village")
    assert set(per_town) == {t["code"] for t in townships}
    assert all(8 <= n <= 18 for n in per_town.values())
    assert len(set(per_town.values())) > 3  # uneven
    for town in townships:
        names = [r["name"] for r in demo_rows if r["parent_code"] == town["code"]]
        assert len(names) == len(set(names))
        assert all(name.endswith("村") for name in names)


def test_demo_generator_is_deterministic(demo_rows):
    from core.data import make_demo_county

    assert make_demo_county.build() == demo_rows


def test_load_demo_imports_once(session):
    first = regions.load_demo(session=session)
    assert first == ImportResult(created=363, updated=0)
    assert regions.count_regions(session=session) == 363
    assert regions.load_demo(session=session) == ImportResult()
    county = regions.get_by_code(session=session, code=COUNTY)
    assert county is not None and county.name == "阜南县" and county.level is RegionLevel.county


# --- code helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "level", "parent"),
    [
        (COUNTY, RegionLevel.county, None),
        (TOWN, RegionLevel.township, COUNTY),
        (VILLAGE, RegionLevel.village, TOWN),
        ("341225200000", RegionLevel.township, COUNTY),
    ],
)
def test_level_and_parent_come_from_the_code(code, level, parent):
    assert regions.validate_code(code) is level
    assert regions.parent_of(code) == parent


@pytest.mark.parametrize(
    "code",
    [
        "",
        "34122510020",
        "3412251002011",
        "34122510020a",
        "000000100201",
        "341225000201",
        "３４１２２５１００２０１",
    ],
)
def test_invalid_codes_are_rejected(code):
    with pytest.raises(InvalidRegionCode):
        regions.validate_code(code)


def test_is_under_and_chain():
    assert regions.is_under(VILLAGE, COUNTY)
    assert regions.is_under(VILLAGE, TOWN)
    assert regions.is_under(VILLAGE, VILLAGE)
    assert regions.is_under(TOWN, COUNTY)
    assert not regions.is_under(COUNTY, TOWN)
    assert not regions.is_under("341225101201", TOWN)
    assert not regions.is_under("341226100201", COUNTY)
    assert regions.chain(VILLAGE) == [COUNTY, TOWN, VILLAGE]
    assert regions.chain(COUNTY) == [COUNTY]


def test_children_and_descendant_villages(session):
    regions.load_demo(session=session)
    roots, total = regions.list_children(session=session, parent_code=None, limit=10, offset=0)
    assert total == 1 and [r.code for r in roots] == [COUNTY]

    page1, total = regions.list_children(session=session, parent_code=COUNTY, limit=20, offset=0)
    page2, _ = regions.list_children(session=session, parent_code=COUNTY, limit=20, offset=20)
    assert total == 28 and len(page1) == 20 and len(page2) == 8
    assert [r.code for r in page1 + page2] == sorted(r.code for r in page1 + page2)

    county_villages = regions.descendant_villages(session=session, code=COUNTY)
    assert len(county_villages) == 334
    town_villages = regions.descendant_villages(session=session, code=TOWN)
    town_children, _ = regions.list_children(session=session, parent_code=TOWN, limit=100, offset=0)
    assert [v.code for v in town_villages] == [v.code for v in town_children]
    assert all(regions.is_under(v.code, TOWN) for v in town_villages)
    assert [v.code for v in regions.descendant_villages(session=session, code=VILLAGE)] == [VILLAGE]
    county = regions.get_by_code(session=session, code=COUNTY)
    assert sum(v.population for v in county_villages) == county.population


# --- import ---------------------------------------------------------------------------


def test_csv_import_with_bom_and_derived_columns(session, tmp_path):
    path = write(
        tmp_path / "r.csv",
        HEADER
        + f"{COUNTY},阜南县,county,,1000,300\n"
        + f"{TOWN},鹿城镇,,,600,180\n"  # level and parent derived from the code
        + f'{VILLAGE},"张庄村",village,{TOWN},600,180\n',
        bom=True,
    )
    assert regions.import_file(session=session, path=path) == ImportResult(created=3, updated=0)
    village = regions.get_by_code(session=session, code=VILLAGE)
    assert (village.name, village.level, village.parent_code, village.population) == (
        "张庄村",
        RegionLevel.village,
        TOWN,
        600,
    )
    assert regions.get_by_code(session=session, code=TOWN).parent_code == COUNTY


def test_csv_without_optional_columns(session, tmp_path):
    path = write(tmp_path / "r.csv", f"name,code\n阜南县,{COUNTY}\n鹿城镇,{TOWN}\n")
    assert regions.import_file(session=session, path=path).created == 2
    town = regions.get_by_code(session=session, code=TOWN)
    assert (town.level, town.parent_code, town.population, town.households) == (
        RegionLevel.township,
        COUNTY,
        0,
        0,
    )


def test_json_import_and_upsert(session, tmp_path):
    rows = [
        {"code": COUNTY, "name": "阜南县", "population": 10, "households": 3},
        {"code": TOWN, "name": "鹿城镇", "level": "township", "parent_code": COUNTY, "population": 10},
    ]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    assert regions.import_file(session=session, path=path) == ImportResult(created=2, updated=0)

    rows[1]["name"] = "鹿城镇（新）"
    rows[1]["population"] = 99
    rows.append({"code": VILLAGE, "name": "张庄村", "population": 99, "households": 30})
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    assert regions.import_file(session=session, path=path) == ImportResult(created=1, updated=2)
    town = regions.get_by_code(session=session, code=TOWN)
    assert (town.name, town.population) == ("鹿城镇（新）", 99)
    assert regions.count_regions(session=session) == 3


def test_import_children_of_stored_parents(session, tmp_path):
    regions.load_demo(session=session)
    path = write(tmp_path / "more.csv", HEADER + "341225100299,新建村,village,341225100000,100,30\n")
    assert regions.import_file(session=session, path=path) == ImportResult(created=1, updated=0)
    town_villages = regions.descendant_villages(session=session, code=TOWN)
    assert town_villages[-1].code == "341225100299" and town_villages[-1].name == "新建村"


def test_bad_csv_rows_are_all_reported_by_line_and_nothing_written(session, tmp_path):
    path = write(
        tmp_path / "bad.csv",
        HEADER
        + f"{COUNTY},阜南县,county,,1000,300\n"  # line 2: fine
        + "34122510000,短码镇,,,1,1\n"  # line 3: 11 digits
        + f"{TOWN},,,,1,1\n"  # line 4: empty name
        + f"{VILLAGE},张庄村,township,,1,1\n"  # line 5: level mismatch (and parent missing)
        + "341225101201,李楼村,,341225000000,1,1\n"  # line 6: parent is not the code's parent
        + "341225102000,王家坝镇,,,-5,abc\n"  # line 7: negative and non-numeric counts
        + f"{COUNTY},重复县,county,,1,1\n"  # line 8: duplicate
        + "341225103201,孤村,,,1,1\n",  # line 9: parent neither in file nor DB
        bom=True,
    )
    with pytest.raises(RegionImportError) as info:
        regions.import_file(session=session, path=path)
    errors = info.value.errors
    lines = {line for line, _ in errors}
    assert lines == {3, 4, 5, 6, 7, 8, 9}
    messages = dict(errors)
    assert "12 digits" in messages[3]
    assert "name is empty" in messages[4]
    assert "does not match" in messages[5]
    assert "341225101000" in messages[6]
    assert "duplicate" in messages[8] and "line 2" in messages[8]
    assert "341225103000" in messages[9]
    assert sum(1 for line, _ in errors if line == 7) == 2
    assert "line 3" in str(info.value)
    session.rollback()
    assert regions.count_regions(session=session) == 0


def test_bad_json_items_reported_by_index(session, tmp_path):
    path = tmp_path / "bad.json"
    items = [
        {"code": COUNTY, "name": "阜南县"},
        {"code": TOWN, "name": "鹿城镇", "population": 1.5},
        "not an object",
        {"code": VILLAGE, "name": "张庄村", "colour": "red"},
    ]
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(RegionImportError) as info:
        regions.import_file(session=session, path=path)
    assert [line for line, _ in info.value.errors] == [2, 3, 4]
    assert regions.count_regions(session=session) == 0


def test_bad_header_and_unsupported_files(session, tmp_path):
    with pytest.raises(RegionImportError) as info:
        regions.import_file(session=session, path=write(tmp_path / "h.csv", "code,title\n1,2\n"))
    assert info.value.errors[0][0] == 1 and "title" in info.value.errors[0][1]
    with pytest.raises(RegionImportError):
        regions.import_file(session=session, path=write(tmp_path / "r.xlsx", "x"))
    with pytest.raises(RegionImportError):
        regions.import_file(session=session, path=write(tmp_path / "r.json", "{not json"))
    (tmp_path / "gbk.csv").write_bytes((HEADER + f"{COUNTY},阜南县,,,1,1\n").encode("gbk"))
    with pytest.raises(RegionImportError, match="UTF-8"):
        regions.import_file(session=session, path=tmp_path / "gbk.csv")


def test_a_large_import_then_the_same_file_again_updates_every_region(session, tmp_path):
    """~7.6k regions (4 counties x 25 townships x 75 villages), then re-imported: all updated.

    How fast a province-sized file imports is a benchmark matter, not timed here."""
    lines = [HEADER]
    for c in range(4):
        county = f"3412{c + 10:02d}000000"
        lines.append(f"{county},县{c},county,,0,0\n")
        for t in range(25):
            town = f"{county[:6]}{100 + t}000"
            lines.append(f"{town},镇{c}-{t},township,{county},0,0\n")
            lines.extend(f"{town[:9]}{201 + v},村{c}-{t}-{v},village,{town},1000,300\n" for v in range(75))
    path = write(tmp_path / "province.csv", "".join(lines))
    result = regions.import_file(session=session, path=path)
    assert result == ImportResult(created=4 + 4 * 25 + 4 * 25 * 75, updated=0)
    assert regions.import_file(session=session, path=path).updated == result.created
    assert len(regions.descendant_villages(session=session, code="341210000000")) == 25 * 75


def test_deeply_nested_json_is_a_clear_error_with_its_line(session, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(
        '[\n{"code": "341225000000", "name": "阜南县"},\n' + "[" * 100_000 + "]" * 100_000 + "\n]"
    )
    with pytest.raises(RegionImportError) as info:
        regions.import_file(session=session, path=path)
    assert info.value.errors == [(3, f"JSON nested deeper than {regions.MAX_JSON_DEPTH} levels")]
    assert "line 3" in str(info.value)


def test_broken_json_names_its_line(session, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n{"code": "341225000000", "name": "阜南县"},\n{"code": \n]')
    with pytest.raises(RegionImportError) as info:
        regions.import_file(session=session, path=path)
    assert [line for line, _ in info.value.errors] == [4]


@pytest.mark.parametrize("suffix", ["json", "csv"])
def test_names_with_nul_or_control_characters_are_refused_by_line(session, tmp_path, suffix):
    rows = [(COUNTY, "阜南县"), (TOWN, "鹿城\x00镇"), (VILLAGE, "张庄\x1b[31m村")]
    if suffix == "json":
        path = tmp_path / "nul.json"
        path.write_text("[\n" + ",\n".join(json.dumps({"code": c, "name": n}) for c, n in rows) + "\n]")
        lines = [2, 3]  # JSON: the object's place in the list
    else:
        path = write(tmp_path / "nul.csv", "code,name\n" + "".join(f"{c},{n}\n" for c, n in rows))
        lines = [3, 4]  # CSV: the file's line
    with pytest.raises(RegionImportError) as info:
        regions.import_file(session=session, path=path)
    assert [line for line, _ in info.value.errors] == lines
    assert "U+0000" in info.value.errors[0][1] and "U+001B" in info.value.errors[1][1]
    session.rollback()
    assert regions.count_regions(session=session) == 0
