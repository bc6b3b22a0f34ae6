"""Property: whatever rows a tabular extract holds, split over however many files, every row is
stored, quarantined (naming its file, line and column) or counted as not used, and exactly the
coded entries a plain-Python reading of the same rows expects are stored."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from recruit.db import make_engine
from recruit.errors import RecruitError
from recruit.load.csv_extract import valid_sctid
from recruit.load.loader import load_extract
from recruit.migrate import upgrade
from tests.generative.conftest import clear_database

EXTRACT_DATE = dt.date(2026, 11, 1)
GOOD = ["22298006", "1082551000000105", "1047321000000104"]
LOOKUP = {"11": "22298006", "12": "1082551000000105", "13": ""}  # 13: no SNOMED CT code

MAPPING = """
name: property extract
missing: [NA]
date_formats: ["%Y-%m-%d"]
practice_ods: A81001
lookups:
  local: {file: "Lookup.csv", key: Id, values: {snomedct: Concept}}
patients:
  file: "Patient.csv"
  skip_rows: [{column: Deleted, values: ["1"], reason: deleted}]
  columns: {patient: Key, date_of_birth: Born}
events:
  - file: "Obs_*.csv"
    columns: {patient: Key, date: Date, codes: [{column: Code, system: snomedct}]}
  - file: "Local_*.csv"
    columns: {patient: Key, date: Date, codes: [{column: LocalId, lookup: local}]}
"""

keys = st.sampled_from(["K1", "K2", "K3", "K4", "", "NA"])
dates = st.sampled_from(["2020-01-02", "2019-12-31", "not a date", "", "NA", "2030-01-01"])
patient_rows = st.lists(st.tuples(keys, dates, st.sampled_from(["0", "1"])), max_size=6)
obs_rows = st.lists(
    st.tuples(keys, dates, st.sampled_from([*GOOD, "22298007", "123", "", "NA", "XE0Ua"])), max_size=8
)
local_rows = st.lists(st.tuples(keys, dates, st.sampled_from(["11", "12", "13", "99", ""])), max_size=6)


def _chunks(rows: list[tuple[str, ...]], parts: int) -> list[list[tuple[str, ...]]]:
    return [rows[i::parts] for i in range(parts)]


def _blank(value: str) -> str:
    return "" if value == "NA" else value


def _date_ok(value: str) -> bool:
    value = _blank(value)
    try:
        return dt.date.fromisoformat(value) <= EXTRACT_DATE
    except ValueError:
        return False


@pytest.fixture(scope="module")
def one_database(tmp_path_factory):  # type: ignore[no-untyped-def]
    """One SQLite database, migrated once and emptied before each example."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('tabular')}/r.db")
    upgrade(engine)
    yield engine
    engine.dispose()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(patient_rows, obs_rows, local_rows, st.integers(1, 3), st.integers(1, 2))
def test_every_row_is_accounted_for_and_the_right_entries_stored(
    one_database, patients, obs, local, obs_files, local_files
):
    engine = one_database
    clear_database(engine)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "extract"
        folder.mkdir()
        (folder / "Lookup.csv").write_text("Id,Concept\n" + "".join(f"{k},{v}\n" for k, v in LOOKUP.items()))
        (folder / "Patient.csv").write_text(
            "Key,Born,Deleted\n" + "".join(f"{k},{b},{d}\n" for k, b, d in patients)
        )
        files: dict[str, list[tuple[str, ...]]] = {"Patient.csv": patients}
        for i, part in enumerate(_chunks(obs, obs_files), start=1):
            name = f"Obs_{i:03d}.csv"
            (folder / name).write_text("Key,Date,Code\n" + "".join(f"{k},{d},{c}\n" for k, d, c in part))
            files[name] = part
        for i, part in enumerate(_chunks(local, local_files), start=1):
            name = f"Local_{i}.csv"
            (folder / name).write_text("Key,Date,LocalId\n" + "".join(f"{k},{d},{c}\n" for k, d, c in part))
            files[name] = part
        mapping = Path(tmp) / "m.yaml"
        mapping.write_text(MAPPING)
        rows = sum(1 for body in files.values() for row in body if any(v for v in row))
        if rows == 0:  # no rows at all: refused as holding no records
            with pytest.raises(RecruitError, match="holds no records"):
                load_extract(engine, [folder], format="csv", mapping=mapping, extract_date=EXTRACT_DATE)
            return
        summary = load_extract(engine, [folder], format="csv", mapping=mapping, extract_date=EXTRACT_DATE)
        with engine.connect() as conn:
            quarantined = conn.execute(text("SELECT file, line, field FROM quarantine")).all()
            stored = conn.execute(
                text("SELECT p.source_id, e.code FROM clinical_event e JOIN patient p ON p.id = e.patient_id")
            ).all()

    # Every row (blank lines aside) is read and stored or quarantined, or counted as not used.
    assert summary.read == summary.loaded + summary.quarantined
    assert summary.read + sum(summary.not_used.values()) == rows
    for file, line, field in quarantined:
        name = Path(file).name
        assert name in files and field
        assert 2 <= line <= len(files[name]) + 1

    # Reference reading: a patient is stored when a row of its key is not left out and has a
    # usable birth date (of several such rows, the first is stored and the rest quarantined as
    # repeats); an entry is stored when its patient is, its date is usable and not before the
    # birth, and its code is valid (directly or through the lookup).
    born: dict[str, str] = {}
    for k, b, d in patients:
        if d == "0" and _blank(k) and _date_ok(b):
            born.setdefault(k, b)

    def kept(k: str, d: str) -> bool:
        return k in born and _date_ok(d) and d >= born[k]

    expected = sorted(
        [(k, c) for k, d, c in obs if kept(k, d) and valid_sctid(c)]
        + [(k, LOOKUP[c]) for k, d, c in local if kept(k, d) and LOOKUP.get(c) and valid_sctid(LOOKUP[c])]
    )
    assert sorted(stored) == expected
