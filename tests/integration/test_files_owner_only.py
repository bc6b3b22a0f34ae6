"""Issue 15 case 8 (outside review and letters): files recruit writes with patient identifiers are
readable by their owner only (0600, folders 0700) whatever the umask: the SQLite database and its
journals, a DuckDB file and its write-ahead log, a folder made by --create-folder, quarantine
exports and the demo's folder. Run with umask 022, as most machines have it."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, text

from recruit.db import make_engine
from recruit.dbcopy import copy_database
from recruit.demo import MARKER, prepare_folder
from recruit.load import load_extract
from recruit.load.quarantine import export_quarantine
from recruit.migrate import upgrade
from recruit.private_files import hold_private_umask, owner_only, release_private_umask
from recruit.tables import STUDY
from tests.helpers import run_cli
from tests.integration.load import fhir_samples as fx
from tests.search_helpers import duckdb_available

EXTRACT_DATE = dt.date(2026, 11, 1)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _umask() -> int:
    now = os.umask(0)
    os.umask(now)
    return now


@pytest.fixture
def umask_022() -> Iterator[None]:
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _extract(folder: Path) -> Path:
    """A small FHIR extract with one record that is quarantined (a date in the future)."""
    fx.base_extract(folder)
    fx.write_ndjson(
        folder / "Condition.ndjson", [fx.condition(), fx.condition("c2", onsetDateTime="2099-01-01")]
    )
    return folder


def test_case_8_database_and_exports_owner_only(umask_022, tmp_path):
    # A plain file made now is readable by all: the umask really is 022 here.
    (tmp_path / "plain.txt").write_text("x")
    assert _mode(tmp_path / "plain.txt") == 0o644

    # The CLI: a database in folders that --create-folder makes.
    db_file = tmp_path / "new" / "deeper" / "recruit.db"
    made = run_cli("db", "upgrade", "--db", f"sqlite:///{db_file}", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert _mode(tmp_path / "new") == 0o700 and _mode(tmp_path / "new" / "deeper") == 0o700
    assert _mode(db_file) == 0o600

    # In the library: a new SQLite file, with its WAL journal, while a load writes to it.
    engine = make_engine(f"sqlite:///{tmp_path / 'practice.db'}")
    upgrade(engine)
    summary = load_extract(engine, [_extract(tmp_path / "extract")], extract_date=EXTRACT_DATE)
    assert summary.quarantined == 1
    with engine.connect() as conn:  # open, so the journal files are there to look at
        conn.execute(text("SELECT 1"))
        journals = [tmp_path / f"practice.db{end}" for end in ("-wal", "-shm")]
        assert [p for p in journals if p.exists()], "SQLite in WAL mode keeps a -wal file while open"
        for path in [tmp_path / "practice.db", *[p for p in journals if p.exists()]]:
            assert _mode(path) == 0o600, path.name

    # The quarantine export, from the library and from the CLI.
    export_quarantine(engine, tmp_path / "quarantine.csv")
    assert _mode(tmp_path / "quarantine.csv") == 0o600
    assert "Condition.ndjson" in (tmp_path / "quarantine.csv").read_text()
    engine.dispose()
    exported = run_cli(
        "quarantine",
        "export",
        "--out",
        "q2.csv",
        "--db",
        f"sqlite:///{tmp_path / 'practice.db'}",
        cwd=tmp_path,
    )
    assert exported.returncode == 0, exported.stderr
    assert _mode(tmp_path / "q2.csv") == 0o600
    missing = run_cli(
        "quarantine",
        "export",
        "--out",
        "nowhere/q.csv",
        "--db",
        f"sqlite:///{tmp_path / 'practice.db'}",
        cwd=tmp_path,
    )
    assert missing.returncode == 1 and "Traceback" not in missing.stderr and "Cannot write" in missing.stderr

    # The demo's folder (made-up people, but made as a real run's would be).
    prepare_folder(tmp_path / "demo" / "out")
    assert _mode(tmp_path / "demo" / "out") == 0o700 and _mode(tmp_path / "demo" / "out" / MARKER) == 0o600

    # Whatever recruit did above, the umask it found is the umask it leaves.
    assert _umask() == 0o022


@pytest.mark.skipif(not duckdb_available(), reason="duckdb-engine is not installed")
def test_case_8_duckdb_file_and_its_write_ahead_log_owner_only(umask_022, tmp_path):
    """DuckDB makes its write-ahead log afresh at each write with the process umask (it does not
    copy the database file's mode as SQLite does), so recruit holds umask 077 while it is open."""
    source = make_engine(f"sqlite:///{tmp_path / 'practice.db'}")
    upgrade(source)
    load_extract(source, [_extract(tmp_path / "extract")], extract_date=EXTRACT_DATE)
    region = tmp_path / "region" / "region.duckdb"
    target = make_engine(f"duckdb:///{region}", create_folder=True)
    copy_database(source, target)
    assert _mode(region.parent) == 0o700 and _mode(region) == 0o600
    with target.begin() as conn:
        conn.execute(insert(STUDY).values(code="later", title="A later write"))
    wal = region.with_name("region.duckdb.wal")
    assert wal.exists(), "DuckDB keeps its write-ahead log until a checkpoint"
    assert _mode(wal) == 0o600
    assert _umask() == 0o022  # held only while a connection is in use
    target.dispose()
    source.dispose()

    # A copy through the CLI into a new DuckDB file.
    copied = run_cli(
        "db",
        "copy",
        "--db",
        f"sqlite:///{tmp_path / 'practice.db'}",
        "--to",
        "duckdb:///other.duckdb",
        cwd=tmp_path,
    )
    assert copied.returncode == 0, copied.stderr
    assert _mode(tmp_path / "other.duckdb") == 0o600


def test_private_umask_holds_end_in_any_order(umask_022, tmp_path):
    """An open DuckDB connection and owner_only() each hold umask 077; whichever ends first, the
    other still has it, and the umask comes back only when both have ended."""
    hold_private_umask()
    with owner_only():
        release_private_umask()  # the connection is given back inside owner_only()
        with open(tmp_path / "inside", "w"):
            pass
    assert _mode(tmp_path / "inside") == 0o600
    assert _umask() == 0o022

    with owner_only():
        hold_private_umask()  # a connection taken inside owner_only() and kept after it
    with open(tmp_path / "after", "w"):
        pass
    assert _mode(tmp_path / "after") == 0o600
    release_private_umask()
    assert _umask() == 0o022
