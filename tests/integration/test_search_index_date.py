"""Issue 17: a search is run as on the date its extracts were taken, not today, and says so."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from recruit.db import make_engine
from recruit.load import load_extract
from recruit.migrate import upgrade
from recruit.query.run import default_index_date
from tests.helpers import run_cli
from tests.integration.load import fhir_samples as fx

ROOT = Path(__file__).resolve().parents[2]


def _practice(folder: Path, ods: str, nhs: str) -> Path:
    """A one-patient practice extract with its own ODS code."""
    fx.write_ndjson(folder / "Organization.ndjson", [fx.organization(ods)])
    fx.write_ndjson(folder / "Practitioner.ndjson", [fx.practitioner()])
    fx.write_ndjson(folder / "Patient.ndjson", [fx.patient(nhs=nhs)])
    return folder


def test_the_newest_extract_date_of_the_practices_searched_is_the_default(tmp_path):
    engine = make_engine(str(tmp_path / "r.db"))
    upgrade(engine)
    assert default_index_date(engine).reason.startswith("today")  # nothing loaded yet
    assert default_index_date(engine).date == dt.date.today()
    load_extract(
        engine, [_practice(tmp_path / "a", "ZZ9001", fx.NHS_NUMBERS[0])], extract_date=dt.date(2026, 10, 1)
    )
    load_extract(
        engine, [_practice(tmp_path / "b", "ZZ9002", fx.NHS_NUMBERS[1])], extract_date=dt.date(2026, 11, 1)
    )

    both = default_index_date(engine)
    assert both.date == dt.date(2026, 11, 1)
    assert "ZZ9001" in both.reason and "older" in both.reason
    one = default_index_date(engine, "zz9001")
    assert one.date == dt.date(2026, 10, 1) and "ZZ9001" in one.reason
    engine.dispose()


def test_search_says_which_index_date_it_used_and_why(tmp_path):
    folder = _practice(tmp_path / "a", "ZZ9001", fx.NHS_NUMBERS[0])
    db = str(tmp_path / "r.db")
    loaded = run_cli("load", "--create", str(folder), "--db", db, "--extract-date", "2026-10-01", cwd=ROOT)
    assert loaded.returncode == 0, loaded.stderr
    searched = run_cli("search", "--db", db, cwd=ROOT)
    assert searched.returncode == 0, searched.stderr
    assert "Index date: 2026-10-01 (the date practice ZZ9001's extract was taken)" in searched.stdout
    assert "index date 2026-10-01" in searched.stdout  # the run itself is stored at that date
    given = run_cli("search", "--db", db, "--index-date", "2026-09-01", cwd=ROOT)
    assert "Index date: 2026-09-01 (given with --index-date)" in given.stdout
