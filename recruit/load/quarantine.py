"""Reading back quarantined records so practice staff can see what to fix."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from recruit.errors import RecruitError
from recruit.models import Quarantine
from recruit.private_files import open_private
from recruit.safe_text import spreadsheet_safe

COLUMNS = ("extract", "file", "line", "resource_type", "resource_id", "field", "reason_code", "reason")
# Ten digits, as an NHS number is written (with or without spaces or dashes).
_NHS_LIKE = re.compile(r"(?<!\d)\d{3}[ -]?\d{3}[ -]?\d{4}(?!\d)")


def mask_identifiers(text: str | None) -> str | None:
    """Anything written like an NHS number shown by its last two digits only: a record's id or
    reason must never print a rejected NHS number in full (a system may use it as the id)."""
    if not text:
        return text
    return _NHS_LIKE.sub(lambda m: "*" * 8 + m.group(0)[-2:], text)


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
            out = dict(row._mapping)
            for name in ("resource_id", "field", "reason"):
                out[name] = mask_identifiers(out[name])
            yield out


def export_quarantine(engine: Engine, out: Path, extract_id: int | None = None) -> int:
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
        for row in quarantine_rows(engine, extract_id):
            writer.writerow([spreadsheet_safe(row[c]) for c in COLUMNS])
            n += 1
    return n
