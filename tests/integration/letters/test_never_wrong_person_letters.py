"""Issue 14, the letters side: `recruit letters` is the last gate, and rechecks the person.

Each numbered case of issue 14 that the letter-time checks own has its own test, on SQLite and
PostgreSQL. Each builds a small world straight into the tables (tests/integration/letters/builders.py)
where some people must NOT get a letter, and checks they are refused with the right reason,
while a control person in the same world does get one (so each test can fail).

The NHS number is the person: every patient row with the same NHS number, at any practice, is
the same person. The opt-out codelist here is a small one written by the test, in the shape the
contract gives (categories `<kind>_dissent` / `<kind>_withdrawn`).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, insert, select, update

from recruit.audit import Rule, audit
from recruit.audit.figures import refusal_label
from recruit.letters.batch import _letter_codelists, write_letters
from recruit.letters.select import EARLIER_REFUSALS, REFUSALS, classify
from recruit.letters.study import load_study_settings
from recruit.models import (
    ClinicalEvent,
    Extract,
    Invitation,
    Patient,
    PersonHold,
    Practice,
    ReviewDecision,
    SearchResult,
    SearchRun,
    Study,
)
from recruit.query.run import store_codelists
from tests.helpers import run_cli
from tests.integration.letters.builders import OPT_OUT, ROOT, STUDY_FILE, Person, build, invited

SNOMED_TYPE1_DISSENT = ("snomedct", "827241000000103")
SNOMED_TYPE1_WITHDRAWN = ("snomedct", "827261000000102")
READ_TYPE1_DISSENT = ("readv2", "9Nu0.")
READ_TYPE1_WITHDRAWN = ("readv2", "9Nu1.")
CTV3_TYPE1_DISSENT = ("ctv3", "XaZ89")
READ_AUDIT_DISSENT = ("readv2", "9M1..")
NOT_AN_OPT_OUT = ("snomedct", "22298006")

OPT_OUT_CSV = """code,system,term,category,source
9Nu0.,readv2,Dissent from secondary use of GP patient identifiable data,type1_dissent,test list
9Nu1.,readv2,Dissent withdrawn from secondary use of GP patient identifiable data,type1_withdrawn,test list
XaZ89,ctv3,Dissent from secondary use of GP patient identifiable data,type1_dissent,test list
827241000000103,snomedct,Dissent from secondary use of GP patient identifiable data,type1_dissent,test list
827261000000102,snomedct,Dissent withdrawn from secondary use of GP identifiable data,type1_withdrawn,test
9M1..,readv2,Informed dissent for national audit,national_audit_dissent,test list
"""

OLD = dt.date(2000, 1, 1)


# Databases: one schema per module and backend (tests/integration/letters/conftest.py), emptied by build().


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    """The study settings, with a codelist folder holding the test's opt-out list (and the real
    accessible-information list, which the letters also read)."""
    base = tmp_path_factory.mktemp("study")
    (base / "studies").mkdir()
    codelists = base / "codelists"
    codelists.mkdir()
    shutil.copy(STUDY_FILE, base / "studies" / STUDY_FILE.name)
    shutil.copy(ROOT / "rules" / "codelists" / "accessible_information.csv", codelists)
    (codelists / "research_opt_out.csv").write_text(OPT_OUT_CSV, encoding="utf-8")
    manifest = {
        "codelists": [
            {"name": "research_opt_out", "file": "research_opt_out.csv", "version": "test"},
            {"name": "accessible_information", "file": "accessible_information.csv", "version": "test"},
        ]
    }
    (codelists / "codelists.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return base / "studies" / STUDY_FILE.name


# --- building the worlds ----------------------------------------------------------------------


def _practice(conn: Any, practice_id: int, ods: str) -> None:
    conn.execute(
        insert(Practice.__table__).values(
            id=practice_id, ods_code=ods, name=f"Practice {ods}", address="1 Road\nTown", postcode="LS3 3CC"
        )
    )


def _patient(
    conn: Any,
    patient_id: int,
    nhs: str,
    *,
    practice_id: int = 2,
    start: dt.date | None = OLD,
    end: dt.date | None = None,
    died: dt.date | None = None,
    source_id: str | None = None,
) -> None:
    """Another record of a person: not found by the run, just in the database."""
    conn.execute(
        insert(Patient.__table__).values(
            id=patient_id,
            practice_id=practice_id,
            source_id=source_id or f"other{patient_id}",
            nhs_number=nhs,
            given_name="Ann",
            family_name="Example",
            date_of_birth=dt.date(1980, 1, 1),
            sex="unknown",
            address="2 Low Street\nOthertown",
            postcode="LS4 4DD",
            registration_start=start,
            registration_end=end,
            date_of_death=died,
        )
    )


def _event(
    conn: Any,
    patient_id: int,
    code: tuple[str, str],
    day: dt.date,
    *,
    practice_id: int = 1,
    status: str | None = "recorded",
) -> None:
    conn.execute(
        insert(ClinicalEvent.__table__).values(
            patient_id=patient_id,
            practice_id=practice_id,
            event_date=day,
            code_system=code[0],
            code=code[1],
            status=status,
            resource_type="Observation",
        )
    )


def _extract(conn: Any) -> int:
    found = conn.execute(select(Extract.id).where(Extract.fingerprint == "f" * 64)).scalar()
    if found is not None:
        return found
    return conn.execute(
        insert(Extract.__table__).values(fingerprint="f" * 64, format="fhir").returning(Extract.id)
    ).scalar_one()


def _hold(
    conn: Any,
    signal: str,
    *,
    nhs: str | None = None,
    practice_id: int | None = None,
    source_id: str | None = None,
    code: tuple[str, str] | None = None,
) -> None:
    conn.execute(
        insert(PersonHold.__table__).values(
            extract_id=_extract(conn),
            nhs_number=nhs,
            practice_id=practice_id,
            source_id=source_id,
            signal=signal,
            code_system=code[0] if code else None,
            code=code[1] if code else None,
            reason_code="bad_date",
            file="Observation.ndjson",
            line=3,
        )
    )


def _in_run(conn: Any, run_id: int, patient_id: int, practice_id: int, decision: str = "invite") -> None:
    """Put another record into the run as a GP-screened candidate."""
    conn.execute(
        insert(SearchResult.__table__).values(
            run_id=run_id,
            patient_id=patient_id,
            practice_id=practice_id,
            outcome="candidate",
            step_mask=0,
            rank=1,
        )
    )
    conn.execute(
        insert(ReviewDecision.__table__).values(
            run_id=run_id, patient_id=patient_id, decision=decision, reviewer="Dr Okafor"
        )
    )


def _classify(
    engine: Engine, run_id: int, study_file: Path
) -> tuple[set[int], dict[int, str], dict[str, int]]:
    """(who may be written to, patient id -> reason for each refused one, refusal counts), as
    write_letters would classify them, with the study's opt-out list."""
    settings = load_study_settings(study_file)
    opt_out, accessible = _letter_codelists(settings, study_file)
    with engine.begin() as conn:
        ids = store_codelists(conn, {"research_opt_out": opt_out, "accessible_information": accessible})
        study_id = conn.execute(select(Study.id).where(Study.code == "instep")).scalar_one()
        found = classify(conn, run_id, study_id, [ids["research_opt_out"]], [ids["accessible_information"]])
    assert sum(found.refusals.values()) == len(found.refused)
    return {c.patient_id for c in found.eligible}, found.refused, found.refusals


