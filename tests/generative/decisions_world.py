"""Issue 15's plain-Python model of the GP's decisions, and the review sheets a GP has in hand.

The model says what each database's review_decision table must hold after any sequence of
sheet exports, edits and imports (in any order), under the agreed rules:
- a row is applied only if it is decided (a blank Decision never undoes an earlier one);
- a row is refused (nothing from it applied) when its Name, Date of birth or NHS number cells
  do not match the person its hidden key names (only one column was sorted), when its person is
  in another practice than the sheet's, or when it is stale: the stored decision differs from
  the row's and was made, by another sheet, after this sheet was exported;
- a row that would change the decision of someone already written to is not applied (the
  library may refuse the whole sheet or only that row);
- every other row of the sheet is applied.
Order is a logical clock (`seq`), one tick per export or import: the steps run one after the
other, so the library's wall-clock times follow the same order.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recruit import review

# --- decisions as the sheet and the database write them ------------------------------------------

# What the GP picks: (Decision cell, Reason cell, Other reason cell) and the stored value.
CHOICES: dict[str, tuple[str | None, str | None, str | None]] = {
    "invite": ("Invite", None, None),
    "safeguarding": ("Do not invite", "Safeguarding concern", None),
    "other": ("Do not invite", "Other", "Moved away, letter not wanted"),
    "blank": (None, None, None),
}
Value = tuple[str, str | None, str | None]  # (decision, reason_code, reason_text)


def stored_value(decision: Any, reason: Any, detail: Any) -> Value | None:
    """The value the library stores for a row's cells (None: blank)."""
    words = " ".join(str(decision).split()).lower() if decision is not None else ""
    if not words:
        return None
    reason_words = " ".join(str(reason).split()).lower() if reason is not None else ""
    code = {v.lower(): k for k, v in review.DECISIONS.items()}[words]
    reason_code = {v.lower(): k for k, v in review.REASONS.items()}.get(reason_words)
    text = str(detail).strip() if detail is not None and str(detail).strip() else None
    return (code, reason_code if code == "do_not_invite" else None, text)


@dataclass(frozen=True)
class Decision:
    value: Value
    seq: int  # logical time it was made
    sheet: int  # label of the sheet it came from


@dataclass
class DbState:
    """What the model knows of one database: its runs (id -> label, one label per search ever
    run, so a run id reused after a copy is never mistaken), sheets exported from it and the
    decisions it holds per (run label, patient id)."""

    runs: dict[int, int] = field(default_factory=dict)
    sheets: set[int] = field(default_factory=set)
    decisions: dict[tuple[int, int], Decision] = field(default_factory=dict)
    candidates: dict[int, set[int]] = field(default_factory=dict)  # run label -> patient ids

    def copy(self) -> DbState:
        return DbState(dict(self.runs), set(self.sheets), dict(self.decisions), dict(self.candidates))


# --- sheets in hand --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """A row's person as the export showed them."""

    name: Any
    birth: Any
    nhs: Any
    practice: str


@dataclass
class SheetInHand:
    label: int
    db: str
    run_id: int
    run_label: int
    practice: str
    path: Path
    exported_seq: int
    shown: dict[str, Shown]  # key -> as exported
    edits: int = 0
    arranged: list[str] = field(default_factory=list)

    def describe(self) -> str:
        rows = len(self.shown)
        return f"sheet {self.label} (run {self.run_id} on {self.db}, practice {self.practice}, {rows} rows)"


@dataclass(frozen=True)
class SheetRow:
    number: int
    key: str
    name: Any
    birth: Any
    nhs: Any
    value: Value | None

    @property
    def patient_id(self) -> int:
        m = re.fullmatch(r"(\d+)-(\d+)", self.key)
        assert m is not None, self.key
        return int(m.group(2))


def _columns(ws: Any) -> dict[str, int]:
    header = [c.value for c in ws[1]]
    return {str(h): i for i, h in enumerate(header) if h is not None}


def read_rows(path: Path) -> list[SheetRow]:
    """The sheet's data rows as the GP left them."""
    from openpyxl import load_workbook

    wb = load_workbook(path)
    ws = wb[review.SHEET]
    col = _columns(ws)
    out = []
    for cells in ws.iter_rows(min_row=2):
        values = [c.value for c in cells]
        if all(v is None for v in values):
            continue
        out.append(
            SheetRow(
                number=cells[0].row,
                key=str(values[col["Key"]]),
                name=values[col["Name"]],
                birth=values[col["Date of birth"]],
                nhs=values[col["NHS number"]],
                value=stored_value(
                    values[col["Decision"]],
                    values[col["Reason (if not inviting)"]],
                    values[col["Other reason or note"]],
                ),
            )
        )
    return out


def practice_of_cell(text: Any) -> str:
    m = re.search(r"\(([A-Z0-9]+)\)\s*$", str(text or ""))
    return m.group(1) if m else ""


def shown_rows(path: Path) -> dict[str, Shown]:
    from openpyxl import load_workbook

    ws = load_workbook(path)[review.SHEET]
    col = _columns(ws)
    out = {}
    for cells in ws.iter_rows(min_row=2, values_only=True):
        if all(v is None for v in cells):
            continue
        out[str(cells[col["Key"]])] = Shown(
            cells[col["Name"]],
            cells[col["Date of birth"]],
            cells[col["NHS number"]],
            practice_of_cell(cells[col["Practice"]]),
        )
    return out


