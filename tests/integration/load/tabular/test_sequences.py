"""A practice's tabular extracts over time: a later extract that leaves a patient out (EMIS's
Deleted row), records a death in its own table, reuses an id for another person, or lacks a
table; and an older extract after a newer one. The facts letters are refused on follow."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import text

from recruit.errors import RecruitError
from recruit.load.loader import load_extract

NHS = ["9990000018", "9990000026", "9990000034", "9990000042", "9990000050"]
OPT_OUT = "827241000000103"  # Dissent from secondary use of GP patient identifiable data

MAPPING = """
name: sequence test
date_formats: ["%Y-%m-%d"]
practice_ods: A81001
patients:
  file: "Patient.csv"
  skip_rows: [{column: Deleted, values: ["true"], reason: "deleted in the clinical system"}]
  columns: {patient: Id, nhs_number: NHS, date_of_birth: Born, family_name: Surname, registration_start: From}
deaths:
  file: "Death*.csv"
  columns: {patient: Id, date: Died}
events:
  file: "Observation*.csv"
  columns: {patient: Id, date: Date, codes: [{column: Code, system: snomedct}]}
"""
NO_EVENTS = MAPPING[: MAPPING.index("events:")]


def _extract(root: Path, name: str, patients: list[str], deaths: str = "", events: str | None = "") -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "Patient.csv").write_text(
        "Id,NHS,Born,Surname,From,Deleted\n" + "".join(p + "\n" for p in patients)
    )
    (folder / "Death.csv").write_text("Id,Died\n" + deaths)
    if events is not None:
        (folder / "Observation.csv").write_text("Id,Date,Code\n" + events)
    return folder


def _load(engine, folder: Path, mapping: Path, when: str):  # type: ignore[no-untyped-def]
    return load_extract(
        engine, [folder], format="csv", mapping=mapping, extract_date=dt.date.fromisoformat(when)
    )


def _patients(engine) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT source_id, nhs_number, registration_end, date_of_death FROM patient ORDER BY id")
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_later_extracts_end_delete_and_kill_and_an_older_one_is_refused(engine, tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    people = [f"P{i + 1},{NHS[i]},1980-01-01,Person,2000-01-01,false" for i in range(4)]
    first = _extract(tmp_path, "one", people, events=f"P4,2025-01-01,{OPT_OUT}\n")
    _load(engine, first, mapping, "2026-10-01")

    # P1 deleted in the clinical system; P2 dead in the deaths table; P3's id now another person.
    later = [
        people[0].replace(",false", ",true"),
        people[1],
        f"P3,{NHS[4]},1990-05-05,Other,2026-01-01,false",
        people[3],
    ]
    no_events_mapping = tmp_path / "partial.yaml"
    no_events_mapping.write_text(NO_EVENTS)
    second = _extract(tmp_path, "two", later, deaths="P2,2026-10-15\n", events=None)
    summary = _load(engine, second, no_events_mapping, "2026-11-01")
    assert summary.not_used["Patient row deleted in the clinical system"] == 1

    stored = _patients(engine)
    assert stored["P1"][1] is not None  # left out of the newer extract: no longer registered
    assert str(stored["P2"][2]) == "2026-10-15"  # the death from its own table
    assert NHS[4] in {v[0] for v in stored.values()}  # the id's new person is a new patient
    assert any(k.startswith("P3") and v[0] == NHS[2] and v[1] is not None for k, v in stored.items())
    # The extract without an events table kept the earlier opt-out.
    with engine.connect() as conn:
        codes = conn.execute(text("SELECT code FROM clinical_event")).scalars().all()
    assert codes == [OPT_OUT]

    older = _extract(tmp_path, "older", people)
    with pytest.raises(RecruitError, match="older"):
        _load(engine, older, mapping, "2026-09-01")
    assert _patients(engine) == stored


def test_a_missing_table_file_is_refused_not_skipped(engine, tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    folder = _extract(tmp_path, "one", [f"P1,{NHS[0]},1980-01-01,A,2000-01-01,false"], events=None)
    with pytest.raises(RecruitError, match="No file matching 'Observation\\*.csv'"):
        _load(engine, folder, mapping, "2026-10-01")