def _nhs(person_id: int) -> str:
    return Person(person_id).nhs_number


# --- case 1: dissent in every terminology; the latest of dissent and withdrawal decides --------


def test_case1_snomed_type1_dissent_refuses_the_letter(engine, study_file):
    world = build(engine, [Person(1), Person(2), Person(3), Person(4)])
    with engine.begin() as conn:
        _event(conn, 2, SNOMED_TYPE1_DISSENT, dt.date(2025, 5, 1))
        _event(conn, 3, CTV3_TYPE1_DISSENT, dt.date(2025, 5, 1))
        _event(conn, 4, NOT_AN_OPT_OUT, dt.date(2025, 5, 1))  # some other code: no reason
    allowed, reasons, counts = _classify(engine, world.run_id, study_file)
    assert allowed == {1, 4}
    assert reasons == {2: "research_opt_out", 3: "research_opt_out"}
    assert counts == {"research_opt_out": 2}


def test_case1_the_latest_of_dissent_and_withdrawal_decides_per_kind(engine, study_file):
    world = build(engine, [Person(i) for i in range(1, 9)])
    d1, d2 = dt.date(2024, 3, 1), dt.date(2025, 3, 1)
    with engine.begin() as conn:
        _practice(conn, 2, "B00002")
        # 2: dissent, then withdrawn later (in another terminology): may be written to.
        _event(conn, 2, READ_TYPE1_DISSENT, d1)
        _event(conn, 2, SNOMED_TYPE1_WITHDRAWN, d2)
        # 3: withdrawn, then dissent again: opted out.
        _event(conn, 3, READ_TYPE1_WITHDRAWN, d1)
        _event(conn, 3, SNOMED_TYPE1_DISSENT, d2)
        # 4: dissent and withdrawal on the same day: dissent wins.
        _event(conn, 4, SNOMED_TYPE1_DISSENT, d2)
        _event(conn, 4, READ_TYPE1_WITHDRAWN, d2)
        # 5: type 1 withdrawn, but national audit dissent still stands: another kind decides.
        _event(conn, 5, READ_AUDIT_DISSENT, d1)
        _event(conn, 5, READ_TYPE1_DISSENT, d1)
        _event(conn, 5, READ_TYPE1_WITHDRAWN, d2)
        # 6: a later withdrawal that is only provisional does not undo the dissent.
        _event(conn, 6, READ_TYPE1_DISSENT, d1)
        _event(conn, 6, SNOMED_TYPE1_WITHDRAWN, d2, status="unconfirmed")
        # 7: dissent on their record at another practice, a later withdrawal on this one: the
        # person's latest record is the withdrawal.
        _patient(conn, 107, _nhs(7), practice_id=2, start=dt.date(1990, 1, 1), end=dt.date(1999, 12, 31))
        _event(conn, 107, READ_TYPE1_DISSENT, d1, practice_id=2)
        _event(conn, 7, SNOMED_TYPE1_WITHDRAWN, d2)
        # 8: withdrawn here, a later dissent on their record at another practice: opted out.
        _patient(conn, 108, _nhs(8), practice_id=2, start=dt.date(1990, 1, 1), end=dt.date(1999, 12, 31))
        _event(conn, 8, SNOMED_TYPE1_WITHDRAWN, d1)
        _event(conn, 108, CTV3_TYPE1_DISSENT, d2, practice_id=2)
    allowed, reasons, counts = _classify(engine, world.run_id, study_file)
    assert allowed == {1, 2, 7}
    assert reasons == {i: "research_opt_out" for i in (3, 4, 5, 6, 8)}
    assert counts == {"research_opt_out": 5}