def edit_sheet(
    path: Path,
    picks: list[tuple[int, str]],
    arrangement: str,
    permutation: list[int],
    pasted: list[Any] | None,
    pasted_pick: str,
) -> list[str]:
    """The GP's edits, saved in place: decisions on some rows (by position), then perhaps a
    re-arrangement (only the Name column sorted, or whole rows sorted) and a row pasted from
    another sheet. Returns what was done, in words."""
    from openpyxl import load_workbook

    wb = load_workbook(path)
    ws = wb[review.SHEET]
    col = _columns(ws)
    data = [r for r in range(2, ws.max_row + 1) if any(c.value is not None for c in ws[r])]
    said = []
    for position, pick in picks:
        if not data:
            break
        r = data[position % len(data)]
        decision, reason, detail = CHOICES[pick]
        ws.cell(r, col["Decision"] + 1).value = decision
        ws.cell(r, col["Reason (if not inviting)"] + 1).value = reason
        ws.cell(r, col["Other reason or note"] + 1).value = detail
        said.append(f"row {r}: {pick}")
    order = [data[i % len(data)] for i in permutation] if data else []
    order = list(dict.fromkeys(order)) + [r for r in data if r not in order]
    if arrangement == "name_only" and len(data) > 1:
        names = [ws.cell(r, col["Name"] + 1).value for r in order]
        for r, name in zip(data, names, strict=True):
            ws.cell(r, col["Name"] + 1).value = name
        said.append(f"Name column alone re-ordered {[order.index(r) for r in data]}")
    elif arrangement == "rows" and len(data) > 1:
        width = ws.max_column
        rows = [[ws.cell(r, c).value for c in range(1, width + 1)] for r in order]
        for r, values in zip(data, rows, strict=True):
            for c, v in enumerate(values, 1):
                ws.cell(r, c).value = v
        said.append("whole rows re-ordered")
    if pasted is not None:
        r = (data[-1] if data else 1) + 1
        for c, v in enumerate(pasted, 1):
            ws.cell(r, c).value = v
        decision, reason, detail = CHOICES[pasted_pick]
        ws.cell(r, col["Decision"] + 1).value = decision
        ws.cell(r, col["Reason (if not inviting)"] + 1).value = reason
        ws.cell(r, col["Other reason or note"] + 1).value = detail
        said.append(f"row {r} pasted from another practice's sheet: {pasted_pick}")
    wb.save(path)
    return said


def first_row_values(path: Path, position: int) -> list[Any] | None:
    """Every cell of one data row (to paste it into another sheet)."""
    from openpyxl import load_workbook

    ws = load_workbook(path)[review.SHEET]
    rows = [
        [c.value for c in cells]
        for cells in ws.iter_rows(min_row=2)
        if any(c.value is not None for c in cells)
    ]
    return rows[position % len(rows)] if rows else None


# --- what an import must do ------------------------------------------------------------------------


@dataclass
class Prediction:
    apply: dict[int, tuple[int, Value]] = field(default_factory=dict)  # patient -> (row, value)
    refused: dict[int, str] = field(default_factory=dict)  # row -> why (stale, identity, practice)
    final: dict[int, int] = field(default_factory=dict)  # row -> patient: changes an invited person's
    whole: str = ""  # why the whole sheet must be refused (a copied row)

    def words(self) -> str:
        parts = [f"apply rows {sorted(r for r, _ in self.apply.values())}"]
        if self.refused:
            parts.append(f"refuse {dict(sorted(self.refused.items()))}")
        if self.final:
            parts.append(f"invited already (not applied) rows {sorted(self.final)}")
        return "; ".join(parts)


def predict(
    sheet: SheetInHand,
    rows: list[SheetRow],
    state: DbState,
    identities: dict[str, Shown],
    practice_of: dict[int, str],
    invited_patients: set[int],
) -> Prediction:
    """What importing the sheet must do under the agreed rules (see the module's docstring)."""
    p = Prediction()
    seen: dict[str, int] = {}
    for row in rows:
        if row.key in seen:
            p.whole = f"row {row.number} repeats row {seen[row.key]}"
        seen.setdefault(row.key, row.number)
    for row in rows:
        pid = row.patient_id
        shown = identities.get(row.key)  # as every export of the run showed this key
        if row.value is None:
            continue
        if shown is None or (row.name, row.birth, row.nhs) != (shown.name, shown.birth, shown.nhs):
            p.refused[row.number] = "identity"
            continue
        if practice_of.get(pid) != sheet.practice:
            p.refused[row.number] = "practice"
            continue
        before = state.decisions.get((sheet.run_label, pid))
        if before is not None and before.value == row.value:
            continue
        if before is not None and before.seq > sheet.exported_seq and before.sheet != sheet.label:
            p.refused[row.number] = "stale"
            continue
        if before is not None and pid in invited_patients:
            p.final[row.number] = pid
            continue
        p.apply[pid] = (row.number, row.value)
    return p


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
