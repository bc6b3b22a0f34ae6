"""Quirks of published example data that must not cost records (reader side).

A run on published examples (UK Core, PDS, EPS, GP Connect, Bulk NDJSON) quarantined records
that are fine to keep, or that are simply of no use to recruit. Each fixture here is hand-made
with synthetic values, in the shape the published examples use:

- GP Connect STU3 structured record: Patient.generalPractitioner as a single object (not a list);
  an issue's dispenseRequest.quantity.value written as text ("28") beside the quantity-text
  extension; the example files on the GP Connect site wrapped in "{% highlight json %}" lines;
- EPS prescription-order message: a Practitioner named only by name.text;
- Bulk Data NDJSON (Synthea): Organizations identified only by a Synthea identifier (no ODS
  code), and a Practitioner with no name at all;
- records with no date anywhere: the reason names the choice (onset[x], effective[x]) and lists
  every place looked in.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from recruit.load import load_extract
from recruit.load.fhir import NAMELESS_PRACTITIONER, NO_ODS_CODE, FhirReader, NotUsed
from recruit.load.values import DateReader, Invalid
from recruit.models import MedicationIssue, Patient, Practice, Practitioner, Quarantine
from tests.integration.load import fhir_samples as fx

EXTRACT_DATE = dt.date(2026, 11, 1)
GPC = "https://fhir.nhs.uk/STU3/StructureDefinition"
QUANTITY_TEXT = f"{GPC}/Extension-CareConnect-GPC-MedicationQuantityText-1"
SYNTHEA_ID = "https://github.com/synthetichealth/synthea"


def reader() -> FhirReader:
    return FhirReader(DateReader(EXTRACT_DATE))


def _load(engine, folder: Path):  # type: ignore[no-untyped-def]
    return load_extract(engine, [folder], extract_date=EXTRACT_DATE)


def _rows(engine, *cols, order=None) -> list[tuple]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*cols).order_by(order or cols[0]))]


# --- GP Connect: a single generalPractitioner, quantities written as text ---------------------


def _gpc_issue(rid: str, valid_from: str, value: Any) -> dict[str, Any]:
    quantity: dict[str, Any] = {"extension": [{"url": QUANTITY_TEXT, "valueString": "capsule(s)"}]}
    if value is not None:
        quantity["value"] = value
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "meta": {"profile": [f"{GPC}/CareConnect-GPC-MedicationRequest-1"]},
        "status": "completed",
        "intent": "order",
        "medicationReference": {"reference": "Medication/q-med-1"},
        "subject": {"reference": "Patient/q-pat-1"},
        "authoredOn": "2024-01-10",
        "dispenseRequest": {
            "validityPeriod": {"start": valid_from},
            "quantity": quantity,
            "expectedSupplyDuration": {"value": "28", "unit": "day", "code": "d"},
        },
    }


def gpc_record() -> dict[str, Any]:
    resources = [
        {
            "resourceType": "Patient",
            "id": "q-pat-1",
            "meta": {"profile": [f"{GPC}/CareConnect-GPC-Patient-1"]},
            "identifier": [{"system": fx.NHS, "value": fx.NHS_NUMBERS[2]}],
            "active": True,
            "name": [{"use": "official", "family": "Tester", "given": ["Robin"]}],
            "gender": "male",
            "birthDate": "1958-07-09",
            # One object, where FHIR has a list (as the GP Connect examples write it).
            "generalPractitioner": {"reference": "Practitioner/q-gp-1"},
            "managingOrganization": {"reference": "Organization/q-org-1"},
        },
        {
            "resourceType": "Organization",
            "id": "q-org-1",
            "identifier": [{"system": fx.ODS, "value": "ZZ9301"}],
            "name": "Quirk Lane Surgery",
        },
        {
            "resourceType": "Practitioner",
            "id": "q-gp-1",
            "name": [{"use": "usual", "family": "Example", "given": ["Jo"], "prefix": ["Dr"]}],
        },
        {
            "resourceType": "Medication",
            "id": "q-med-1",
            "code": {"coding": [{"system": fx.SCT, "code": "320000009", "display": "Atorvastatin 20mg"}]},
        },
        _gpc_issue("q-issue-1", "2024-02-07", "28"),  # a number written as text
        _gpc_issue("q-issue-2", "2024-03-06", "twenty-eight"),  # words: quantity unknown
        _gpc_issue("q-issue-3", "2024-04-03", 56),
    ]
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [f"{GPC}/GPConnect-StructuredRecord-Bundle-1"]},
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def test_gp_connect_record_keeps_its_gp_and_every_issue(engine, tmp_path):
    folder = tmp_path / "gpc"
    folder.mkdir()
    (folder / "structured.json").write_bytes(orjson.dumps(gpc_record(), option=orjson.OPT_INDENT_2))
    summary = _load(engine, folder)
    assert summary.quarantined == 0
    assert summary.read == summary.loaded == 7  # patient, practice, GP, the Medication, 3 issues
    assert summary.repaired == 1  # "28" read as 28
    assert _rows(
        engine, MedicationIssue.source_resource_id, MedicationIssue.issue_date, MedicationIssue.quantity
    ) == [
        ("q-issue-1", dt.date(2024, 2, 7), 28.0),
        ("q-issue-2", dt.date(2024, 3, 6), None),
        ("q-issue-3", dt.date(2024, 4, 3), 56.0),
    ]
    # The single generalPractitioner object names the patient's usual GP.
    with engine.connect() as conn:
        stored_gps = conn.execute(
            select(Practitioner.source_id, Practice.ods_code).join(
                Practice, Practice.id == Practitioner.practice_id
            )
        ).all()
    assert [tuple(r) for r in stored_gps] == [("q-gp-1", "ZZ9301")]
    with engine.connect() as conn:
        usual = conn.execute(
            select(Practitioner.source_id).join(Patient, Patient.usual_gp_id == Practitioner.id)
        ).scalar_one()
    assert usual == "q-gp-1"


def test_gp_connect_file_in_web_page_template_lines_says_what_it_is(engine, tmp_path):
    folder = tmp_path / "gpc"
    folder.mkdir()
    body = orjson.dumps(gpc_record(), option=orjson.OPT_INDENT_2)
    (folder / "structured.json").write_bytes(b"{% highlight json %}\n" + body + b"\n{% endhighlight %}\n")
    (folder / "notes.json").write_bytes(b"Structured record example\n" + body)
    (folder / "cut.json").write_bytes(body[: len(body) // 2])
    summary = _load(engine, folder)
    assert summary.read == summary.quarantined == 3
    found = {Path(f).name: (code, reason) for f, code, reason in _rows(
        engine, Quarantine.file, Quarantine.reason_code, Quarantine.reason
    )}  # fmt: skip
    assert found["structured.json"] == (
        "unreadable",
        "the file is not JSON (it starts with a web page template line such as "
        "'{% highlight json %}'; remove such lines); is it a FHIR file?",
    )
    assert found["notes.json"] == (
        "unreadable",
        "the file is not JSON (it does not start with '{'); is it a FHIR file?",
    )
    code, reason = found["cut.json"]
    assert code == "unreadable" and reason.startswith("not valid JSON (")
    assert reason.endswith("; the file may be cut short")


# --- Bulk NDJSON (Synthea): organisations without ODS codes, nameless practitioners -----------


def _synthea_org(rid: str, name: str) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": rid,
        "identifier": [{"system": SYNTHEA_ID, "value": rid}],
        "active": True,
        "type": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}
                ]
            }
        ],
        "name": name,
    }


def bulk_extract(folder: Path) -> None:
    fx.write_ndjson(
        folder / "Organization.ndjson",
        [
            fx.organization(),
            _synthea_org("syn-org-1", "Testtown General Hospital"),
            _synthea_org("syn-org-2", "Testtown Urgent Care"),
        ],
    )
    fx.write_ndjson(
        folder / "Practitioner.ndjson",
        [
            fx.practitioner(),
            {"resourceType": "Practitioner", "id": "gp-text", "name": [{"text": "Dr. Sam Lee Example"}]},
            {"resourceType": "Practitioner", "id": "gp-none", "gender": "female"},
            {"resourceType": "Practitioner", "id": "gp-title", "name": [{"text": "Dr"}]},
        ],
    )
    fx.write_ndjson(
        folder / "Patient.ndjson",
        [
            fx.patient(
                generalPractitioner=[
                    {"reference": "Practitioner/gp-text"},
                    {"reference": "Organization/org1"},
                ]
            )
        ],
    )
    undated = fx.condition("c-undated")
    del undated["onsetDateTime"]
    obs = fx.condition("o-undated", resourceType="Observation", status="final")
    del obs["onsetDateTime"]
    fx.write_ndjson(folder / "Condition.ndjson", [fx.condition("c-dated"), undated])
    fx.write_ndjson(folder / "Observation.ndjson", [obs])


def test_bulk_extract_counts_unusable_reference_data_as_not_used(engine, tmp_path):
    folder = tmp_path / "bulk"
    bulk_extract(folder)
    summary = _load(engine, folder)
    assert summary.not_used[NO_ODS_CODE] == 2
    assert summary.not_used[NAMELESS_PRACTITIONER] == 2  # no name; a title alone
    assert summary.read == summary.loaded + summary.quarantined
    by_reason = sorted(_rows(engine, Quarantine.resource_id, Quarantine.reason_code, Quarantine.field))
    assert by_reason == [
        ("c-undated", "date_missing", "onset[x]"),
        ("o-undated", "date_missing", "effective[x]"),
    ]
    assert _rows(engine, Practice.ods_code) == [("ZZ9001",)]
    # The practitioner named only by text is stored, split for a letter's signature.
    assert _rows(
        engine, Practitioner.source_id, Practitioner.title, Practitioner.given_name, Practitioner.family_name
    ) == [("gp-text", "Dr.", "Sam Lee", "Example"), ("gp1", "Dr", "Alex", "Example")]
    with engine.connect() as conn:
        usual = conn.execute(
            select(Practitioner.source_id).join(Patient, Patient.usual_gp_id == Practitioner.id)
        ).scalar_one()
    assert usual == "gp-text"


def test_undated_records_say_where_a_date_was_looked_for(engine, tmp_path):
    folder = tmp_path / "bulk"
    bulk_extract(folder)
    _load(engine, folder)
    reasons = dict(_rows(engine, Quarantine.resource_id, Quarantine.reason))
    assert "looked for onsetDateTime, onsetPeriod.start, recordedDate, assertedDate" in reasons["c-undated"]
    assert (
        "looked for effectiveDateTime, effectivePeriod.start, effectiveInstant, issued"
        in (reasons["o-undated"])
    )


# --- the reader, record by record ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("Jackie Clark", (None, "Jackie", "Clark")),
        ("Dr Jackie Anne Clark", ("Dr", "Jackie Anne", "Clark")),
        ("  prof.  dr   Ann   Lee ", ("prof. dr", "Ann", "Lee")),
        ("CLARK, Jackie", (None, "Jackie", "CLARK")),
        ("Clark, Dr Jackie", ("Dr", "Jackie", "Clark")),
        ("Clark", (None, None, "Clark")),
    ],
)
def test_practitioner_named_only_by_text(text, parts):
    prac = (
        reader().read({"resourceType": "Practitioner", "id": "x", "name": [{"text": text}]}).practitioners[0]
    )
    assert (prac.title, prac.given_name, prac.family_name) == parts


def test_practitioner_name_parts_win_over_text():
    res = {
        "resourceType": "Practitioner",
        "id": "x",
        "name": [{"text": "Someone Else"}, {"family": "Clark", "given": ["Jackie"], "text": "J Clark"}],
    }
    prac = reader().read(res).practitioners[0]
    assert (prac.given_name, prac.family_name) == ("Jackie", "Clark")


@pytest.mark.parametrize(
    "names",
    [None, [], [{"text": "   "}], [{"text": "Dr"}], [{"use": "old", "text": "Jackie Clark"}]],
)
def test_practitioner_with_no_name_to_sign_with_is_not_used(names):
    res: dict[str, Any] = {"resourceType": "Practitioner", "id": "x"}
    if names is not None:
        res["name"] = names
    with pytest.raises(NotUsed) as err:
        reader().read(res)
    assert err.value.what == NAMELESS_PRACTITIONER


def test_practitioner_name_of_the_wrong_type_is_still_quarantined():
    for name, field in (("Jackie Clark", "name"), ([{"text": 7}], "name[0].text")):
        with pytest.raises(Invalid) as err:
            reader().read({"resourceType": "Practitioner", "id": "x", "name": name})
        assert (err.value.code, err.value.field) == ("wrong_type", field)


def test_organization_without_an_ods_code_is_not_used_but_a_wrong_typed_one_is_quarantined():
    with pytest.raises(NotUsed) as err:
        reader().read(_synthea_org("syn-1", "Hospital"))
    assert err.value.what == NO_ODS_CODE
    with pytest.raises(NotUsed):
        reader().read(
            {"resourceType": "Organization", "id": "o", "identifier": [{"system": fx.ODS, "value": " "}]}
        )
    numeric = {"resourceType": "Organization", "id": "o", "identifier": [{"system": fx.ODS, "value": 9001}]}
    with pytest.raises(Invalid) as bad:
        reader().read(numeric)
    assert (bad.value.code, bad.value.field) == ("wrong_type", "identifier[0].value")


def test_a_single_object_where_a_list_belongs_is_a_list_of_one():
    p = reader().read(fx.patient(generalPractitioner={"reference": "Organization/org1"})).patients[0]
    assert (p.practice_ref, p.gp_ref) == ("Organization/org1", None)
    named = reader().read(fx.patient(name={"use": "official", "family": "Tester", "given": ["Pat"]}))
    assert (named.patients[0].given_name, named.patients[0].family_name) == ("Pat", "Tester")


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"name": "Pat Tester"}, "name"),
        ({"generalPractitioner": "Organization/org1"}, "generalPractitioner"),
        ({"generalPractitioner": 7}, "generalPractitioner"),
        ({"name": {"use": "official", "family": "Tester", "given": "Pat"}}, "given"),
    ],
)
def test_text_or_a_number_where_a_list_belongs_is_still_the_wrong_type(extra, field):
    with pytest.raises(Invalid) as err:
        reader().read(fx.patient(**extra))
    assert (err.value.code, err.value.field) == ("wrong_type", field)


def test_a_single_coding_object_is_read_as_a_list_of_one():
    res = fx.condition() | {"code": {"coding": {"system": fx.SCT, "code": "82423001"}}}
    [event] = reader().read(res).events
    assert (event.code_system, event.code) == ("snomedct", "82423001")


def test_a_gone_patient_with_a_single_generalpractitioner_object_is_still_held_back():
    """What a broken Patient still says is read the same way (holds are best effort)."""
    res = fx.patient(
        birthDate="2099-01-01",  # broken: quarantined
        generalPractitioner={
            "identifier": {"system": fx.ODS, "value": "ZZ9001", "period": {"end": "2025-01-01"}}
        },
    )
    assert [h.signal for h in reader().holds(res)] == ["left"]


@pytest.mark.parametrize(
    ("res", "field", "looked"),
    [
        (
            {k: v for k, v in fx.condition().items() if k != "onsetDateTime"},
            "onset[x]",
            "onsetDateTime, onsetPeriod.start, recordedDate, assertedDate",
        ),
        (
            {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/p1"}},
            "effective[x]",
            "effectiveDateTime, effectivePeriod.start, effectiveInstant, issued",
        ),
        (
            {
                "resourceType": "MedicationStatement",
                "status": "active",
                "subject": {"reference": "Patient/p1"},
            },
            "effective[x]",
            "effectiveDateTime, effectivePeriod.start, dateAsserted",
        ),
        (
            fx.med_request(authoredOn=None, dispenseRequest={"validityPeriod": {}}),
            "authoredOn",
            "dispenseRequest.validityPeriod.start, authoredOn",
        ),
    ],
)
def test_a_record_with_no_date_names_the_choice_and_where_it_looked(res, field, looked):
    with pytest.raises(Invalid) as err:
        reader().read(res)
    assert (err.value.code, err.value.field) == ("date_missing", field)
    assert err.value.reason == f"the date is missing (looked for {looked})"


def test_a_present_but_broken_date_still_names_its_own_field():
    with pytest.raises(Invalid) as err:
        reader().read(fx.condition(onsetDateTime=None, onsetPeriod={"start": "31/02/2024"}))
    assert (err.value.code, err.value.field) == ("date_invalid", "onsetPeriod.start")


@pytest.mark.parametrize("quantity", ["28", ["28"], {"value": {"value": 28}}, {"value": "1e3"}])
def test_a_quantity_that_is_not_a_number_leaves_it_unknown(quantity):
    r = reader()
    [m] = r.read(fx.med_request(dispenseRequest={"quantity": quantity})).medications
    assert (m.code, m.quantity, r.dates.repaired) == ("322341003", None, 0)


def test_load_says_a_quantity_written_as_text_was_repaired(tmp_path):
    from tests.helpers import run_cli

    folder = tmp_path / "gpc"
    folder.mkdir()
    (folder / "structured.json").write_bytes(orjson.dumps(gpc_record()))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    out = run_cli(
        "load", "--create", str(folder), "--db", db, "--extract-date", EXTRACT_DATE.isoformat(), cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    said = " ".join(out.stdout.split())
    assert "repaired on the way: 1 (such as dates without a time zone, read as UK time, or quantities" in said
    assert "quarantined: 0" in said


def test_an_ndjson_line_that_is_not_json_says_so(tmp_path):
    from recruit.load.files import read_fhir

    path = tmp_path / "Condition.ndjson"
    path.write_bytes(orjson.dumps(fx.condition()) + b"\n# exported by hand\n" + b'{"resourceType": "Cond\n')
    errors = [r.error for r in read_fhir(path, 0) if r.error]
    assert errors[0] == "the line is not JSON (it does not start with '{'); is it a FHIR file?"
    assert errors[1].startswith("not valid JSON (") and errors[1].endswith("; the line may be cut short")
    assert len(errors) == 2
