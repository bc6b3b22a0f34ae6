"""Editing a review workbook as a GP would in Excel, for the review tests."""

from __future__ import annotations

from openpyxl import load_workbook


def rows_by_pid(ws):
    """patient id -> sheet row number, from the hidden key column."""
    return {
        int(ws.cell(r, 1).value.split("-")[1]): r for r in range(2, ws.max_row + 1) if ws.cell(r, 1).value
    }


def edit(path, change):
    wb = load_workbook(path)
    ws = wb["Review"]
    change(ws, rows_by_pid(ws))
    wb.save(path)
