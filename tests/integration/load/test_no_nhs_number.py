"""A patient without a verified NHS number is stored with their records, counted, and left out of
searches at a step of its own, never written to (issue 16 item 2)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from recruit.cli_render import patient_lines
from recruit.load import load_extract
from recruit.models import ClinicalEvent, Patient, SearchResult
from recruit.query.run import load_search, run_rule_set
from tests.integration.load import fhir_samples as fx

ROOT = Path(__file__).resolve().parents[3]
WHEN = dt.date(2025, 6, 1)


def test_patients_without_a_verified_number_are_stored_and_left_out_at_their_step(engine, tmp_path):
    folder = tmp_path / "x"
    fx.base_extract(folder)
    people = [
        fx.patient("p1"),
        fx.patient("p2", identifier=[]),  # a temporary resident
        fx.patient("p3", "9990000019"),  # fails its check digit
    ]
    fx.write_ndjson(folder / "Patient.ndjson", people)
    fx.write_ndjson(folder / "Condition.ndjson", [fx.condition(f"c{i}", f"Patient/p{i}") for i in (1, 2, 3)])
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined == 0 and summary.patients == 3 and summary.no_nhs_number == 2
    assert any("no verified NHS number: 2 patient(s)" in line for line in patient_lines(summary))
    with engine.connect() as conn:
        stored = dict(conn.execute(select(Patient.source_id, Patient.nhs_number)).all())
        events = conn.execute(
            select(Patient.source_id).join(ClinicalEvent, ClinicalEvent.patient_id == Patient.id)
        ).scalars()
        assert sorted(events) == ["p1", "p2", "p3"]
    assert stored == {"p1": fx.NHS_NUMBERS[0], "p2": None, "p3": None}

    rule_set, codelists, _ = load_search(ROOT / "rules" / "instep.yaml")
    run_id = run_rule_set(engine, rule_set, codelists, WHEN)
    with engine.connect() as conn:
        steps = dict(
            conn.execute(
                select(Patient.source_id, SearchResult.excluding_step)
                .join(SearchResult, SearchResult.patient_id == Patient.id)
                .where(SearchResult.run_id == run_id)
            ).all()
        )
    assert steps["p2"] == steps["p3"] == "nhs_number"
    assert steps["p1"] != "nhs_number"
