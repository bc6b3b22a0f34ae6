"""Small read-backs the loading tests share."""

from __future__ import annotations

from sqlalchemy import func, select


def count(engine, model) -> int:  # type: ignore[no-untyped-def]
    """Rows in a table."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()
