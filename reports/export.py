"""Report tables as CSV (UTF-8 with BOM, so Excel shows the Chinese) and XLSX (openpyxl)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from openpyxl import Workbook
from openpyxl.styles import Font

# Column keys and their Chinese headings, in order.
COLUMNS = [
    ("code", "区域代码"),
    ("name", "区域"),
    ("targeted", "目标喇叭"),
    ("played", "完整播放"),
    ("failed", "播放失败"),
    ("no_report", "无回报"),
    ("reach_rate", "到达率"),
    ("population_targeted", "目标人口"),
    ("population_reached", "覆盖人口"),
]


def table(report: dict) -> tuple[list[str], list[list]]:
    """Headings and rows of a reach report (per area, then the total)."""
    headings = [label for _, label in COLUMNS]
    rows = [[entry.get(key, "") for key, _ in COLUMNS] for entry in report["by_area"]]
    total = {**report, "code": "", "name": "合计"}
    rows.append([total.get(key, "") for key, _ in COLUMNS])
    return headings, rows


# A text cell starting with one of these is read as a formula by Excel, LibreOffice and Sheets
# (OWASP "CSV Injection"): `=HYPERLINK(...)` in an area name or a title becomes a live link.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Characters a sheet name may not hold (openpyxl raises ValueError on them).
_SHEET_NAME_BAD = str.maketrans(dict.fromkeys("[]:*?/\\", "_"))


def csv_cell(value: object) -> object:
    """A value safe to write to CSV: text that a spreadsheet would read as a formula gets a
    leading single quote (OWASP); numbers stay numbers, so `-3` the number is left alone."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(headings: Sequence[str], rows: Sequence[Sequence]) -> bytes:
    """CSV bytes, UTF-8 with a byte order mark; no cell is ever a formula."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([csv_cell(v) for v in headings])
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buffer.getvalue().encode("utf-8-sig")


def _as_text(sheet_row) -> None:
    """openpyxl stores a string starting with `=` as a formula: store every string as text."""
    for cell in sheet_row:
        if isinstance(cell.value, str):
            cell.data_type = "s"


def to_xlsx(headings: Sequence[str], rows: Sequence[Sequence], *, title: str) -> bytes:
    """An XLSX workbook with one sheet: bold headings, numbers as numbers, rate as a percentage,
    text always as text (never a formula)."""
    book = Workbook()
    sheet = book.active
    sheet.title = title.translate(_SHEET_NAME_BAD)[:31] or "Sheet"  # Excel's limit on sheet names
    sheet.append(list(headings))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    _as_text(sheet[1])
    for row in rows:
        sheet.append(list(row))
        _as_text(sheet[sheet.max_row])
    rate_col = [label for _, label in COLUMNS].index("到达率") + 1
    for (cell,) in sheet.iter_rows(min_row=2, min_col=rate_col, max_col=rate_col):
        cell.number_format = "0.00%"
    sheet.column_dimensions["A"].width = 15
    sheet.column_dimensions["B"].width = 16
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
