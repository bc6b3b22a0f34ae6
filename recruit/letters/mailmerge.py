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

Identifiers (NHS numbers, postcodes, study numbers, ODS codes) are text in every cell, with the
cell's number format "@" (Text), so Excel never turns an NHS number into 9.99E+09 or drops a
leading zero, and stays text when someone edits the cell. Column widths fit their contents and
the header row is frozen, so the sheet can be read and checked before it is sent.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

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

# Docmail's address fields, as its API's AddAddress call names them (Docmail API version 2; the
# address upload's "Download Spreadsheet CSV template" offers the same fields, help.docmail.co.uk
# "Import mapping"). Docmail maps an upload's columns to these by name on its "Assign fields"
# screen; for a multiple address stream it needs the name, the full address and StreamPages1
# ("Multiple address streams"). Checked December 2026: the version named here.
DOCMAIL_TEMPLATE_VERSION = "Docmail API v2 AddAddress fields, checked December 2026"
DOCMAIL_FIELDS = (
    "Title",
    "FirstName",
    "Surname",
    "Fullname",
    "JobTitle",
    "CompanyName",
    "Address1",
    "Address2",
    "Address3",
    "Address4",
    "Address5",
    "Address6",
    "Email",
    "Telephone",
    "DirectLine",
    "Mobile",
    "Facsimile",
    "ExtraInfo",
    "Notes",
    "CustomerAddressID",
    "StreamPages1",
    "StreamPages2",
    "StreamPages3",
    *(f"Custom{i}" for i in range(1, 11)),
)
# Our columns that have a Docmail field of the same name (ignoring case). Postcode has no field of
# that name in the list: check where Docmail maps it on the "Assign fields" screen (README.md).
DOCMAIL_MAPPED = (
    "Title",
    "FirstName",
    "Surname",
    "FullName",
    "Address1",
    "Address2",
    "Address3",
    "Address4",
    "Address5",
    "StreamPages1",
)

# Columns holding identifiers or codes: always text, never numbers (see the module's docstring).
TEXT_COLUMNS = frozenset({"NHSNumber", "StudyNumber", "Postcode", "PracticeODS"})
# Widest a column is made (characters), so one long address line does not hide the others.
_MAX_WIDTH = 60

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


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> None:
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([spreadsheet_safe(_plain(row.get(c))) for c in columns])


def write_xlsx(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, object]], sheet: str) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.worksheet import Worksheet

    book = Workbook()
    ws = book.active
    if not isinstance(ws, Worksheet):  # a new workbook opens on one blank worksheet
        raise TypeError("openpyxl made a workbook without a worksheet")
    ws.title = sheet
    ws.append(list(columns))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    widths = [len(column) for column in columns]
    for r, row in enumerate(rows, start=2):
        for c, column in enumerate(columns, start=1):
            value = row.get(column)
            cell = ws.cell(row=r, column=c)
            if isinstance(value, int) and not isinstance(value, bool) and column not in TEXT_COLUMNS:
                cell.value = value
                widths[c - 1] = max(widths[c - 1], len(str(value)))
                continue
            text = _xml_safe(_plain(value))
            cell.value = text
            cell.data_type = "s"  # text, never a formula, whatever it starts with
            cell.number_format = "@"  # and formatted as Text, so an edit keeps it text
            if text.startswith(FORMULA_STARTS):
                cell.quotePrefix = True
            widths[c - 1] = max(widths[c - 1], len(text))
    for c, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(c)].width = min(width + 2, _MAX_WIDTH)
    ws.freeze_panes = "A2"
    book.save(path)


def _plain(value: object) -> str:
    return "" if value is None else str(value)


def _xml_safe(text: str) -> str:
    # Control characters other than tab and line ends cannot be stored in an XLSX (XML 1.0).
    return "".join(ch if ch in "\t\n\r" or ord(ch) >= 0x20 else "\ufffd" for ch in text)
