"""Property (issue 16 item 2): whatever Bundles arrive, with ids reused across them and the same
people in several, a record is only ever stored under the person its own Bundle names (or, for a
reference to nothing in its Bundle, the record outside any Bundle), and every record read is
stored or quarantined."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from recruit.db import make_engine
from recruit.load import load_extract
from recruit.migrate import upgrade
from recruit.models import ClinicalEvent, Patient
from tests.generative.conftest import clear_database
from tests.integration.load import fhir_samples as fx

WHEN = dt.date(2025, 6, 1)
IDS = ["p1", "p2", "p3"]
BIRTHS = ["1980-05-01", "1975-02-03"]

people = st.tuples(st.sampled_from(fx.NHS_NUMBERS[:3]), st.sampled_from(BIRTHS))


@st.composite
def extracts(draw):  # type: ignore[no-untyped-def]
    """Bundles (each: patients with ids unique within it, conditions naming an id) and some
    patients outside any Bundle (NDJSON)."""
    bundles = []
    for _ in range(draw(st.integers(1, 4))):
        ids = draw(st.lists(st.sampled_from(IDS), max_size=2, unique=True))
        patients = {pid: draw(people) for pid in ids}
        refs = draw(st.lists(st.sampled_from(IDS), max_size=3))
        kind = draw(st.sampled_from(["collection", "message", "transaction", "document"]))
        bundles.append((kind, patients, refs))
    loose_ids = draw(st.lists(st.sampled_from(IDS), max_size=2, unique=True))
    loose = {pid: draw(people) for pid in loose_ids}
    return bundles, loose


def _write(folder: Path, bundles, loose) -> dict[str, tuple[str, str] | None]:  # type: ignore[no-untyped-def]
    """The files, and for each condition's code the person (NHS number, birth date) its
    reference means: its own Bundle's patient, else the loose one, else nobody."""
    expected: dict[str, tuple[str, str] | None] = {}
    code = 100000
    for b, (kind, patients, refs) in enumerate(bundles):
        entries = [{"fullUrl": f"urn:uuid:org-{b}", "resource": fx.organization()}]
        for pid, (nhs, born) in patients.items():
            entries.append({"resource": fx.patient(pid, nhs, birthDate=born)})
        for i, pid in enumerate(refs):
            code += 1
            cond = fx.condition(f"c{b}-{i}", f"Patient/{pid}", code=str(code))
            entries.append({"resource": cond})
            expected[str(code)] = patients.get(pid, loose.get(pid))
        (folder / f"bundle{b}.json").write_bytes(
            orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": entries})
        )
    if loose:
        rows = [fx.patient(pid, nhs, birthDate=born) for pid, (nhs, born) in loose.items()]
        (folder / "Patient.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extracts())
def test_a_record_is_stored_only_under_the_person_its_bundle_names(extract):
    bundles, loose = extract
    folder = Path(tempfile.mkdtemp())
    engine = make_engine(f"sqlite:///{folder / 'r.db'}")
    upgrade(engine)
    try:
        data = folder / "in"
        data.mkdir()
        expected = _write(data, bundles, loose)
        summary = load_extract(engine, [data], extract_date=WHEN)
        assert summary.read == summary.loaded + summary.quarantined
        assert all(k.read == k.stored + k.quarantined for k in summary.by_kind.values())
        with engine.connect() as conn:
            stored = conn.execute(
                select(ClinicalEvent.code, Patient.nhs_number, Patient.date_of_birth).join(
                    Patient, Patient.id == ClinicalEvent.patient_id
                )
            ).all()
            numbers = conn.execute(select(Patient.nhs_number)).scalars().all()
        for code, nhs, born in stored:
            assert expected[code] == (nhs, born.isoformat()), code
        # Nobody is stored twice: one person, one patient.
        assert len(numbers) == len(set(numbers))
        # Each condition is stored, or quarantined (its person missing or themselves quarantined).
        assert len(stored) + summary.quarantined_by_reason[
            "reference_dangling"
        ] + summary.quarantined_by_reason["patient_quarantined"] == len(expected)
    finally:
        clear_database(engine)
        engine.dispose()
        shutil.rmtree(folder)
