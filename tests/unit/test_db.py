"""Where recruit finds its database and how it explains failures."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from recruit.db import ENV_VAR, describe, make_engine, resolve_url
from recruit.errors import DatabaseUnavailable


def test_flag_beats_environment_beats_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_url() == f"sqlite:///{tmp_path / 'recruit.db'}"
    monkeypatch.setenv(ENV_VAR, "sqlite:///from-env.db")
    assert resolve_url() == "sqlite:///from-env.db"
    assert resolve_url("sqlite:///from-flag.db") == "sqlite:///from-flag.db"


def test_describe_never_shows_a_password():
    shown = describe("postgresql+psycopg://alice:s3cret@db.example:5432/recruit")
    assert "s3cret" not in shown and "alice" in shown


def test_sqlite_runs_with_foreign_keys_and_wal(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


@pytest.mark.parametrize(
    "url, words",
    [
        ("not a url://x", "is not a database address"),
        ("sqlite:/x.db", "is not a database address"),
        ("nonsense://host/db", "does not know the database kind"),
        ("sqlite:////no/such/folder/recruit.db", "does not exist"),
    ],
)
def test_bad_addresses_are_explained(url, words):
    with pytest.raises(DatabaseUnavailable, match=words):
        make_engine(url)
