"""Each criterion on small hand-made records, on SQLite, PostgreSQL and DuckDB.

Every case states who should pass, and is also checked against the reference evaluator
(patient by patient, count by count), so the two cannot drift apart on the cases written here.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.exc import DBAPIError

from tests.search_helpers import (
    INDEX,
    Population,
    check,
    make_codelist,
    one_step,
    rule_set,
)

D = dt.date
CODELISTS = {
    "pain": make_codelist(
        "pain", [("snomedct", "1000001"), ("readv2", "N2411"), ("readv2", "N24..", "", "prefix")]
    ),
    "drugs": make_codelist("drugs", [("dmd", "2000001"), ("dmd", "2000002")]),
    "work": make_codelist(
        "work",
        [
            ("snomedct", "3000001", "employed"),
            ("snomedct", "3000002", "unemployed"),
            ("ctv3", "Ua0T1", "retired"),
        ],
    ),
    "fit": make_codelist(
        "fit", [("snomedct", "4000001", "not_fit_for_work"), ("snomedct", "4000002", "fit")]
    ),
}


def passing(engine, population, criterion, index=INDEX):
    run = check(engine, population, one_step(criterion), CODELISTS, index)
    return run.candidates()


def test_registered(engine):
    pop = Population()
    pop.add_patient(1)  # registered since 2000
    pop.add_patient(2, registration_start=D(2025, 7, 1))  # joins after the index date
    pop.add_patient(3, registration_end=D(2025, 6, 29))  # left the day before
    pop.add_patient(4, registration_end=INDEX)  # leaves on the index date: still registered
    pop.add_patient(5, registration_start=None)
    pop.add_patient(6, registration_start=D(2025, 1, 1))
    assert passing(engine, pop, {"registered": {}}) == {1, 4, 6}
    assert passing(engine, pop, {"registered": {"for_at_least_months": 6}}) == {1, 4}


def test_registered_unknown_start_is_the_rules_choice(engine):
    """A registration whose start the extract does not give (start NULL): the rule says whether it
    counts, for any length of registration; an ended one never counts (issue 16 item 1)."""
    pop = Population()
    pop.add_patient(1)  # registered since 2000
    pop.add_patient(2, registration_start=None)  # registered, start unknown
    pop.add_patient(3, registration_start=None, registration_end=D(2025, 6, 29))  # left, start unknown
    pop.add_patient(4, registration_start=None, registration_end=INDEX)  # leaves today: still registered
    pop.add_patient(5, registration_start=D(2025, 1, 1))  # joined 6 months ago
    counts = {"unknown_start": "counts"}
    assert passing(engine, pop, {"registered": {}}) == {1, 5}
    assert passing(engine, pop, {"registered": {"unknown_start": "does_not_count"}}) == {1, 5}
    assert passing(engine, pop, {"registered": counts}) == {1, 2, 4, 5}
    assert passing(engine, pop, {"registered": {**counts, "for_at_least_months": 12}}) == {1, 2, 4}
    assert passing(engine, pop, {"not": {"registered": counts}}) == {3}


def test_alive(engine):
    pop = Population()
    pop.add_patient(1)
    pop.add_patient(2, date_of_death=D(2020, 1, 1))
    pop.add_patient(3, date_of_death=INDEX)
    pop.add_patient(4, date_of_death=D(2025, 7, 1))  # dies after the index date
    assert passing(engine, pop, {"alive": {}}) == {1, 4}


def test_age_between_on_birthdays(engine):
    pop = Population()
    pop.add_patient(1, date_of_birth=D(2007, 6, 30))  # 18 today
    pop.add_patient(2, date_of_birth=D(2007, 7, 1))  # 18 tomorrow
    pop.add_patient(3, date_of_birth=D(1960, 7, 1))  # 64 until tomorrow
    pop.add_patient(4, date_of_birth=D(1960, 6, 30))  # 65 today
    assert passing(engine, pop, {"age_between": {"min": 18, "max": 64}}) == {1, 3}
    leap = Population()
    leap.add_patient(1, date_of_birth=D(2004, 2, 29))
    assert passing(engine, leap, {"age_between": {"min": 21, "max": 30}}, index=D(2025, 2, 28)) == set()
    assert passing(engine, leap, {"age_between": {"min": 21, "max": 30}}, index=D(2025, 3, 1)) == {1}


def pain_population() -> Population:
    pop = Population()
    for pid in range(1, 9):
        pop.add_patient(pid)
    pop.add_event(1, D(2010, 1, 1), "snomedct", "1000001")  # long ago
    pop.add_event(2, D(2024, 6, 30), "snomedct", "1000001")  # exactly 12 months before
    pop.add_event(3, D(2024, 6, 29), "snomedct", "1000001")  # a day more than 12 months
    pop.add_event(4, D(2025, 7, 1), "snomedct", "1000001")  # after the index date: never counts
    pop.add_event(5, D(2025, 1, 1), "readv2", "N2412")  # matched by the N24.. prefix row
    pop.add_event(6, D(2025, 1, 1), "ctv3", "N2411")  # right code, wrong system
    pop.add_event(7, D(2025, 1, 1), "readv2", "n2411")  # Read codes are case-sensitive
    pop.add_event(8, D(2015, 1, 1), "readv2", "N2411")
    pop.add_event(8, D(2025, 1, 1), "readv2", "N2411")
    return pop


def test_has_code_windows(engine):
    pop = pain_population()
    assert passing(engine, pop, {"has_code": {"codelist": "pain"}}) == {1, 2, 3, 5, 8}
    assert passing(engine, pop, {"has_code": {"codelist": "pain", "window": {"last_months": 12}}}) == {
        2,
        5,
        8,
    }
    assert passing(engine, pop, {"has_code": {"codelist": "pain", "window": {"last_days": 366}}}) == {
        2,
        3,
        5,
        8,
    }
    between = {"start": D(2009, 1, 1), "end": D(2016, 1, 1)}
    assert passing(engine, pop, {"has_code": {"codelist": "pain", "window": between}}) == {1, 8}


def test_has_code_first_and_last_occurrence(engine):
    pop = pain_population()
    recent = {"last_months": 24}
    assert passing(
        engine, pop, {"has_code": {"codelist": "pain", "window": recent, "occurrence": "first"}}
    ) == {
        2,
        3,
        5,
    }
    old = {"start": D(2014, 1, 1), "end": D(2016, 1, 1)}
    assert (
        passing(engine, pop, {"has_code": {"codelist": "pain", "window": old, "occurrence": "last"}}) == set()
    )
    assert passing(engine, pop, {"has_code": {"codelist": "pain", "window": old, "occurrence": "first"}}) == {
        8
    }


def test_has_code_categories(engine):
    pop = Population()
    pop.add_patient(1)
    pop.add_patient(2)
    pop.add_event(1, D(2025, 1, 1), "snomedct", "3000001")
    pop.add_event(2, D(2025, 1, 1), "snomedct", "3000002")
    assert passing(engine, pop, {"has_code": {"codelist": "work", "categories": ["unemployed"]}}) == {2}


def test_code_on_days_counts_different_days(engine):
    """code_on_days: codes on at least N different days in the window; several codes entered on
    one day are one day, a prefix row counts, a code after the index date never does."""
    pop = Population()
    for pid in range(1, 7):
        pop.add_patient(pid)
    for day in (D(2025, 1, 5), D(2025, 3, 5), D(2025, 5, 5)):
        pop.add_event(1, day, "snomedct", "1000001")  # three consultations
    for code in ("1000001", "1000001"):
        pop.add_event(2, D(2025, 1, 5), "snomedct", code)  # two codes, one day
    pop.add_event(2, D(2025, 1, 5), "readv2", "N2411")
    pop.add_event(3, D(2025, 1, 5), "readv2", "N2412")  # the N24.. prefix row
    pop.add_event(3, D(2025, 2, 5), "snomedct", "1000001")
    pop.add_event(3, D(2020, 2, 5), "snomedct", "1000001")  # outside 12 months
    pop.add_event(4, D(2025, 1, 5), "snomedct", "1000001")
    pop.add_event(4, D(2025, 7, 5), "snomedct", "1000001")  # after the index date
    pop.add_event(5, D(2025, 1, 5), "snomedct", "1000001", status="refuted")
    pop.add_event(5, D(2025, 2, 5), "snomedct", "1000001")
    pop.add_event(6, D(2025, 1, 5), "snomedct", "9999999")
    pop.add_event(6, D(2025, 2, 5), "snomedct", "9999999")
    year = {"codelist": "pain", "window": {"last_months": 12}}
    assert passing(engine, pop, {"code_on_days": {**year, "min_days": 1}}) == {1, 2, 3, 4, 5}
    assert passing(engine, pop, {"code_on_days": {**year, "min_days": 2}}) == {1, 3, 5}
    assert passing(engine, pop, {"code_on_days": {**year, "min_days": 3}}) == {1}
    assert passing(engine, pop, {"code_on_days": {"codelist": "pain", "min_days": 3}}) == {1, 3}  # any date
    recorded = {**year, "min_days": 2, "statuses": ["recorded", "active"]}
    assert passing(engine, pop, {"code_on_days": recorded}) == {1, 3}
    # The evidence an exclusion shows is the newest of the records counted.
    run = check(engine, pop, one_step({"code_on_days": {**year, "min_days": 3}}, kind="exclude"), CODELISTS)
    assert run.results[1]["evidence"]["date"] == "2025-05-05"


def test_medication_count_issues_and_distinct_months(engine):
    pop = Population()
    for pid in range(1, 6):
        pop.add_patient(pid)
    for day in (D(2025, 1, 5), D(2025, 2, 5), D(2025, 3, 5)):
        pop.add_issue(1, day, "2000001")  # three months running
    for day in (D(2025, 1, 5), D(2025, 1, 20), D(2025, 1, 28)):
        pop.add_issue(2, day, "2000002")  # three issues, one month
    for day in (D(2025, 1, 5), D(2025, 2, 5), D(2025, 3, 5)):
        pop.add_issue(3, day, "2000001", course="acute")
    pop.add_issue(4, D(2025, 1, 5), "2000001")
    pop.add_issue(4, D(2025, 2, 5), "2000002")
    pop.add_issue(4, D(2023, 3, 5), "2000001")  # outside the window
    pop.add_issue(5, D(2025, 1, 5), "9999999")
    window = {"last_months": 12}
    count = {"medication_count": {"codelist": "drugs", "window": window, "min_issues": 3}}
    assert passing(engine, pop, count) == {1, 2, 3}
    months = {
        "medication_count": {"codelist": "drugs", "window": window, "min_issues": 2, "min_distinct_months": 2}
    }
    assert passing(engine, pop, months) == {1, 3, 4}
    repeat = {
        "medication_count": {"codelist": "drugs", "window": window, "min_issues": 3, "course": "repeat"}
    }
    assert passing(engine, pop, repeat) == {1, 2}


def test_latest_code_among(engine):
    pop = Population()
    for pid in range(1, 6):
        pop.add_patient(pid)
    pop.add_event(1, D(2024, 1, 1), "snomedct", "3000001")  # employed, then unemployed
    pop.add_event(1, D(2025, 1, 1), "snomedct", "3000002")
    pop.add_event(2, D(2024, 1, 1), "snomedct", "3000002")  # unemployed, then employed
    pop.add_event(2, D(2025, 1, 1), "snomedct", "3000001")
    pop.add_event(3, D(2025, 1, 1), "snomedct", "3000001")  # same day: the source listed first wins
    pop.add_event(3, D(2025, 1, 1), "snomedct", "4000001")
    pop.add_event(4, D(2025, 1, 1), "snomedct", "4000001")  # a fit note only
    sources = [
        {"codelist": "fit", "categories": ["not_fit_for_work"], "status": "out"},
        {"codelist": "work", "categories": ["employed"], "status": "in"},
        {"codelist": "work", "categories": ["unemployed"], "status": "out"},
    ]
    out = {"latest_code_among": {"sources": sources, "status_in": ["out"]}}
    assert passing(engine, pop, out) == {1, 3, 4}
    out_or_none = {"latest_code_among": {"sources": sources, "status_in": ["out"], "when_none": True}}
    assert passing(engine, pop, out_or_none) == {1, 3, 4, 5}
    recent = {"latest_code_among": {"sources": sources, "status_in": ["in"], "window": {"last_months": 3}}}
    assert passing(engine, pop, recent) == set()


def test_likely_in_work_names_the_deciding_evidence(engine):
    pop = Population()
    for pid in range(1, 5):
        pop.add_patient(pid)
    pop.add_event(1, D(2025, 1, 1), "snomedct", "3000001", "Employed")
    pop.add_event(2, D(2025, 1, 1), "snomedct", "3000001", "Employed")
    pop.add_event(2, D(2025, 3, 1), "snomedct", "4000001", "Not fit for work")
    pop.add_event(3, D(2020, 1, 1), "snomedct", "3000001", "Employed")  # outside the look-back
    evidence = [
        {"codelist": "work", "categories": ["employed"], "status": "in_work"},
        {"codelist": "work", "categories": ["unemployed", "retired"], "status": "out_of_work"},
        {"codelist": "fit", "categories": ["not_fit_for_work"], "status": "out_of_work"},
    ]
    keep = {"likely_in_work": {"look_back_months": 12, "evidence": evidence, "unknown": "keep"}}
    run = check(engine, pop, one_step(keep, kind="exclude"), CODELISTS)
    assert run.candidates() == {2, 3, 4}
    assert run.results[1]["excluding_step"] == "only"
    assert run.results[1]["reason"] == "the step: Employed (snomedct 3000001) on 2025-01-01"
    assert run.results[1]["evidence"] == {
        "code": "3000001",
        "date": "2025-01-01",
        "system": "snomedct",
        "term": "Employed",
    }
    exclude = {"likely_in_work": {"look_back_months": 12, "evidence": evidence, "unknown": "exclude"}}
    run = check(engine, pop, one_step(exclude, kind="exclude"), CODELISTS)
    assert run.candidates() == {2}
    assert run.results[4]["reason"] == "the step"
    assert run.results[4]["evidence"] is None


def test_invitations(engine):
    pop = Population()
    for pid in range(1, 6):
        pop.add_patient(pid, nhs_number=f"90000000{pid:02d}")
    pop.add_invitation(1, "instep", status="drafted")
    pop.add_invitation(2, "other", status="do_not_contact")
    pop.add_invitation(3, "other", status="replied", reply="do_not_contact")
    pop.add_invitation(4, "other", status="sent")
    # Patient 5 re-registered under a new record: the old invitation matches by NHS number.
    pop.add_patient(6, nhs_number="9000000005")
    pop.add_invitation(6, "instep", status="sent")
    assert passing(engine, pop, {"already_invited": {}}) == {1, 5, 6}
    assert passing(engine, pop, {"do_not_contact": {}}) == {2, 3}
    assert passing(engine, pop, {"do_not_contact": {"any_study": False}}) == set()


def test_all_any_not_and_definitions(engine):
    pop = pain_population()
    pop.add_issue(6, D(2025, 1, 1), "2000001")
    pop.add_issue(1, D(2025, 1, 1), "2000001")
    rules = rule_set(
        [
            {"id": "either", "kind": "include", "reason": "r", "criterion": {"ref": "pain_or_drug"}},
            {"id": "not_old", "kind": "include", "reason": "r", "criterion": {"not": {"ref": "old_pain"}}},
            {
                "id": "both",
                "kind": "exclude",
                "reason": "r",
                "criterion": {
                    "all": [{"ref": "pain_or_drug"}, {"has_code": {"codelist": "pain", "window": "ever"}}]
                },
            },
        ],
        definitions={
            "pain_or_drug": {
                "any": [
                    {"has_code": {"codelist": "pain", "window": {"last_months": 12}}},
                    {"medication_count": {"codelist": "drugs", "window": {"last_months": 12}}},
                ]
            },
            "old_pain": {
                "has_code": {"codelist": "pain", "window": {"start": D(2009, 1, 1), "end": D(2011, 1, 1)}}
            },
        },
    )
    run = check(engine, pop, rules, CODELISTS)
    # pain_or_drug: 1 (drug), 2, 5, 6 (drug), 8; old_pain: 1; both: pain_or_drug with any pain code.
    assert run.candidates() == {6}
    assert run.results[1]["excluding_step"] == "not_old"
    assert run.results[2]["excluding_step"] == "both"
    assert run.results[2]["evidence"]["date"] == "2024-06-30"
    assert [(c["entering"], c["kept"], c["excluded"], c["failing_alone"]) for c in run.counts] == [
        (8, 5, 3, 3),
        (5, 4, 1, 1),
        (4, 1, 3, 4),
    ]


def test_reasons_and_a_failed_run_is_recorded(engine, monkeypatch):
    from sqlalchemy import select

    from recruit.models import SearchRun
    from recruit.query import run as run_module
    from tests.search_helpers import run_engine

    pop = Population()
    pop.add_patient(1, date_of_birth=D(1950, 1, 1))
    run = run_engine(engine, pop, one_step({"age_between": {"min": 18, "max": 64}}), CODELISTS)
    assert run.results[1]["reason"] == "Not met: the step"

    def broken(conn, *args, **kwargs):
        conn.exec_driver_sql("SELECT * FROM no_such_table")  # a database error mid-run

    monkeypatch.setattr(run_module, "_write_results", broken)
    with pytest.raises(DBAPIError, match="no_such_table"):
        run_engine(engine, pop, one_step({"alive": {}}), CODELISTS, reload=False)
    with engine.connect() as conn:
        # (Only these columns: DuckDB needs pytz to read a timestamp with a time zone.)
        last = conn.execute(
            select(SearchRun.status, SearchRun.error, SearchRun.finished_at.is_not(None).label("finished"))
            .order_by(SearchRun.id.desc())
            .limit(1)
        ).one()
    assert (last.status, "no_such_table" in last.error, last.finished) == ("failed", True, True)
    # The connection is usable again: the next run works.
    monkeypatch.undo()
    assert run_engine(engine, pop, one_step({"alive": {}}), CODELISTS, reload=False).candidates() == {1}


def test_more_atoms_than_one_flags_word_holds(engine):
    """The flags table keeps 30 atoms a column: 45 distinct windows (two columns) must each
    keep their own bit, in the steps, their masks and the score."""
    pop = Population()
    for pid in range(1, 48):
        pop.add_patient(pid)
        pop.add_event(pid, INDEX - dt.timedelta(days=10 * pid - 5), "snomedct", "1000001")
    steps = [
        {
            "id": f"pain_{k}",
            "kind": "exclude",
            "reason": f"pain in the last {10 * k} days",
            "criterion": {"has_code": {"codelist": "pain", "window": {"last_days": 10 * k}}},
        }
        for k in range(1, 46)
    ]
    score = [
        {
            "id": f"recent_{k}",
            "weight": k,
            "why": "a test weight",
            "criterion": {"has_code": {"codelist": "pain", "window": {"last_days": 10 * k}}},
        }
        for k in (1, 31, 44)
    ]
    run = check(engine, pop, rule_set(steps, score=score), CODELISTS)
    assert run.candidates() == {46, 47}
    assert run.results[1]["excluding_step"] == "pain_1"
    assert run.results[40]["excluding_step"] == "pain_40"
    assert run.results[40]["step_mask"] == (1 << 39) - 1
    assert run.results[40]["score"] == 44.0
    assert [c["excluded"] for c in run.counts] == [1] * 45
