"""Issue 14, history side: extract dates, partial and older extracts, other practices' data,
reused patient ids and person holds, over extracts loaded one after another.

Each test writes small hand-made FHIR NDJSON extracts (made-up people, NHS numbers in the 999
range) and loads them in turn, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import insert, select

from recruit.errors import RecruitError
from recruit.load import load_extract
from recruit.load import loader as loader_module
from recruit.load import stage as S
from recruit.load.loader import OTHER_ORGANIZATION, UNNAMED_PRACTITIONER
from recruit.models import (
    ClinicalEvent,
    Extract,
    MedicationIssue,
    Patient,
    PersonHold,
    Practice,
    Quarantine,
    ReviewDecision,
    SearchRun,
)
from tests.helpers import run_cli
from tests.integration.load import fhir_samples as fx
from tests.integration.load.db_helpers import count

OPT_OUT = "827241000000103"  # SNOMED CT: dissent from secondary use of GP patient identifiable data
DAY1 = dt.date(2026, 10, 1)
DAY2 = dt.date(2026, 11, 1)
A, B = "ZZ9001", "ZZ9002"


def rows(engine, *cols, where=None) -> list[tuple]:
    query = select(*cols)
    if where is not None:
        query = query.where(where)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query.order_by(*cols)).all()]


def balanced(summary) -> None:
    """Case 15: every record read is loaded or quarantined; the rest is counted as not used."""
    assert summary.read == summary.loaded + summary.quarantined, summary


def observation(rid: str, patient_ref: str = "Patient/p1", code: str = OPT_OUT, day: str = "2025-01-02"):
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "subject": {"reference": patient_ref},
        "code": {"coding": [{"system": fx.SCT, "code": code}]},
        "effectiveDateTime": day,
    }


def practice_b_patient(rid: str = "q1", nhs: str = fx.NHS_NUMBERS[2], **extra: Any) -> dict[str, Any]:
    return fx.patient(
        rid,
        nhs,
        generalPractitioner=[{"reference": "Practitioner/gpb"}, {"reference": "Organization/org2"}],
        **extra,
    )


def extract(
    folder: Path,
    *,
    patients: list[dict] | None = None,
    conditions: list[dict] | None = None,
    observations: list[dict] | None = None,
    meds: list[dict] | None = None,
    orgs: list[dict] | None = None,
    practitioners: list[dict] | None = None,
) -> Path:
    """A practice extract folder (Bulk NDJSON, one file per kind); None leaves a file out."""
    fx.write_ndjson(folder / "Organization.ndjson", orgs if orgs is not None else [fx.organization()])
    fx.write_ndjson(
        folder / "Practitioner.ndjson", practitioners if practitioners is not None else [fx.practitioner()]
    )
    for name, items in (
        ("Patient", patients),
        ("Condition", conditions),
        ("Observation", observations),
        ("MedicationRequest", meds),
    ):
        if items is not None:
            fx.write_ndjson(folder / f"{name}.ndjson", items)
    return folder


def manifest(folder: Path, when: str, types: list[str]) -> None:
    (folder / "manifest.json").write_bytes(
        orjson.dumps(
            {
                "transactionTime": when,
                "request": "$export",
                "requiresAccessToken": False,
                "output": [{"type": t, "url": f"https://example.nhs.uk/out/{t}.ndjson"} for t in types],
                "error": [],
            }
        )
    )


# --- case 6: every extract has a date; an older one never overwrites newer facts -------------------


def test_case6_extract_date_comes_from_manifest_then_bundle_timestamp_then_last_updated(engine, tmp_path):
    bulk = extract(tmp_path / "bulk", patients=[fx.patient()])
    manifest(bulk, "2026-10-01T23:30:00Z", ["Organization", "Practitioner", "Patient"])
    first = load_extract(engine, [bulk])
    balanced(first)
    # 23:30 UTC on 1 October is 00:30 on 2 October in England.
    assert (first.extract_date, first.date_source) == (dt.date(2026, 10, 2), "manifest transactionTime")

    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": "2026-10-20T09:00:00+01:00",
        "entry": [
            {"resource": fx.organization()},
            {"resource": fx.practitioner()},
            {"resource": fx.patient(meta={"lastUpdated": "2026-10-25T10:00:00Z"})},
        ],
    }
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "record.json").write_bytes(orjson.dumps(bundle))
    second = load_extract(engine, [tmp_path / "bundle"])
    assert (second.extract_date, second.date_source) == (dt.date(2026, 10, 20), "latest Bundle.timestamp")

    plain = extract(
        tmp_path / "plain",
        patients=[
            fx.patient(meta={"lastUpdated": "2026-10-28T08:00:00Z"}),
            fx.patient("p2", fx.NHS_NUMBERS[1], meta={"lastUpdated": "2026-10-30T08:00:00Z"}),
        ],
    )
    third = load_extract(engine, [plain])
    assert third.extract_date == dt.date(2026, 10, 30)
    assert "lastUpdated" in third.date_source
    with engine.connect() as conn:
        stored = conn.execute(select(Extract.extract_date, Extract.date_source).order_by(Extract.id)).all()
    assert [tuple(r) for r in stored] == [
        (dt.date(2026, 10, 2), "manifest transactionTime"),
        (dt.date(2026, 10, 20), "latest Bundle.timestamp"),
        (dt.date(2026, 10, 30), "latest meta.lastUpdated of its records"),
    ]


def test_case6_extract_that_does_not_say_when_it_was_taken_is_refused(engine, tmp_path):
    folder = extract(tmp_path / "x", patients=[fx.patient()])
    with pytest.raises(RecruitError, match="does not say when it was taken.*--extract-date YYYY-MM-DD"):
        load_extract(engine, [folder])
    assert count(engine, Extract) == 0
    given = load_extract(engine, [folder], extract_date=DAY1)
    assert (given.extract_date, given.date_source) == (DAY1, "--extract-date")


def test_case6_older_extract_is_refused_naming_both_dates_and_changes_nothing(engine, tmp_path):
    newer = extract(tmp_path / "newer", patients=[fx.patient(deceasedDateTime="2026-10-15")])
    load_extract(engine, [newer], extract_date=DAY2)
    older = extract(
        tmp_path / "older",
        patients=[fx.patient(name=[{"use": "official", "family": "Alive", "given": ["Pat"]}])],
        conditions=[fx.condition()],
    )
    before = (count(engine, Extract), count(engine, ClinicalEvent), count(engine, Quarantine))
    with pytest.raises(RecruitError) as refused:
        load_extract(engine, [older], extract_date=DAY1)
    message = str(refused.value)
    assert "2026-10-01" in message and "2026-11-01" in message and A in message
    assert "nothing was loaded" in message
    assert (count(engine, Extract), count(engine, ClinicalEvent), count(engine, Quarantine)) == before
    assert rows(engine, Patient.family_name, Patient.date_of_death) == [("Tester", dt.date(2026, 10, 15))]


def test_case6_extract_of_the_same_date_is_allowed(engine, tmp_path):
    load_extract(engine, [extract(tmp_path / "one", patients=[fx.patient()])], extract_date=DAY2)
    again = extract(tmp_path / "two", patients=[fx.patient(deceasedDateTime="2026-10-15")])
    summary = load_extract(engine, [again], extract_date=DAY2)
    balanced(summary)
    assert rows(engine, Patient.date_of_death) == [(dt.date(2026, 10, 15),)]


def test_case6_extract_dated_after_today_is_refused_and_cannot_block_later_ones(engine, tmp_path):
    """A far-future date (a slip in the manifest or meta.lastUpdated) would become the practice's
    newest date and every real extract after it would be refused as older."""
    future = extract(tmp_path / "future", patients=[fx.patient()])
    manifest(future, "2099-01-01T00:00:00Z", ["Patient"])
    with pytest.raises(RecruitError, match=r"2099-01-01 \(from manifest transactionTime\), is after today"):
        load_extract(engine, [future])
    assert count(engine, Extract) == 0 and count(engine, Patient) == 0
    with pytest.raises(RecruitError, match="after today"):
        load_extract(
            engine, [extract(tmp_path / "typo", patients=[fx.patient()])], extract_date=dt.date(2062, 1, 1)
        )
    balanced(load_extract(engine, [extract(tmp_path / "real", patients=[fx.patient()])], extract_date=DAY2))


def test_case6_older_extract_is_one_plain_line_from_the_cli(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    newer = extract(tmp_path / "newer", patients=[fx.patient()])
    older = extract(tmp_path / "older", patients=[fx.patient(), fx.patient("p2", fx.NHS_NUMBERS[1])])
    ok = run_cli("load", "--create", str(newer), "--db", db, "--extract-date", "2026-11-01", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "taken on:            2026-11-01 (from --extract-date)" in ok.stdout
    refused = run_cli(
        "load", "--create", str(older), "--db", db, "--extract-date", "2026-10-01", cwd=tmp_path
    )
    assert refused.returncode == 1
    assert "Traceback" not in refused.stdout + refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "2026-10-01" in lines[0] and "2026-11-01" in lines[0], refused.stderr
    assert fx.NHS_NUMBERS[1] not in refused.stdout + refused.stderr
    undated = run_cli("load", "--create", str(older), "--db", db, cwd=tmp_path)
    assert undated.returncode == 1 and "--extract-date YYYY-MM-DD" in undated.stderr


# --- case 3: a partial extract keeps the kinds of record it does not carry ----------------------------


def test_case3_extract_without_observations_keeps_earlier_opt_outs(engine, tmp_path):
    first = extract(
        tmp_path / "first",
        patients=[fx.patient(), fx.patient("p2", fx.NHS_NUMBERS[1])],
        conditions=[fx.condition()],
        observations=[observation("o1"), observation("o2", "Patient/p2")],
        meds=[fx.med_request()],
    )
    load_extract(engine, [first], extract_date=DAY1)
    second = extract(
        tmp_path / "second",
        patients=[fx.patient(), fx.patient("p2", fx.NHS_NUMBERS[1])],
        conditions=[fx.condition("c9", code="203082005")],
    )
    summary = load_extract(engine, [second], extract_date=DAY2)
    balanced(summary)
    # Observations and prescriptions were not in the newer extract: the earlier ones stay.
    assert rows(engine, ClinicalEvent.resource_type, ClinicalEvent.code) == [
        ("Condition", "203082005"),
        ("Observation", OPT_OUT),
        ("Observation", OPT_OUT),
    ]
    assert count(engine, MedicationIssue) == 1
    assert summary.kept_earlier == {A: ["MedicationRequest", "Observation"]}
    assert set(summary.resource_types) >= {"Organization", "Practitioner", "Patient", "Condition"}
    with engine.connect() as conn:
        kinds = conn.execute(select(Extract.resource_types).order_by(Extract.id)).scalars().all()
    assert "Observation" in kinds[0] and "Observation" not in kinds[1]


def test_case3_a_kind_with_only_quarantined_records_is_still_carried(engine, tmp_path):
    first = extract(tmp_path / "first", patients=[fx.patient()], observations=[observation("o1")])
    load_extract(engine, [first], extract_date=DAY1)
    bad = observation("o2", day="")  # no date: quarantined, but the file is there
    second = extract(tmp_path / "second", patients=[fx.patient()], observations=[bad])
    summary = load_extract(engine, [second], extract_date=DAY2)
    balanced(summary)
    assert "Observation" in summary.resource_types
    assert summary.kept_earlier == {}
    assert count(engine, ClinicalEvent) == 0  # the newer extract's Observations replaced the earlier


def test_case3_rows_of_unrecorded_kind_are_replaced_by_an_extract_carrying_that_sort(engine, tmp_path):
    first = extract(
        tmp_path / "first", patients=[fx.patient()], conditions=[fx.condition()], meds=[fx.med_request()]
    )
    load_extract(engine, [first], extract_date=DAY1)
    with engine.begin() as conn:  # as rows loaded before kinds were kept
        conn.execute(ClinicalEvent.__table__.update().values(resource_type=None))
        conn.execute(MedicationIssue.__table__.update().values(resource_type=None))
    second = extract(tmp_path / "second", patients=[fx.patient()], conditions=[fx.condition("c9")])
    summary = load_extract(engine, [second], extract_date=DAY2)
    assert rows(engine, ClinicalEvent.source_resource_id) == [("c9",)]
    assert rows(engine, MedicationIssue.resource_type) == [(None,)]  # no prescriptions carried: kept
    assert summary.kept_earlier == {A: ["earlier records of unrecorded kind"]}


def test_case3_extract_without_patients_ends_no_registration(engine, tmp_path):
    first = extract(
        tmp_path / "first", patients=[fx.patient()], observations=[observation("o1")], conditions=[]
    )
    load_extract(engine, [first], extract_date=DAY1)
    second = extract(tmp_path / "second", conditions=[fx.condition("c9")])
    summary = load_extract(engine, [second], extract_date=DAY2)
    balanced(summary)
    assert rows(engine, Patient.registration_end) == [(None,)]
    assert rows(engine, ClinicalEvent.source_resource_id) == [("o1",)]


def test_case3_manifest_listing_a_missing_file_is_refused(engine, tmp_path):
    folder = extract(tmp_path / "x", patients=[fx.patient()])
    manifest(folder, "2026-11-01T08:00:00Z", ["Organization", "Practitioner", "Patient", "Observation"])
    with pytest.raises(RecruitError, match=r"manifest lists Observation\.ndjson.*incomplete"):
        load_extract(engine, [folder])
    assert count(engine, Extract) == 0


def test_case3_cli_says_which_kinds_were_kept(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    first = extract(tmp_path / "first", patients=[fx.patient()], observations=[observation("o1")])
    second = extract(tmp_path / "second", patients=[fx.patient()])
    loaded = run_cli("load", "--create", str(first), "--db", db, "--extract-date", "2026-10-01", cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    out = run_cli("load", "--create", str(second), "--db", db, "--extract-date", "2026-11-01", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"Practice {A}: this extract has no Observation records; the earlier ones were kept." in out.stdout


# --- case 4: an extract changes only the practices its patients are registered with ---------------


def test_case4_another_practices_organization_changes_nothing(engine, tmp_path):
    b = extract(
        tmp_path / "b",
        orgs=[fx.organization(B, "org2") | {"name": "Old Surgery"}],
        practitioners=[fx.practitioner("gpb")],
        patients=[practice_b_patient()],
        observations=[observation("ob1", "Patient/q1")],
    )
    load_extract(engine, [b], extract_date=DAY1)
    with engine.connect() as conn:
        b_extract = conn.execute(select(Practice.extract_id).where(Practice.ods_code == B)).scalar_one()

    # Practice A's newer extract also carries practice B's Organization (a previous practice).
    other = fx.organization(B, "org2") | {"name": "Renamed By A", "address": []}
    a = extract(
        tmp_path / "a",
        orgs=[fx.organization(), other],
        patients=[fx.patient()],
        conditions=[fx.condition()],
    )
    summary = load_extract(engine, [a], extract_date=DAY2)
    balanced(summary)
    assert summary.practices == [A]
    assert summary.not_used[OTHER_ORGANIZATION] == 1
    with engine.connect() as conn:
        name, extract_id = conn.execute(
            select(Practice.name, Practice.extract_id).where(Practice.ods_code == B)
        ).one()
    assert (name, extract_id) == ("Old Surgery", b_extract)
    q1 = Patient.source_id == "q1"
    assert rows(engine, Patient.registration_end, where=q1) == [(None,)]
    assert rows(engine, ClinicalEvent.source_resource_id) == [("c1",), ("ob1",)]


def test_case4_organization_of_a_practice_never_loaded_is_not_created(engine, tmp_path):
    both = extract(
        tmp_path / "ab",
        orgs=[fx.organization(), fx.organization(B, "org2"), fx.organization("ZZ9003", "org3")],
        practitioners=[fx.practitioner(), fx.practitioner("gpb"), fx.practitioner("gpx")],
        patients=[fx.patient(), practice_b_patient()],
    )
    summary = load_extract(engine, [both], extract_date=DAY1)
    balanced(summary)
    assert rows(engine, Practice.ods_code) == [(A,), (B,)]
    assert summary.practices == [A, B]
    # Case 15: records read but not stored are counted as not used, not as loaded.
    assert summary.not_used[OTHER_ORGANIZATION] == 1
    assert summary.not_used[UNNAMED_PRACTITIONER] == 1
    assert summary.loaded == 6  # two Organizations, the two GPs patients name, two patients


# --- case 7: a patient id reused for another person starts a new person ----------------------------


def test_case7_reused_patient_id_is_a_new_person_and_inherits_no_approval(engine, tmp_path):
    load_extract(engine, [extract(tmp_path / "one", patients=[fx.patient()])], extract_date=DAY1)
    with engine.begin() as conn:
        first_id = conn.execute(select(Patient.id)).scalar_one()
        run = conn.execute(
            insert(SearchRun)
            .values(rule_set_name="r", rule_set_version="1", rule_set_fingerprint="x", index_date=DAY1)
            .returning(SearchRun.id)
        ).scalar_one()
        conn.execute(
            insert(ReviewDecision).values(run_id=run, patient_id=first_id, decision="invite", reviewer="Dr A")
        )
    someone_else = fx.patient(nhs=fx.NHS_NUMBERS[3], birthDate="1961-02-03")
    summary = load_extract(engine, [extract(tmp_path / "two", patients=[someone_else])], extract_date=DAY2)
    balanced(summary)
    assert summary.retired == 1
    with engine.connect() as conn:
        people = conn.execute(
            select(Patient.id, Patient.source_id, Patient.nhs_number, Patient.registration_end).order_by(
                Patient.id
            )
        ).all()
        approved = conn.execute(select(ReviewDecision.patient_id)).scalars().all()
    assert len(people) == 2
    old, new = people
    assert old.source_id == f"p1~retired~{first_id}" and old.registration_end == DAY2
    assert old.nhs_number == fx.NHS_NUMBERS[0]
    assert (new.source_id, new.nhs_number, new.registration_end) == ("p1", fx.NHS_NUMBERS[3], None)
    assert approved == [first_id]  # the GP's decision stays with the first person


def test_case7_a_changed_birth_date_under_one_id_is_another_person(engine, tmp_path):
    load_extract(engine, [extract(tmp_path / "one", patients=[fx.patient()])], extract_date=DAY1)
    changed = fx.patient(birthDate="1980-05-02")
    load_extract(engine, [extract(tmp_path / "two", patients=[changed])], extract_date=DAY2)
    assert count(engine, Patient) == 2
    # A birth date known only as a month (its latest day kept) later given exactly: another range.
    with engine.begin() as conn:
        conn.execute(
            Patient.__table__.update()
            .where(Patient.source_id == "p1")
            .values(date_of_birth_latest=dt.date(1980, 5, 31))
        )
    third = extract(tmp_path / "three", patients=[changed], conditions=[fx.condition()])
    load_extract(engine, [third], extract_date=DAY2)
    assert count(engine, Patient) == 3
    current = rows(
        engine, Patient.date_of_birth, Patient.date_of_birth_latest, where=Patient.source_id == "p1"
    )
    assert current == [(dt.date(1980, 5, 2), None)]


def test_case7_same_person_is_updated_in_place(engine, tmp_path):
    load_extract(engine, [extract(tmp_path / "one", patients=[fx.patient()])], extract_date=DAY1)
    moved = fx.patient(address=[{"use": "home", "line": ["9 New Road"], "postalCode": "ZZ1 9ZZ"}])
    load_extract(engine, [extract(tmp_path / "two", patients=[moved])], extract_date=DAY2)
    assert rows(engine, Patient.source_id, Patient.postcode) == [("p1", "ZZ1 9ZZ")]


# --- cases 5 and 2: quarantined records that signal death, leaving or dissent hold the person --------


def test_case5_duplicate_patient_record_carrying_a_death_holds_the_person(engine, tmp_path):
    dead_copy = fx.patient(deceasedDateTime="2026-09-01")
    gone_copy = fx.patient(
        "p7",
        fx.NHS_NUMBERS[1],
        extension=[
            {
                "url": "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-RegistrationDetails-1",
                "extension": [
                    {"url": "registrationPeriod", "valuePeriod": {"start": "2001-01-01", "end": "2026-09-01"}}
                ],
            }
        ],
    )
    folder = extract(
        tmp_path / "x",
        patients=[fx.patient(), fx.patient("p2", fx.NHS_NUMBERS[1]), dead_copy, gone_copy],
    )
    summary = load_extract(engine, [folder], extract_date=DAY2)
    balanced(summary)
    # A second record of the same person (same NHS number and birth date) joins the first
    # (issue 16): nothing quarantined. The death it records is the person's; where it disagrees
    # on what a letter uses (the ended registration), the person is unclear and held back.
    assert summary.quarantined_by_reason == {} and summary.same_person == 2
    with engine.connect() as conn:
        a_id = conn.execute(select(Practice.id)).scalar_one()
        deaths = dict(conn.execute(select(Patient.source_id, Patient.date_of_death)).all())
    assert deaths == {"p1": dt.date(2026, 9, 1), "p2": None}
    holds = rows(
        engine,
        PersonHold.nhs_number,
        PersonHold.practice_id,
        PersonHold.source_id,
        PersonHold.signal,
        PersonHold.reason_code,
        PersonHold.line,
    )
    assert holds == [(fx.NHS_NUMBERS[1], a_id, "p2", "unclear", "same_person_disagrees", 4)]
    assert rows(engine, PersonHold.file) == [(str((folder / "Patient.ndjson").resolve()),)]


def test_case2_opt_out_dated_before_birth_holds_the_person(engine, tmp_path):
    folder = extract(
        tmp_path / "x",
        patients=[fx.patient()],
        observations=[observation("o1", day="1975-01-01"), observation("o2", code="266919005")],
    )
    summary = load_extract(engine, [folder], extract_date=DAY2)
    balanced(summary)
    assert summary.quarantined_by_reason == {"before_birth": 1}
    holds = rows(
        engine,
        PersonHold.nhs_number,
        PersonHold.source_id,
        PersonHold.signal,
        PersonHold.code_system,
        PersonHold.code,
        PersonHold.reason_code,
    )
    assert holds == [(fx.NHS_NUMBERS[0], "p1", "code", "snomedct", OPT_OUT, "before_birth")]
    with engine.connect() as conn:
        reason = conn.execute(select(Quarantine.reason)).scalar_one()
    assert "before the patient was born" in reason


def test_case5_event_of_a_quarantined_duplicate_patient_holds_by_nhs_number(engine, tmp_path):
    """An opt-out recorded against a duplicate record (same NHS number, another id) holds the person."""
    folder = extract(
        tmp_path / "x",
        patients=[fx.patient(), fx.patient("p1dup", fx.NHS_NUMBERS[0])],
        observations=[observation("o1", "Patient/p1dup")],
    )
    summary = load_extract(engine, [folder], extract_date=DAY2)
    balanced(summary)
    # The second record is the same person (same NHS number and birth date): joined, and the
    # opt-out recorded against it is stored as the person's, so the search leaves them out.
    assert summary.quarantined_by_reason == {} and summary.same_person == 1
    with engine.connect() as conn:
        events = conn.execute(
            select(Patient.source_id, ClinicalEvent.code).join(
                Patient, Patient.id == ClinicalEvent.patient_id
            )
        ).all()
    assert [tuple(e) for e in events] == [("p1", OPT_OUT)]
    assert rows(engine, PersonHold.id) == []  # the copies agree: nothing unclear


def test_case5_duplicate_nhs_number_with_another_birth_date_still_holds(engine, tmp_path):
    """A record with an NHS number already seen but another birth date is not the same person:
    quarantined, and its opt-out holds that number back from letters."""
    folder = extract(
        tmp_path / "x",
        patients=[fx.patient(), fx.patient("p1dup", fx.NHS_NUMBERS[0], birthDate="1990-01-01")],
        observations=[observation("o1", "Patient/p1dup")],
    )
    summary = load_extract(engine, [folder], extract_date=DAY2)
    balanced(summary)
    assert summary.quarantined_by_reason == {"duplicate_nhs_number": 1, "patient_quarantined": 1}
    assert set(rows(engine, PersonHold.nhs_number, PersonHold.source_id, PersonHold.code)) == {
        (fx.NHS_NUMBERS[0], "p1dup", None),
        (fx.NHS_NUMBERS[0], "p1dup", OPT_OUT),
    }


def test_case2_holds_staged_while_reading_are_resolved_to_their_person(engine, tmp_path, monkeypatch):
    """The reader stages ld_hold rows for records it quarantined; here they are staged by hand."""
    folder = extract(tmp_path / "x", patients=[fx.patient()])
    original = S.index_staging

    def with_holds(conn) -> None:
        conn.execute(
            insert(S.ld_bad_patient_key),
            [{"key": "Patient/p9", "seq": 900}, {"key": f"nhs:{fx.NHS_NUMBERS[4]}", "seq": 900}],
        )
        base = {
            "file_no": 2,
            "resource_type": "Observation",
            "code_system": "snomedct",
            "code": OPT_OUT,
            "nhs_number": None,
            "source_id": None,
        }
        conn.execute(
            insert(S.ld_hold),
            [
                # an opt-out with a broken date, for a stored patient
                base | {"seq": 10, "line": 4, "reason_code": "date_missing", "patient_ref": "Patient/p1",
                        "signal": "code"},
                # a Patient record quarantined while reading, which still says the person died
                {"seq": 900, "file_no": 2, "line": 7, "resource_type": "Patient", "reason_code": "wrong_type",
                 "patient_ref": None, "nhs_number": fx.NHS_NUMBERS[4], "source_id": "p9", "signal": "death",
                 "code_system": None, "code": None},
                # an opt-out for that quarantined patient
                base | {"seq": 11, "line": 8, "reason_code": "date_in_future", "patient_ref": "Patient/p9",
                        "signal": "code"},
            ],
        )  # fmt: skip
        original(conn)

    monkeypatch.setattr(S, "index_staging", with_holds)
    summary = load_extract(engine, [folder], extract_date=DAY2)
    assert summary.holds == 3
    with engine.connect() as conn:
        a_id = conn.execute(select(Practice.id)).scalar_one()
    assert rows(
        engine,
        PersonHold.nhs_number,
        PersonHold.practice_id,
        PersonHold.source_id,
        PersonHold.signal,
        PersonHold.reason_code,
        PersonHold.line,
    ) == [
        (fx.NHS_NUMBERS[0], a_id, "p1", "code", "date_missing", 4),
        (fx.NHS_NUMBERS[4], a_id, "p9", "code", "date_in_future", 8),
        (fx.NHS_NUMBERS[4], a_id, "p9", "death", "wrong_type", 7),
    ]
    assert loader_module.PersonHold is PersonHold


# --- case 8: each practice's registration is kept as given ---------------------------------------


def test_case8_a_move_keeps_each_practices_registration_start(engine, tmp_path):
    reg = "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-RegistrationDetails-1"

    def registered(start: str) -> list[dict]:
        return [{"url": reg, "extension": [{"url": "registrationPeriod", "valuePeriod": {"start": start}}]}]

    a = extract(tmp_path / "a", patients=[fx.patient(extension=registered("2010-01-01"))])
    load_extract(engine, [a], extract_date=DAY1)
    moved = practice_b_patient("q1", fx.NHS_NUMBERS[0], extension=registered("2026-10-10"))
    b = extract(
        tmp_path / "b",
        orgs=[fx.organization(B, "org2")],
        practitioners=[fx.practitioner("gpb")],
        patients=[moved],
    )
    summary = load_extract(engine, [b], extract_date=DAY2)
    balanced(summary)
    assert summary.practices == [B]
    with engine.connect() as conn:
        regs = conn.execute(
            select(Practice.ods_code, Patient.registration_start, Patient.registration_end)
            .join(Practice, Practice.id == Patient.practice_id)
            .order_by(Practice.ods_code)
        ).all()
    # B's extract does not touch A's row: the letters side decides which registration is current.
    assert [tuple(r) for r in regs] == [(A, dt.date(2010, 1, 1), None), (B, dt.date(2026, 10, 10), None)]


# --- case 6 for CSV exports: the mapping names where the export says when it was taken ---------------


def test_case6_csv_export_date_comes_from_the_file_the_mapping_names(engine, tmp_path):
    import synthetic_ehr

    synthetic_ehr.generate(tmp_path / "s", practices=1, patients=20, seed=3, workers=1, formats=["csv"])
    folder = tmp_path / "s" / "csv"
    summary = load_extract(engine, [folder])
    balanced(summary)
    assert summary.date_source == "manifest.csv, column Extract Date"
    assert summary.extract_date == synthetic_ehr.load_params(None).extract_date
    assert set(summary.resource_types) >= {"Patient", "Event", "Medication"}

    (folder / "manifest.csv").unlink()
    (folder / "events.csv").write_bytes((folder / "events.csv").read_bytes() + b"\r\n")  # a new extract
    with pytest.raises(RecruitError, match="does not say when it was taken"):
        load_extract(engine, [folder])


def test_case2_cli_says_people_are_held_back_without_naming_them(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    folder = extract(
        tmp_path / "x",
        patients=[fx.patient(), fx.patient(deceasedDateTime="2026-09-01")],
        observations=[observation("o1", day="1975-01-01")],
    )
    out = run_cli("load", "--create", str(folder), "--db", db, "--extract-date", "2026-11-01", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # (the second p1 is the same person, joined: its death is the person's, not a hold)
    assert "held back from letters: 1 quarantined record(s)" in out.stdout
    # Says what such records are, without claiming every quarantined coded record is an opt-out.
    said = " ".join(out.stdout.split())
    assert (
        "still name a person and say they died or left, or carry a code (such as an opt-out); "
        "to be safe, nobody they name will be written to"
    ) in said
    assert "has a coded entry" not in said
    assert fx.NHS_NUMBERS[0] not in out.stdout + out.stderr


def test_case6_older_is_judged_per_practice_the_extract_holds(engine, tmp_path):
    b_newer = extract(
        tmp_path / "b",
        orgs=[fx.organization(B, "org2")],
        practitioners=[fx.practitioner("gpb")],
        patients=[practice_b_patient()],
    )
    load_extract(engine, [b_newer], extract_date=DAY2)
    # Practice A's first extract, older than B's, names B only as an Organization: allowed.
    a_only = extract(
        tmp_path / "a", orgs=[fx.organization(), fx.organization(B, "org2")], patients=[fx.patient()]
    )
    assert load_extract(engine, [a_only], extract_date=DAY1).practices == [A]
    # A regional extract holding both practices is older than B's: refused, naming B.
    both = extract(
        tmp_path / "ab",
        orgs=[fx.organization(), fx.organization(B, "org2")],
        practitioners=[fx.practitioner(), fx.practitioner("gpb")],
        patients=[fx.patient(), practice_b_patient(deceasedDateTime="2026-09-30")],
    )
    with pytest.raises(RecruitError, match=f"practice {B} has one taken on 2026-11-01"):
        load_extract(engine, [both], extract_date=DAY1)
    assert rows(engine, Patient.date_of_death) == [(None,), (None,)]
