"""Reading back quarantined records so practice staff can see what to fix."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVarTuple

from sqlalchemy import Engine, Select, func, select

from recruit.errors import RecruitError
from recruit.models import Quarantine
from recruit.private_files import open_private
from recruit.safe_text import spreadsheet_safe

COLUMNS = (
    "extract",
    "file",
    "line",
    "entry",
    "resource_type",
    "resource_id",
    "field",
    "reason_code",
    "reason",
)
# Ten digits, as an NHS number is written (with or without spaces or dashes).
_Ts = TypeVarTuple("_Ts")
_NHS_LIKE = re.compile(r"(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)")


def mask_identifiers(text: str | None) -> str | None:
    """Anything written like an NHS number shown by its last two digits only: a record's id or
    reason must never print a rejected NHS number in full (a system may use it as the id)."""
    if not text:
        return text
    return _NHS_LIKE.sub(lambda m: "*" * 8 + m.group(0)[-2:], text)


@dataclass(frozen=True)
class Only:
    """Which quarantined records to show: one extract, one reason (its code, e.g. date_in_future),
    one file (its name, or any part of its path). Empty: all of them."""

    extract_id: int | None = None
    reason: str | None = None
    file: str | None = None

    def apply(self, q: Select[*_Ts]) -> Select[*_Ts]:
        if self.extract_id is not None:
            q = q.where(Quarantine.extract_id == self.extract_id)
        if self.reason:
            q = q.where(func.lower(Quarantine.reason_code) == self.reason.strip().lower())
        if self.file:
            q = q.where(Quarantine.file.contains(self.file.strip(), autoescape=True))
        return q


def _only(only: Only | int | None) -> Only:
    return only if isinstance(only, Only) else Only(extract_id=only)


def quarantine_counts(engine: Engine, only: Only | int | None = None) -> list[tuple[int, str, int]]:
    """(extract, reason code, count), for the summary; `only` an Only or an extract id."""
    q = select(Quarantine.extract_id, Quarantine.reason_code, func.count()).group_by(
        Quarantine.extract_id, Quarantine.reason_code
    )
    q = _only(only).apply(q)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(Quarantine.extract_id, Quarantine.reason_code))
        return [(extract, reason, count) for extract, reason, count in rows]


def quarantine_reasons(engine: Engine) -> list[str]:
    """Every reason code in the quarantine, to say which there are when a filter finds none."""
    with engine.connect() as conn:
        q = select(Quarantine.reason_code).distinct().order_by(Quarantine.reason_code)
        return [r for r in conn.execute(q).scalars() if r]


def quarantine_rows(
    engine: Engine, only: Only | int | None = None, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    q = select(
        Quarantine.extract_id.label("extract"),
        Quarantine.file,
        Quarantine.line,
        Quarantine.entry,
        Quarantine.resource_type,
        Quarantine.resource_id,
        Quarantine.field,
        Quarantine.reason_code,
        Quarantine.reason,
    ).order_by(Quarantine.id)
    q = _only(only).apply(q)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        for row in conn.execute(q):
            out = dict(row._mapping)
            for name in ("resource_id", "field", "reason"):
                out[name] = mask_identifiers(out[name])
            yield out


def export_quarantine(engine: Engine, out: Path, only: Only | int | None = None) -> int:
    """Write quarantined records to CSV (no raw record text: it may hold patient details).

    The file is owner-only (0600): record ids and file names can still lead to a patient."""
    n = 0
    try:
        f = open_private(out, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise RecruitError(f"Cannot write {out}: {exc.strerror}.") from None
    with f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in quarantine_rows(engine, only):
            writer.writerow([spreadsheet_safe(row[c]) for c in COLUMNS])
            n += 1
    return n
