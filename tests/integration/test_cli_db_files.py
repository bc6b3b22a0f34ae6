"""Issue 17: a plain path is a database file, nothing creates a database by accident, and nothing
upgrades one behind the user's back."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from recruit.db import make_engine, resolve_url
from recruit.errors import RecruitError
from recruit.migrate import current_revision, head_revision, open_database, upgrade
from tests.helpers import run_cli


def test_a_plain_path_is_a_sqlite_file_and_urls_still_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_url("recruit.db") == f"sqlite:///{tmp_path / 'recruit.db'}"
    assert resolve_url("region.duckdb") == f"duckdb:///{tmp_path / 'region.duckdb'}"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"
    assert resolve_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    monkeypatch.setenv("RECRUIT_DATABASE_URL", "practice.db")
    assert resolve_url() == f"sqlite:///{tmp_path / 'practice.db'}"


def test_db_upgrade_and_status_take_a_plain_path(tmp_path):
    made = run_cli("db", "upgrade", "--db", "recruit.db", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "recruit.db").is_file()
    status = run_cli("db", "status", "--db", "recruit.db", cwd=tmp_path)
    assert f"Revision: {head_revision()} (up to date)" in status.stdout


def test_a_mistyped_path_creates_nothing_and_says_how_to_create(tmp_path):
    assert run_cli("db", "upgrade", "--db", "recruit.db", cwd=tmp_path).returncode == 0
    for command in (("search",), ("quarantine", "list"), ("audit",), ("db", "copy", "--to", "x.duckdb")):
        result = run_cli(*command, "--db", "recriut.db", cwd=tmp_path)
        assert result.returncode == 1, command
        assert "There is no database at" in result.stderr and "recriut.db" in result.stderr
        assert "recruit db upgrade --db recriut.db" in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "recriut.db").exists(), command


def test_load_creates_a_database_only_with_create(tmp_path):
    folder = tmp_path / "empty-extract"
    folder.mkdir()
    refused = run_cli("load", str(folder), "--db", "new.db", cwd=tmp_path)
    assert refused.returncode == 1
    assert "There is no database" in refused.stderr and "--create" in refused.stderr
    assert not (tmp_path / "new.db").exists()
    # With --create the database is made (the empty folder itself is then refused: nothing to load).
    run_cli("load", "--create", str(folder), "--db", "new.db", cwd=tmp_path)
    assert (tmp_path / "new.db").exists()
    assert current_revision(make_engine(str(tmp_path / "new.db"))) == head_revision()


def test_an_empty_file_is_not_set_up_behind_the_users_back(tmp_path):
    (tmp_path / "blank.db").touch()
    with pytest.raises(RecruitError, match="has not been set up for recruit"):
        open_database(str(tmp_path / "blank.db"))
    assert current_revision(make_engine(str(tmp_path / "blank.db"))) is None


@pytest.fixture
def behind(db_url):
    """A database one revision behind this recruit's."""
    engine = make_engine(db_url, create_folder=True)
    upgrade(engine)
    with engine.begin() as conn:
        previous = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    from recruit.migrate import downgrade

    downgrade(engine, "-1")
    assert current_revision(engine) not in (None, previous)
    engine.dispose()
    return db_url


def test_an_old_database_is_not_upgraded_but_named_out_of_date(behind, tmp_path):
    before = current_revision(make_engine(behind))
    with pytest.raises(RecruitError, match="is out of date") as refused:
        open_database(behind)
    assert "recruit db upgrade --db" in str(refused.value)
    assert current_revision(make_engine(behind)) == before  # nothing changed

    result = run_cli("quarantine", "list", "--db", behind, cwd=tmp_path)
    assert result.returncode == 1 and "is out of date" in result.stderr
    assert current_revision(make_engine(behind)) == before

    upgraded = run_cli("db", "upgrade", "--db", behind, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert current_revision(make_engine(behind)) == head_revision()
    assert run_cli("quarantine", "list", "--db", behind, cwd=tmp_path).returncode == 0


def test_a_slip_in_an_address_is_not_taken_for_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_url("sqlite:/x.db") == "sqlite:/x.db"  # then explained as not an address
    assert resolve_url("C:/practice/recruit.db").startswith("sqlite:///")
