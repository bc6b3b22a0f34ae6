"""Shared by the state machines (issue 14's person safety, issue 15's decisions)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from recruit.models import Base

TEMPLATES_PASSED: set[str] = set()


@pytest.fixture
def templates_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every letters run first checks the templates by printing six sample PDFs (about 8 s); the
    templates never change during a history, so the real check runs once per template folder
    and is then remembered. Person safety is decided elsewhere (recruit.letters.select)."""
    import recruit.letters.check as check

    real = check.check_templates

    def once(templates: Any, settings: Any = None, map_: Any = map) -> None:
        key = templates.fingerprint()
        if key not in TEMPLATES_PASSED:
            real(templates, settings, map_)
            TEMPLATES_PASSED.add(key)

    monkeypatch.setattr(check, "check_templates", once)


def clear_database(engine: Engine) -> None:
    """Empty every table (children first), so one database serves every example."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