def test_case1_an_older_list_without_withdrawal_categories_still_refuses(engine):
    """The shipped list before issue 14 said `type1_opt_out`: such a row is dissent."""
    world = build(engine, [Person(1), Person(2, opt_out=True)])
    allowed, reasons, _ = _classify(engine, world.run_id, STUDY_FILE)
    assert allowed == {1}
    assert reasons == {2: "research_opt_out"}
    assert OPT_OUT == READ_TYPE1_DISSENT


# --- case 2: a record that could not be read still holds the person back -----------------------


def test_case2_an_unreadable_record_saying_death_leaving_or_dissent_holds_the_person(engine, study_file):
    world = build(engine, [Person(i) for i in range(1, 11)])
    with engine.begin() as conn:
        _practice(conn, 2, "B00002")
        _hold(conn, "death", nhs=_nhs(2), practice_id=2)  # died, said at another practice
        _hold(conn, "left", practice_id=1, source_id="p3")  # left this practice; no NHS number
        _hold(conn, "code", nhs=_nhs(4), practice_id=1, code=SNOMED_TYPE1_DISSENT)  # dated after extract
        _hold(conn, "code", practice_id=1, source_id="p5", code=READ_TYPE1_DISSENT)
        # 6: a quarantined duplicate at another practice, matched through their record there.
        _patient(conn, 106, _nhs(6), practice_id=2, source_id="dup6", start=dt.date(1990, 1, 1))
        _hold(conn, "death", practice_id=2, source_id="dup6")
        # Controls: a withdrawal that could not be read proves nothing, and holds nobody back;
        # a code that is not an opt-out; leaving ANOTHER practice; another person's hold.
        _hold(conn, "code", nhs=_nhs(7), practice_id=1, code=SNOMED_TYPE1_WITHDRAWN)
        _hold(conn, "code", nhs=_nhs(8), practice_id=1, code=NOT_AN_OPT_OUT)
        _hold(conn, "left", nhs=_nhs(9), practice_id=2)
        _hold(conn, "death", nhs="9999999999", practice_id=1, source_id="someone-else")
    allowed, reasons, counts = _classify(engine, world.run_id, study_file)
    assert allowed == {1, 7, 8, 9, 10}
    assert reasons == {
        2: "unreadable_record_says_died",
        3: "unreadable_record_says_left",
        4: "unreadable_record_says_opted_out",
        5: "unreadable_record_says_opted_out",
        6: "unreadable_record_says_died",
    }
    assert counts == {
        "unreadable_record_says_died": 2,
        "unreadable_record_says_left": 1,
        "unreadable_record_says_opted_out": 2,
    }


