"""Registration from what real extracts carry (issue 16 item 1).

Shapes, modelled on the published structure definitions and examples: the CareConnect / GP
Connect STU3 registration-details extension (`registrationPeriod` sub-extension; GP Connect
examples may carry only `preferredBranchSurgery`), an R4 extension with a `valuePeriod`, PDS
`generalPractitioner.identifier.period`, and a plain R4 Bulk export (`generalPractitioner` and
`active` only), whose registration is taken at the extract date with its start unknown.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

import synthetic_ehr
from recruit.cli_render import registration_lines
from recruit.db import make_engine
from recruit.load import load_extract
from recruit.load.fhir import FhirReader
from recruit.load.values import DateReader
from recruit.migrate import upgrade
from recruit.models import Patient, SearchResult
from recruit.query.absent import search_warnings
from recruit.query.run import load_search, run_rule_set
from recruit.rules.model import parse_rule_set
from tests.integration.load import fhir_samples as fx

ROOT = Path(__file__).resolve().parents[3]
EXTRACT_DATE = dt.date(2026, 11, 1)
GPC_REG = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-RegistrationDetails-1"
R4_REG = "https://fhir.hl7.org.uk/StructureDefinition/Extension-CareConnect-RegistrationDetails-1"


def read(res):
    return FhirReader(DateReader(EXTRACT_DATE)).read(res).patients[0]


def test_gp_connect_stu3_registration_period():
    ext = [
        {"url": GPC_REG, "extension": [{"url": "registrationPeriod", "valuePeriod": {"start": "2011-04-05"}}]}
    ]
    p = read(fx.patient(extension=ext))
    assert (p.registration_start, p.registration_end) == ("2011-04-05", None)


def test_r4_extension_with_a_value_period():
    ext = [{"url": R4_REG, "valuePeriod": {"start": "2012-01-05", "end": "2019-02-03"}}]
    p = read(fx.patient(extension=ext))
    assert (p.registration_start, p.registration_end) == ("2012-01-05", "2019-02-03")


def test_gp_connect_extension_without_a_period_falls_back_to_the_named_practice():
    ext = [
        {
            "url": GPC_REG,
            "extension": [{"url": "preferredBranchSurgery", "valueReference": {"reference": "Location/l1"}}],
        }
    ]
    p = read(fx.patient(extension=ext, active=True))
    assert (p.registration_start, p.registration_end, p.practice_ref) == (None, None, "Organization/org1")


def _pds_gp(period):
    return [
        {
            "id": "a1b2",
            "type": "Organization",
            "identifier": {"system": fx.ODS, "value": "ZZ9001", "period": period},
        }
    ]


def test_pds_general_practitioner_identifier_period():
    p = read(fx.patient(generalPractitioner=_pds_gp({"start": "2020-01-01"})))
    assert (p.registration_start, p.registration_end, p.practice_ref) == ("2020-01-01", None, "ods:ZZ9001")
    # A planned move after the extract date: still registered.
    p = read(fx.patient(generalPractitioner=_pds_gp({"start": "2020-01-01", "end": "2027-03-31"})))
    assert (p.registration_start, p.registration_end) == ("2020-01-01", None)
    # Ended: no longer registered there.
    p = read(fx.patient(generalPractitioner=_pds_gp({"start": "2020-01-01", "end": "2021-12-31"})))
    assert (p.registration_start, p.registration_end) == ("2020-01-01", "2021-12-31")


def test_the_extension_wins_over_the_pds_period():
    ext = [
        {"url": GPC_REG, "extension": [{"url": "registrationPeriod", "valuePeriod": {"start": "2011-04-05"}}]}
    ]
    p = read(fx.patient(extension=ext, generalPractitioner=_pds_gp({"start": "2020-01-01"})))
    assert p.registration_start == "2011-04-05"


def test_plain_r4_general_practitioner_and_active():
    """No registration details: registered at the extract date, start unknown (NULL); an
    inactive record was not registered on the extract date (its last day was the day before)."""
    p = read(fx.patient(active=True))
    assert (p.registration_start, p.registration_end) == (None, None)
    p = read(fx.patient(generalPractitioner=[{"identifier": {"system": fx.ODS, "value": "ZZ9001"}}]))
    assert (p.registration_start, p.registration_end, p.practice_ref) == (None, None, "ods:ZZ9001")
    p = read(fx.patient(active=False))
    assert (p.registration_start, p.registration_end) == (None, "2026-10-31")


def test_load_summary_counts_patients_without_a_registration_start(sqlite_engine, tmp_path):
    ext = [
        {"url": GPC_REG, "extension": [{"url": "registrationPeriod", "valuePeriod": {"start": "2011-04-05"}}]}
    ]
    folder = tmp_path / "x"
    fx.write_ndjson(folder / "Organization.ndjson", [fx.organization()])
    fx.write_ndjson(
        folder / "Patient.ndjson",
        [
            fx.patient("p1", fx.NHS_NUMBERS[0], extension=ext),  # start known
            fx.patient("p2", fx.NHS_NUMBERS[1], active=True),  # start unknown
            fx.patient("p3", fx.NHS_NUMBERS[2], active=False),  # left: not counted
            fx.patient("p4", fx.NHS_NUMBERS[3], generalPractitioner=_pds_gp({"start": "2020-01-01"})),
            fx.patient("p5", fx.NHS_NUMBERS[4], generalPractitioner=[]),  # names no practice
        ],
    )
    summary = load_extract(sqlite_engine, [folder], extract_date=EXTRACT_DATE)
    assert summary.quarantined == 0
    assert (summary.patients, summary.registration_start_unknown, summary.registration_practice_unnamed) == (
        5,
        2,
        1,
    )
    lines = registration_lines(summary)
    assert lines[0].startswith("registration: 2 of 5 patient(s) have no registration start date")
    assert "1 name no practice" in lines[1]
    with sqlite_engine.connect() as conn:
        stored = dict(conn.execute(select(Patient.source_id, Patient.registration_start)).all())
    assert stored == {
        "p1": dt.date(2011, 4, 5),
        "p2": None,
        "p3": None,
        "p4": dt.date(2020, 1, 1),
        "p5": None,
    }


@pytest.fixture(scope="module")
def extracts(tmp_path_factory) -> tuple[Path, Path]:
    """One made-up practice twice: as generated (registration details on every Patient) and as a
    plain R4 Bulk export of the same people (the extension removed; generalPractitioner and
    `active` kept, an ended registration showing as active false, as the generator writes)."""
    out = tmp_path_factory.mktemp("reg")
    synthetic_ehr.generate(out, practices=1, patients=600, seed=16, workers=1)
    with_ext = out / "fhir"
    plain = out / "plain"
    shutil.copytree(with_ext, plain)
    lines = []
    for line in (with_ext / "Patient.ndjson").read_bytes().splitlines():
        res = orjson.loads(line)
        regs = [e for e in res.get("extension", []) if "RegistrationDetails" in e["url"]]
        assert regs, "the generator writes registration details"
        ended = any("end" in sub.get("valuePeriod", {}) for e in regs for sub in e.get("extension", []))
        assert res.get("active") is (not ended)  # the same people: `active` says who left
        res["extension"] = [e for e in res["extension"] if e not in regs]
        lines.append(orjson.dumps(res))
    (plain / "Patient.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    return with_ext, plain


def _search(tmp_path: Path, folder: Path, rules):
    engine = make_engine(f"sqlite:///{tmp_path / (folder.name + '.db')}")
    upgrade(engine)
    summary = load_extract(engine, [folder])
    rule_set, codelists = rules
    run_id = run_rule_set(engine, rule_set, codelists, EXTRACT_DATE)
    with engine.connect() as conn:
        found = set(
            conn.execute(
                select(Patient.nhs_number)
                .join(SearchResult, SearchResult.patient_id == Patient.id)
                .where(SearchResult.run_id == run_id, SearchResult.outcome == "candidate")
            ).scalars()
        )
        warnings = search_warnings(conn, run_id, rule_set)
    engine.dispose()
    return summary, found, warnings


def test_plain_r4_export_finds_the_same_candidates_as_with_registration_details(extracts, tmp_path):
    """Acceptance (issue 16): the InSTEP rules find the same people whether or not the extract
    carries the registration-details extension."""
    with_ext, plain = extracts
    rule_set, codelists, _ = load_search(ROOT / "rules" / "instep.yaml")
    s1, found_with, warn_with = _search(tmp_path, with_ext, (rule_set, codelists))
    s2, found_plain, warn_plain = _search(tmp_path, plain, (rule_set, codelists))
    assert s1.registration_start_unknown == 0
    assert 0 < s2.registration_start_unknown < s2.patients == s1.patients  # some have left
    assert found_with, "the made-up practice has candidates"
    assert found_plain == found_with
    assert warn_with == warn_plain == []


def test_plain_r4_export_with_a_rule_needing_a_known_start_warns(extracts, tmp_path):
    """A rule that does not count an unknown start removes everyone from a plain export, and
    the search says why, naming the field."""
    _, plain = extracts
    rule_set = parse_rule_set(
        "name: reg\nversion: '1'\nsteps:\n"
        "  - {id: registered, kind: include, reason: Registered for a year,\n"
        "     criterion: {registered: {for_at_least_months: 12}}}\n"
    )
    summary, found, warnings = _search(tmp_path, plain, (rule_set, {}))
    assert found == set()
    assert [w.field for w in warnings] == ["registration_start"]
    assert "no patient has a registration start date: the extract carries no registration details" in str(
        warnings[0]
    )
    assert warnings[0].removed == warnings[0].entering == summary.patients  # some had left
