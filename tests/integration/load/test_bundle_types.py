"""Every Bundle type (issue 16 acceptance): document and history, beside the collection, searchset,
message, transaction and batch shapes of test_published_shapes.py. A document is self-contained
(its references mean its own entries); history pages are one server's records."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from recruit.load import load_extract
from recruit.models import ClinicalEvent, Patient
from tests.integration.load import fhir_samples as fx

WHEN = dt.date(2025, 6, 1)


def _bundle(kind: str, *resources: dict[str, Any], full_urls: bool = True) -> bytes:
    entries = []
    for res in resources:
        entry: dict[str, Any] = {"resource": res}
        if full_urls:
            entry["fullUrl"] = f"urn:uuid:{res['id']}"
        if kind == "history":
            entry["request"] = {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
        entries.append(entry)
    return orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": entries})


def _stored(engine) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        rows = conn.execute(
            select(Patient.source_id, Patient.nhs_number, ClinicalEvent.code)
            .join(ClinicalEvent, ClinicalEvent.patient_id == Patient.id)
            .order_by(ClinicalEvent.code)
        ).all()
    return [tuple(r) for r in rows]


def test_documents_are_self_contained(engine, tmp_path: Path):
    """Two discharge-summary documents (Composition first), each with its own Patient 'pat' and a
    Condition referring to it by urn:uuid: each Condition stays with its own document's patient."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for n, (nhs, code) in enumerate([(fx.NHS_NUMBERS[0], "82423001"), (fx.NHS_NUMBERS[1], "279039007")]):
        composition = {
            "resourceType": "Composition",
            "id": f"comp{n}",
            "status": "final",
            "type": {"coding": [{"system": fx.SCT, "code": "373942005", "display": "Discharge summary"}]},
            "subject": {"reference": "urn:uuid:pat"},
            "date": "2025-05-01",
            "title": "Discharge summary",
        }
        patient = fx.patient("pat", nhs, birthDate=f"198{n}-01-01")
        condition = fx.condition(f"c{n}", "urn:uuid:pat", code=code)
        (folder / f"doc{n}.json").write_bytes(
            _bundle("document", composition, patient, condition, fx.organization())
        )
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined == 0 and summary.patients == 2
    assert summary.not_used["Composition (a resource type recruit does not use)"] == 2
    assert _stored(engine) == [
        ("pat~" + fx.NHS_NUMBERS[1], fx.NHS_NUMBERS[1], "279039007"),
        ("pat", fx.NHS_NUMBERS[0], "82423001"),
    ]


def test_history_pages_share_the_servers_records(engine, tmp_path: Path):
    folder = tmp_path / "history"
    folder.mkdir()
    (folder / "page1.json").write_bytes(
        _bundle("history", fx.organization(), fx.patient("p1"), full_urls=False)
    )
    (folder / "page2.json").write_bytes(_bundle("history", fx.condition("c1", "Patient/p1"), full_urls=False))
    summary = load_extract(engine, [folder], extract_date=WHEN)
    assert summary.quarantined == 0
    assert _stored(engine) == [("p1", fx.NHS_NUMBERS[0], "82423001")]