def test_case5_a_second_record_in_a_practices_latest_extract_leaves_the_person_unclear(engine, study_file):
    """Found by the long stateful run: a person moved back to practice B, whose extract then held
    their old and new records (the new one quarantined as a duplicate NHS number), so practice A,
    where they had registered in between, looked like their latest registration and wrote. While
    B's latest extract holds two records of them, nobody writes; a cleaner newer extract of B
    settles it."""
    world = build(engine, [Person(i) for i in range(1, 5)])
    with engine.begin() as conn:
        _practice(conn, 2, "B00002")
        extract_id = _extract(conn)
        conn.execute(update(Practice.__table__).where(Practice.id == 2).values(extract_id=extract_id))
        _hold(conn, "unclear", nhs=_nhs(2), practice_id=2, source_id="dup2")
        _hold(conn, "unclear", nhs=_nhs(3), practice_id=1, source_id="dup3")  # practice 1: no extract id
    allowed, reasons, counts = _classify(engine, world.run_id, study_file)
    assert reasons == {2: "two_records_unclear"}
    assert allowed == {1, 3, 4}
    assert counts == {"two_records_unclear": 1}
    with engine.begin() as conn:  # B's newer, clean extract
        newer = conn.execute(
            insert(Extract.__table__).values(fingerprint="e" * 64, format="fhir").returning(Extract.id)
        ).scalar_one()
        conn.execute(update(Practice.__table__).where(Practice.id == 2).values(extract_id=newer))
    allowed, reasons, counts = _classify(engine, world.run_id, study_file)
    assert allowed == {1, 2, 3, 4}


# --- case 5: the NHS number is the person ------------------------------------------------------


def test_case5_death_dissent_decline_and_invitations_under_any_record_apply_to_the_person(engine, study_file):
    world = build(engine, [Person(i) for i in range(1, 9)])
    earlier = dt.date(1990, 1, 1)  # their other records are older registrations (case 8 aside)
    with engine.begin() as conn:
        _practice(conn, 2, "B00002")
        other = conn.execute(select(Study.id).where(Study.code == "other")).scalar_one()
        study_id = conn.execute(select(Study.id).where(Study.code == "instep")).scalar_one()
        # 2: died, recorded on their (older) record at another practice.
        _patient(conn, 102, _nhs(2), start=earlier, died=dt.date(2026, 2, 1))
        # 3: a duplicate record at this practice carries the dissent.
        _patient(conn, 103, _nhs(3), practice_id=1, start=OLD, end=None)
        _event(conn, 103, SNOMED_TYPE1_DISSENT, dt.date(2025, 1, 1))
        # 4: told another study "do not contact me" under their other record.
        _patient(conn, 104, _nhs(4), start=earlier)
        # 5: invited to this study already, under their other record.
        _patient(conn, 105, _nhs(5), start=earlier)
        for patient_id, study, reply in ((104, other, "do_not_contact"), (105, study_id, "not_interested")):
            conn.execute(
                insert(Invitation.__table__).values(
                    study_id=study,
                    patient_id=patient_id,
                    nhs_number=_nhs(patient_id - 100),
                    study_number=f"OLD-{patient_id}",
                    status="declined" if reply == "not_interested" else "replied",
                    reply=reply,
                )
            )
        # 6: a duplicate record at this practice is in the same run, and its GP said no.
        _patient(conn, 106, _nhs(6), practice_id=1)
        _in_run(conn, world.run_id, 106, 1, decision="do_not_invite")
        # 7: died on a duplicate record at this practice.
        _patient(conn, 107, _nhs(7), practice_id=1, died=dt.date(2026, 1, 5))
        # 8: a control with an older, closed record at another practice, nothing against them.
        _patient(conn, 108, _nhs(8), start=earlier, end=dt.date(1999, 12, 31))
    allowed, reasons, counts = _classify(engine, world.run_id, study_file)
    assert allowed == {1, 8}
    assert reasons == {
        2: "died",
        3: "research_opt_out",
        4: "asked_not_to_be_contacted",
        5: "already_invited",
        6: "gp_said_do_not_invite_other_record",
        106: "gp_said_do_not_invite",
        7: "died",
    }
    assert counts["died"] == 2


