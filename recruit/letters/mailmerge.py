"""The mail-merge files: one row per letter, in the order of the combined PDF.

Names and addresses are data, never formulas (OWASP CSV injection;
shared/reference/letters-and-review.md 4.1, 4.2):

- CSV (UTF-8 with a byte-order mark, so Excel and Word read accents right; every field quoted;
  CRLF line ends): any cell that a spreadsheet would run as a formula (starting = + - @, a tab
  or a carriage return) gets a leading apostrophe, via recruit.safe_text.spreadsheet_safe.
- XLSX (the better file to merge from, for Word and for Docmail): every cell is written as
  text, so nothing in it is ever a formula, and a cell that starts like a formula is also
  marked "quote prefix", which is what Excel itself does when a person types '=...: Excel and
  LibreOffice show and merge the text exactly, without an apostrophe, and keep it text even
  after the cell is edited.

StreamPages1 is the number of pages of each letter in the combined PDF, the column Docmail's
"multiple address stream" upload needs.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recruit.safe_text import FORMULA_STARTS, spreadsheet_safe

MAIL_MERGE_COLUMNS = (
    "StudyNumber",
    "Title",
    "FirstName",
    "Surname",
    "FullName",
    "Salutation",
    "Address1",
    "Address2",
    "Address3",
    "Address4",
    "Address5",
    "Postcode",
    "PracticeODS",
    "PracticeName",
    "GPName",
    "LetterFormat",
    "LetterDate",
    "StreamPages1",
    "FirstPage",
    "PdfFile",
)

# Who and where, in the practice's own lists (the contact list and the could-not-print list).
PERSON_COLUMNS = (
    "NHSNumber",
    "Title",
    "FirstName",
    "Surname",
    "Address1",
    "Address2",
    "Address3",
    "Address4",
    "Address5",
    "Postcode",
    "PracticeODS",
)
PRACTICE_LIST_COLUMNS = ("StudyNumber", *PERSON_COLUMNS, "WhatIsNeeded")
COULD_NOT_PRINT_COLUMNS = (*PERSON_COLUMNS, "WhyNotPrinted")


def address_columns(lines: Sequence[str], width: int = 5) -> list[str]:
    """Address lines in `width` columns; lines beyond the last column join it, comma-separated."""
    lines = [line for line in lines if line]
    if len(lines) > width:
        lines = [*lines[: width - 1], ", ".join(lines[width - 1 :])]
    return [*lines, *[""] * (width - len(lines))]


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([spreadsheet_safe(_plain(row.get(c))) for c in columns])


def write_xlsx(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]], sheet: str) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    ws = book.active
    ws.title = sheet
    ws.append(list(columns))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for r, row in enumerate(rows, start=2):
        for c, column in enumerate(columns, start=1):
            value = row.get(column)
            cell = ws.cell(row=r, column=c)
            if isinstance(value, int) and not isinstance(value, bool):
                cell.value = value
                continue
            text = _xml_safe(_plain(value))
            cell.value = text
            cell.data_type = "s"  # text, never a formula, whatever it starts with
            if text.startswith(FORMULA_STARTS):
                cell.quotePrefix = True
    ws.freeze_panes = "A2"
    book.save(path)


def _plain(value: Any) -> str:
    return "" if value is None else str(value)


def _xml_safe(text: str) -> str:
    # Control characters other than tab and line ends cannot be stored in an XLSX (XML 1.0).
    return "".join(ch if ch in "\t\n\r" or ord(ch) >= 0x20 else "\ufffd" for ch in text)
