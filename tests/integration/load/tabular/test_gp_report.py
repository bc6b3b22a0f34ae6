"""Practice search-report exports (rules/mappings/gp_system_report.yaml): blank "same as above"
cells are filled down, and the usual GP is read from "SURNAME, Forename (Dr)" as from "Dr A Smith"."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from recruit.models import Patient, Practitioner
from tests.integration.load.tabular.helpers import (
    FIXTURES,
    load_folder,
    quarantined,
    stored_events,
    stored_issues,
)

WHEN = dt.date(2025, 6, 1)
FOLDER = FIXTURES / "gp_report"


def test_blank_same_as_above_cells_keep_their_patient_and_both_usual_gp_forms_read(engine):
    summary = load_folder(engine, FOLDER, "gp_system_report.yaml", WHEN)
    assert summary.quarantined == 0 and quarantined(engine) == []
    events = stored_events(engine)
    assert len(events) == 4
    with engine.connect() as conn:
        keys = dict(conn.execute(select(Patient.source_id, Patient.nhs_number)).all())
        gps = dict(
            conn.execute(
                select(Patient.nhs_number, Practitioner.family_name).join(
                    Practitioner, Practitioner.id == Patient.usual_gp_id
                )
            ).all()
        )
    by_number = {nhs: key for key, nhs in keys.items()}
    ada, bob = by_number["9991234578"], by_number["9992026502"]
    assert [(k, s, c) for k, s, c, _ in events] == sorted(
        [
            (ada, "snomedct", "128200000"),
            (ada, "ctv3", "A531."),  # NHS Number blank: same as the row above
            (bob, "ctv3", "8H69."),
            (bob, "snomedct", "1727541000006109"),  # likewise
        ]
    )
    assert [(k, d) for k, _, _, d in stored_issues(engine)] == [
        (ada, dt.date(2025, 5, 1)),
        (ada, dt.date(2025, 5, 29)),
    ]
    assert {nhs: name.lower() for nhs, name in gps.items()} == {"9991234578": "smith", "9992026502": "jones"}
