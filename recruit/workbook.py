"""Spreadsheet cells that hold people's data, and forgiving reading of staff-made tables.

Names and addresses are data, never formulas. In an XLSX file a cell written as a string is never
evaluated, so text goes in as a string cell (openpyxl would otherwise store a value starting with
`=` as a formula). A value that starts like a formula (the OWASP list in recruit.safe_text) is
also given Excel's own "quote prefix" style, the one Excel sets when you type '=..., so editing
the cell later still keeps it text. This is how recruit.safe_text.spreadsheet_safe's rule is
applied in XLSX: the apostrophe it adds for CSV files would be printed as part of the name in an
XLSX cell (shared/reference/letters-and-review.md section 4.1).

XML 1.0 cannot carry some characters (most control characters, U+FFFE, U+FFFF); they become
U+FFFD so one corrupt record cannot make a whole workbook unreadable, and a lone carriage return
becomes a line break (XML turns it into one anyway).
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from openpyxl.cell.cell import Cell
from openpyxl.utils.exceptions import InvalidFileException

from recruit.errors import RecruitError
from recruit.safe_text import FORMULA_STARTS

if TYPE_CHECKING:
    from openpyxl import Workbook

# What a cell holds, as openpyxl or the CSV reader hands it over (text, a number, a date, None, ...):
# staff type anything, so callers look at it with isinstance or str() and never assume a type.
CellValue: TypeAlias = object

_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def cell_text(value: str) -> str:
    """The text as an XLSX cell can hold it: line breaks as \\n, characters XML forbids as U+FFFD."""
    return _NOT_XML.sub("\ufffd", value.replace("\r\n", "\n").replace("\r", "\n"))


def put_text(cell: Cell, value: str | None) -> None:
    """Write untrusted text so that no spreadsheet program ever runs it as a formula."""
    if value is None or value == "":
        cell.value = None
        return
    text = cell_text(str(value))
    cell.value = text
    cell.data_type = "s"  # after the value: openpyxl would have made '=...' a formula
    if text.startswith(FORMULA_STARTS):
        cell.quotePrefix = True


def normalise_header(text: CellValue) -> str:
    """'Study No.' -> 'studyno': case, spaces and punctuation do not matter in headers."""
    return re.sub(r"[^a-z0-9]", "", str(text or "").lower())


def match_headers(
    headers: Sequence[CellValue], wanted: Mapping[str, Sequence[str]], what: str
) -> dict[str, int]:
    """Column index of each wanted field, from headers spelt in any case, with punctuation, or
    slightly misspelt ('Studdy number'); a missing or doubly matched field is one plain error."""
    found: dict[str, int] = {}
    normal = [normalise_header(h) for h in headers]
    keys = {field: {normalise_header(a) for a in aliases} for field, aliases in wanted.items()}
    exact = {field: [i for i, h in enumerate(normal) if h and h in keys[field]] for field in wanted}
    claimed = {i for hits in exact.values() for i in hits}
    for field, aliases in wanted.items():
        hits = exact[field] or [
            i
            for i, h in enumerate(normal)
            if h and i not in claimed and difflib.get_close_matches(h, list(keys[field]), n=1, cutoff=0.8)
        ]
        if len(hits) > 1:
            names = ", ".join(repr(str(headers[i])) for i in hits)
            raise RecruitError(f"{what}: more than one column could be the {aliases[0]} column ({names}).")
        if not hits:
            shown = ", ".join(repr(str(h)) for h in headers if str(h or "").strip()) or "none"
            raise RecruitError(f"{what}: no '{aliases[0]}' column in the first row (columns found: {shown}).")
        found[field] = hits[0]
    return found


@dataclass(frozen=True)
class TableRow:
    """One data row of a table a person made: its row number as their program shows it."""

    number: int
    values: tuple[CellValue, ...]


def read_table(path: Path) -> tuple[list[CellValue], list[TableRow]]:
    """The header row and the data rows of a CSV or XLSX file (first sheet), blank rows skipped.

    XLSX cells come back as their stored values (dates as dates); a formula cell comes back as
    its formula text starting with '=', which the caller refuses as a value.
    """
    if not path.is_file():
        raise RecruitError(f"There is no file {path}.")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        rows = _xlsx_rows(path)
    elif suffix in (".csv", ".txt"):
        rows = _csv_rows(path)
    else:
        raise RecruitError(f"{path.name}: recruit reads CSV (.csv) or Excel (.xlsx) files, not {suffix}.")
    header: list[CellValue] | None = None
    data: list[TableRow] = []
    for number, values in rows:
        if all(_blank(v) for v in values):
            continue
        if header is None:
            header = list(values)
            continue
        data.append(TableRow(number, tuple(values)))
    if header is None:
        raise RecruitError(f"{path.name} is empty.")
    return header, data


def _blank(value: CellValue) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def open_workbook(path: Path, *, what: str = "spreadsheet") -> Workbook:
    """An openpyxl workbook, or one plain sentence saying why the file cannot be read."""
    from openpyxl import load_workbook

    if not path.is_file():
        raise RecruitError(f"There is no file {path}.")
    try:
        return load_workbook(path)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise RecruitError(f"{path.name} cannot be read as an Excel {what} (.xlsx): {exc}") from None


def _xlsx_rows(path: Path) -> Iterator[tuple[int, tuple[CellValue, ...]]]:
    sheet = open_workbook(path).worksheets[0]
    for number, cells in enumerate(sheet.iter_rows(), 1):  # rows run on from row 1, none skipped
        if cells:
            yield number, tuple(c.value for c in cells)


def _csv_rows(path: Path) -> Iterator[tuple[int, tuple[CellValue, ...]]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")  # Excel's "CSV" on Windows
    try:
        dialect: type[csv.Dialect] = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    for values in reader:
        yield reader.line_num, tuple(values)


def parse_day(value: CellValue) -> dt.date | None:
    """A date from a cell: a spreadsheet date, or text as 2025-07-01 or 01/07/2025 (day first, as
    in the UK). None when it is not one of those."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value or "").strip()
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T]00:00(?::00)?)?", text)
    if m:
        y, mo, d = (int(g) for g in m.groups())
    else:
        m = re.fullmatch(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})", text)
        if not m:
            return None
        d, mo, y = (int(g) for g in m.groups())
    try:
        return dt.date(y, mo, d)
    except ValueError:
        return None