# --- case 8: only the practice with the current registration writes ---------------------------


def test_case8_only_the_practice_with_the_current_registration_writes(engine, study_file):
    world = build(engine, [Person(i) for i in range(1, 9)])
    with engine.begin() as conn:
        _practice(conn, 2, "B00002")
        # 2: moved to practice B later (B's newer extract): A must not write.
        _patient(conn, 102, _nhs(2), start=dt.date(2024, 6, 1))
        # 3: moved here from B, whose stale record is still open and is also in the run: A writes,
        # B writes to nobody.
        conn.execute(
            Patient.__table__.update().where(Patient.id == 3).values(registration_start=dt.date(2025, 1, 1))
        )
        _patient(conn, 103, _nhs(3), start=dt.date(2010, 1, 1))
        _in_run(conn, world.run_id, 103, 2)
        # 4: registered at both on the same day: cannot tell.
        _patient(conn, 104, _nhs(4), start=OLD)
        # 5: this record's start is unknown while B's is open: cannot tell.
        conn.execute(Patient.__table__.update().where(Patient.id == 5).values(registration_start=None))
        _patient(conn, 105, _nhs(5), start=dt.date(2010, 1, 1))
        # 6: B's start is unknown and B's record is open: cannot tell.
        _patient(conn, 106, _nhs(6), start=None)
        # 7: B's start is unknown but B's registration ended: A is current.
        _patient(conn, 107, _nhs(7), start=None, end=dt.date(2015, 1, 1))
        # 8: registration here ended.
        conn.execute(
            Patient.__table__.update().where(Patient.id == 8).values(registration_end=dt.date(2026, 2, 1))
        )
    allowed, reasons, counts = _classify(engine, world.run_id, study_file)
    assert allowed == {1, 3, 7}
    assert reasons == {
        2: "registered_elsewhere",
        103: "registered_elsewhere",
        4: "registration_unclear",
        5: "registration_unclear",
        6: "registration_unclear",
        8: "no_longer_registered",
    }
    assert counts == {"registered_elsewhere": 2, "registration_unclear": 3, "no_longer_registered": 1}


# --- case 9: no current address, no letter; the practice is told ------------------------------


def _listed(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "contact-another-way.csv", encoding="utf-8-sig", newline="") as handle:
        return {row["Surname"]: row for row in csv.DictReader(handle)}


def test_case9_no_current_address_means_no_letter_and_a_line_for_the_practice(engine, study_file, tmp_path):
    world = build(
        engine,
        [
            Person(1, family="Posted"),
            Person(2, family="Noaddress", address=None),
            Person(3, family="Nofixedabode", postcode="ZZ99 3VZ"),
            Person(4, family="Nopostcode", postcode=" "),
            Person(5, family="Blankaddress", address="  \n "),
            # Dead, with no address: refused as dead, never listed for the practice to contact.
            Person(6, family="Deceased", address=None, died=True),
        ],
    )
    summary = write_letters(engine, world.run_id, tmp_path / "out", study_file=study_file, workers=1)
    assert summary.letters_written == 1
    assert set(invited(engine)) == {1}
    assert summary.refusals == {"no_current_address": 4, "died": 1}
    assert summary.practice_contact == {"no_current_address": 4}
    listed = _listed(tmp_path / "out")
    assert set(listed) == {"Noaddress", "Nofixedabode", "Nopostcode", "Blankaddress"}
    for row in listed.values():
        assert row["WhatIsNeeded"].startswith("No current postal address on record")
        assert row["StudyNumber"] == ""  # no letter, no invitation, no study number
        assert row["PracticeODS"] == "A00001"
    batch = (tmp_path / "out" / "batch.json").read_text()
    assert all(Person(i).nhs_number not in batch for i in range(1, 7))

    # The audit counts each reason a letter was withheld, in plain words and counts only.
    report, paths = audit(engine, [world.run_id], tmp_path / "audit", Rule(enabled=False))
    figures = {(f["column"], f["item"]): f["number"] for f in report.runs[0].records()}
    assert figures[("all", "letters.refused.no_current_address")] == 4
    assert figures[("all", "letters.refused.died")] == 1
    html = next(p for p in paths if p.suffix == ".html").read_text(encoding="utf-8")
    assert "Not written to: No current postal address on record" in html
    assert "Not written to: Has died" in html
    assert "Noaddress" not in html and Person(2).nhs_number not in html


