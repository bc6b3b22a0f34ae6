"""Reading back quarantined records so practice staff can see what to fix."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from recruit.models import Quarantine
from recruit.safe_text import spreadsheet_safe

COLUMNS = ("extract", "file", "line", "resource_type", "resource_id", "field", "reason_code", "reason")


def quarantine_counts(engine: Engine, extract_id: int | None = None) -> list[tuple[int, str, int]]:
    """(extract, reason code, count), for the summary."""
    q = select(Quarantine.extract_id, Quarantine.reason_code, func.count()).group_by(
        Quarantine.extract_id, Quarantine.reason_code
    )
    if extract_id is not None:
        q = q.where(Quarantine.extract_id == extract_id)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(q.order_by(Quarantine.extract_id, Quarantine.reason_code))]


def quarantine_rows(
    engine: Engine, extract_id: int | None = None, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    q = select(
        Quarantine.extract_id.label("extract"),
        Quarantine.file,
        Quarantine.line,
        Quarantine.resource_type,
        Quarantine.resource_id,
        Quarantine.field,
        Quarantine.reason_code,
        Quarantine.reason,
    ).order_by(Quarantine.id)
    if extract_id is not None:
        q = q.where(Quarantine.extract_id == extract_id)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        for row in conn.execute(q):
            yield dict(row._mapping)


def export_quarantine(engine: Engine, out: Path, extract_id: int | None = None) -> int:
    """Write quarantined records to CSV (no raw record text: it may hold patient details)."""
    n = 0
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in quarantine_rows(engine, extract_id):
            writer.writerow([spreadsheet_safe(row[c]) for c in COLUMNS])
            n += 1
    return n