# --- the reasons: every one labelled, and the command says them plainly ------------------------


def test_every_refusal_reason_has_a_plain_label():
    source = (ROOT / "recruit" / "letters" / "select.py").read_text(encoding="utf-8")
    source += (ROOT / "recruit" / "letters" / "batch.py").read_text(encoding="utf-8")
    produced = set(re.findall(r'literal\("([a-z0-9_]+)"\)', source))
    produced |= {"same_person_twice", "details_do_not_fit_window"}
    assert produced <= set(REFUSALS), produced - set(REFUSALS)
    for key, text in {**REFUSALS, **EARLIER_REFUSALS}.items():
        assert text and "_" not in text and not re.search(r"\d{3}", text), key
        assert refusal_label(key) == text[:1].upper() + text[1:]
    assert refusal_label("something_new") == "Something new"  # an unknown key still reads


def test_the_letters_command_says_every_refusal_plainly(engine, study_file, tmp_path):
    world = build(
        engine,
        [
            Person(1, family="Posted"),
            Person(2, died=True),
            Person(3, left=True),
            Person(4, address=None),
            Person(5),
            Person(6),
            Person(7),
        ],
    )
    with engine.begin() as conn:
        _practice(conn, 2, "B00002")
        _patient(conn, 105, _nhs(5), start=dt.date(2025, 1, 1))  # moved
        _hold(conn, "code", nhs=_nhs(6), practice_id=1, code=READ_TYPE1_DISSENT)
        _event(conn, 7, SNOMED_TYPE1_DISSENT, dt.date(2025, 1, 1))
    url = engine.url.render_as_string(hide_password=False)
    done = run_cli(
        "letters",
        str(world.run_id),
        "--out",
        str(tmp_path / "out"),
        "--study",
        str(study_file),
        "--db",
        url,
        cwd=tmp_path,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "Traceback" not in said
    assert "1 letters" in said
    for key in (
        "died",
        "no_longer_registered",
        "no_current_address",
        "registered_elsewhere",
        "unreadable_record_says_opted_out",
        "research_opt_out",
    ):
        assert f"{REFUSALS[key]}: 1" in said, key
    assert not any(Person(i).nhs_number in said for i in range(1, 8))
    assert "no_current_address" not in said  # the need is in words too


# --- issue 15: the person's latest GP decision decides, whichever search it was made for ---------


def test_a_later_do_not_invite_for_another_search_stops_the_letter(engine, study_file):
    """Dr A approved 2 and 3 on this run's sheet; later, reviewing next month's search, Dr B said
    "do not invite" for 2 (on the same record) and for 3 (on another record of theirs). Their
    latest decision is not to invite, so this run's letters go to neither. 4 was refused on an
    earlier search and approved since: the newer Invite stands."""
    world = build(engine, [Person(1), Person(2), Person(3), Person(4)])
    earlier, later = dt.datetime(2026, 2, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(update(ReviewDecision.__table__).values(decided_at=earlier))
        conn.execute(
            update(ReviewDecision.__table__).where(ReviewDecision.patient_id == 4).values(decided_at=later)
        )
        study_id = conn.execute(select(SearchRun.study_id).where(SearchRun.id == world.run_id)).scalar_one()
        other_run = conn.execute(
            insert(SearchRun.__table__)
            .values(
                study_id=study_id,
                rule_set_name="test",
                rule_set_version="1",
                rule_set_fingerprint="x",
                index_date=dt.date(2026, 2, 1),
                status="finished",
            )
            .returning(SearchRun.id)
        ).scalar_one()
        _patient(conn, 103, _nhs(3), practice_id=1)
        for pid, when in ((2, later), (103, later), (4, earlier)):
            _in_run(conn, other_run, pid, 1, decision="do_not_invite")
            conn.execute(
                update(ReviewDecision.__table__)
                .where(ReviewDecision.run_id == other_run, ReviewDecision.patient_id == pid)
                .values(reason_code="safeguarding", decided_at=when)
            )
    allowed, reasons, _ = _classify(engine, world.run_id, study_file)
    assert allowed == {1, 4}
    assert reasons == {2: "gp_said_do_not_invite_later", 3: "gp_said_do_not_invite_later"}
    assert "later" in REFUSALS["gp_said_do_not_invite_later"]
