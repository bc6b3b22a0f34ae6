"""Issue 14 ("never the wrong person"), the rules' part: cases 1 (opt-out codes and which record
decides), 10 (partial birth dates and age) and 11 (which record statuses count).

Each test runs the InSTEP rules, or a rule built the same way, on a few made-up patients on
SQLite, PostgreSQL and DuckDB, and the engine must agree with the plain-Python reference.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest

from recruit.codelists import CodeSystem, load_codelist
from recruit.query.model import RuleSet
from recruit.query.run import load_search
from recruit.rules.model import RuleSetError, parse_rule_set
from tests.search_helpers import Population, check, make_codelist, one_step

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "instep.yaml"
CODELISTS = ROOT / "rules" / "codelists"
INDEX = dt.date(2025, 6, 30)
D = dt.date

TYPE1_DISSENT = {
    ("snomedct", "827241000000103"),
    ("readv2", "9Nu0."),
    ("ctv3", "XaZ89"),
}
TYPE2_DISSENT = {
    ("snomedct", "881561000000100"),
    ("readv2", "9Nu4."),
    ("ctv3", "XaaVL"),
}
# Made-up withdrawal codes, for tests only: no withdrawal code could be found published, so the
# real codelist has none. They show the rule's shape already decides by the latest record once
# `<kind>_withdrawn` rows are added.
TYPE1_WITHDRAWN = ("readv2", "ZZT1W")
TYPE2_WITHDRAWN = ("readv2", "ZZT2W")


@pytest.fixture(scope="module")
def instep():
    return load_search(RULES)


def code_of(codelists, name, category=None) -> tuple[str, str, str]:
    row = next(c for c in codelists[name].codes if category is None or c.category == category)
    return str(row.system), row.code, row.term


def candidate(pop: Population, pid: int, pain: tuple[str, str, str], **patient: Any) -> None:
    """Someone the InSTEP rules keep: working age, registered, a chronic-pain code."""
    values = {"date_of_birth": D(1980, 5, 5), "nhs_number": f"94000001{pid:02d}"} | patient
    pop.add_patient(pid, **values)
    pop.add_event(pid, D(2024, 1, 10), *pain)


def excluded_at(run) -> dict[int, str | None]:
    return {pid: r["excluding_step"] for pid, r in run.results.items()}


# --- case 1: opt-out codes, and the latest record of each kind decides ---------------------------


def test_case1_every_coding_of_type1_and_type2_dissent_is_listed_with_a_published_source():
    opt = load_codelist("research_opt_out", CODELISTS)
    by_category: dict[str, set[tuple[str, str]]] = {}
    for code in opt.codes:
        by_category.setdefault(code.category or "", set()).add((str(code.system), code.code))
    assert by_category["type1_dissent"] == TYPE1_DISSENT
    assert by_category["type2_dissent"] == TYPE2_DISSENT
    assert {("readv2", "9M1.."), ("ctv3", "XaJrC")} <= by_category["national_audit_dissent"]
    assert (CodeSystem.SNOMEDCT, "827241000000103") in opt
    # Categories follow the contract <kind>_dissent / <kind>_withdrawn.
    assert all(re.fullmatch(r"[a-z0-9_]+_(dissent|withdrawn)", c) for c in by_category)
    # Every row names where it was read: a repository at a commit, or a web page.
    with (CODELISTS / "research_opt_out.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for part in row["source"].split(" ; "):
                assert re.match(r"https?://|[\w.-]+/[\w.-]+@[0-9a-f]{7,}:", part), row["code"]


def test_case1_snomed_type1_dissent_code_excludes(engine, instep):
    rule_set, codelists, _ = instep
    pain = code_of(codelists, "chronic_pain")
    pop = Population()
    for pid, (system, code) in enumerate(sorted(TYPE1_DISSENT | TYPE2_DISSENT), start=1):
        candidate(pop, pid, pain)
        pop.add_event(pid, D(2019, 3, 1), system, code)
    candidate(pop, 99, pain)  # no opt-out: kept
    run = check(engine, pop, rule_set, codelists, INDEX)
    assert excluded_at(run) == {**{pid: "research_opt_out" for pid in range(1, 7)}, 99: None}
    snomed = next(
        pid for pid, e in enumerate(sorted(TYPE1_DISSENT | TYPE2_DISSENT), 1) if e[1] == "827241000000103"
    )
    assert run.results[snomed]["evidence"]["code"] == "827241000000103"


def with_withdrawals(rule_set: RuleSet) -> RuleSet:
    """The InSTEP rules with each kind's withdrawal added as the second source of its item, as
    the rule file's comment says to do once withdrawal codes are in the codelist."""
    data = rule_set.model_dump(by_alias=True, exclude_none=True)
    step = next(s for s in data["steps"] if s["id"] == "research_opt_out")
    for item in step["criterion"]["any"]:
        sources = item["latest_code_among"]["sources"]
        kind = sources[0]["categories"][0].removesuffix("_dissent")
        assert sources[0]["status"] == "dissent" and len(sources) == 1
        sources.append(
            {"codelist": "research_opt_out", "categories": [f"{kind}_withdrawn"], "status": "withdrawn"}
        )
    return RuleSet.model_validate(data)


def test_case1_the_latest_dissent_or_withdrawal_of_each_kind_decides(engine, instep):
    rule_set, codelists, _ = instep
    real = codelists["research_opt_out"]
    rows = [(str(c.system), c.code, c.category) for c in real.codes]
    rows += [(*TYPE1_WITHDRAWN, "type1_withdrawn"), (*TYPE2_WITHDRAWN, "type2_withdrawn")]
    lists = {**codelists, "research_opt_out": make_codelist("research_opt_out", rows)}
    rules = with_withdrawals(rule_set)
    pain = code_of(codelists, "chronic_pain")
    type1 = ("snomedct", "827241000000103")
    type2 = ("readv2", "9Nu4.")
    pop = Population()
    cases = {
        1: [(D(2019, 1, 1), type1)],  # dissent: out
        2: [(D(2019, 1, 1), type1), (D(2021, 1, 1), TYPE1_WITHDRAWN)],  # later withdrawal: back in
        3: [(D(2018, 1, 1), TYPE1_WITHDRAWN), (D(2019, 1, 1), type1)],  # withdrawal first: out
        4: [(D(2019, 1, 1), TYPE1_WITHDRAWN), (D(2019, 1, 1), type1)],  # same day: dissent wins
        5: [(D(2019, 1, 1), type2), (D(2021, 1, 1), TYPE1_WITHDRAWN)],  # other kind withdrawn: out
        6: [(D(2019, 1, 1), type1), (D(2019, 6, 1), type2), (D(2021, 1, 1), TYPE1_WITHDRAWN)],  # type 2 holds
        7: [(D(2019, 1, 1), type1), (D(2020, 1, 1), TYPE1_WITHDRAWN), (D(2022, 1, 1), type1)],  # again out
    }
    for pid, records in cases.items():
        candidate(pop, pid, pain)
        for day, (system, code) in records:
            pop.add_event(pid, day, system, code)
    run = check(engine, pop, rules, lists, INDEX)
    assert excluded_at(run) == {
        1: "research_opt_out",
        2: None,
        3: "research_opt_out",
        4: "research_opt_out",
        5: "research_opt_out",
        6: "research_opt_out",
        7: "research_opt_out",
    }
    assert run.results[4]["evidence"]["code"] == type1[1]  # the dissent, not the withdrawal


# --- case 11: which record statuses count ------------------------------------------------------


def test_case11_resolved_unconfirmed_or_cancelled_pain_does_not_count(engine, instep):
    rule_set, codelists, _ = instep
    pain = code_of(codelists, "chronic_pain")
    pop = Population()
    statuses = {1: "resolved", 2: "unconfirmed", 3: "cancelled", 4: "active", 5: "recorded", 6: None}
    for pid, status in statuses.items():
        pop.add_patient(pid, date_of_birth=D(1980, 5, 5), nhs_number=f"94000002{pid:02d}")
        pop.add_event(pid, D(2024, 1, 10), *pain, status=status)
    run = check(engine, pop, rule_set, codelists, INDEX)
    assert excluded_at(run) == {
        1: "chronic_pain",
        2: "chronic_pain",
        3: "chronic_pain",
        4: None,
        5: None,
        6: None,
    }


def test_case11_cancelled_stopped_and_do_not_perform_opioids_do_not_count(engine, instep):
    rule_set, codelists, _ = instep
    system, code, _ = code_of(codelists, "opioids")
    months = (D(2025, 2, 1), D(2025, 3, 1), D(2025, 4, 1))
    dropped = ["cancelled", "stopped", "on_hold", "intended", "not_taken", "do_not_perform"]
    counted = ["issued", "active", "completed", "unknown", None]
    pop = Population()
    for pid, status in enumerate(dropped + counted, start=1):
        pop.add_patient(pid, date_of_birth=D(1980, 5, 5), nhs_number=f"94000003{pid:02d}")
        for day in months:
            pop.add_issue(pid, day, code, system=system, status=status)
    # Two good issues and one cancelled one are not three months of repeat prescribing.
    pop.add_patient(50, date_of_birth=D(1980, 5, 5), nhs_number="9400000350")
    for day, status in zip(months, ["issued", "issued", "cancelled"], strict=True):
        pop.add_issue(50, day, code, system=system, status=status)
    run = check(engine, pop, rule_set, codelists, INDEX)
    got = excluded_at(run)
    assert [got[pid] for pid in range(1, len(dropped) + 1)] == ["chronic_pain"] * len(dropped)
    assert [got[pid] for pid in range(len(dropped) + 1, len(dropped) + len(counted) + 1)] == [None] * len(
        counted
    )
    assert got[50] == "chronic_pain"


def test_case11_exclusions_count_records_of_every_status(engine, instep):
    rule_set, codelists, _ = instep
    pain = code_of(codelists, "chronic_pain")
    dementia = code_of(codelists, "dementia")
    pop = Population()
    for pid, status in enumerate(["resolved", "unconfirmed", "cancelled", None], start=1):
        candidate(pop, pid, pain)
        pop.add_event(pid, D(2020, 1, 1), *dementia, status=status)
    for pid, status in enumerate(["resolved", "unconfirmed", "cancelled"], start=11):
        candidate(pop, pid, pain)
        pop.add_event(pid, D(2020, 1, 1), "snomedct", "827241000000103", status=status)
    run = check(engine, pop, rule_set, codelists, INDEX)
    assert excluded_at(run) == {
        1: "dementia",
        2: "dementia",
        3: "dementia",
        4: "dementia",
        11: "research_opt_out",
        12: "research_opt_out",
        13: "research_opt_out",
    }


def test_case11_the_rule_file_says_which_statuses_each_rule_uses(instep):
    rule_set, _, _ = instep
    assert rule_set.version == "0.5-draft"
    pain = rule_set.definitions["chronic_pain_coded"]
    opioids = rule_set.definitions["repeat_opioids"]
    assert pain.statuses == ["recorded", "active"]
    assert opioids.statuses == ["issued", "active", "completed", "unknown"]
    for step in rule_set.steps:
        if step.kind == "exclude":
            assert '"statuses"' not in step.criterion.model_dump_json(exclude_none=True), step.id
    text = RULES.read_text(encoding="utf-8")
    assert "do-not-perform" in text and "resolved" in text


def test_case11_a_misspelt_status_is_reported_at_its_line():
    text = """name: t
version: "1"
steps:
  - id: pain
    kind: include
    reason: pain
    criterion:
      has_code:
        codelist: chronic_pain
        statuses: [recorded, resolvd]
  - id: drugs
    kind: include
    reason: drugs
    criterion:
      medication_count: {codelist: opioids, window: ever, statuses: [issued, recorded]}
"""
    with pytest.raises(RuleSetError) as info:
        parse_rule_set(text, "t.yaml")
    message = str(info.value)
    assert "t.yaml:10: steps[0].criterion.has_code.statuses[1]:" in message
    assert "t.yaml:15: steps[1].criterion.medication_count.statuses[1]:" in message
    assert "Traceback" not in message


def test_case11_statuses_filter_evidence_as_well_as_the_atom(engine):
    lists = {"a": make_codelist("a", [("snomedct", "1000001")])}
    rules = one_step({"has_code": {"codelist": "a", "statuses": ["active"]}}, kind="exclude")
    pop = Population()
    pop.add_patient(1)
    pop.add_event(1, D(2024, 1, 1), "snomedct", "1000001", status="active")
    pop.add_event(1, D(2025, 1, 1), "snomedct", "1000001", status="resolved")  # newer, not counted
    pop.add_patient(2)
    pop.add_event(2, D(2025, 1, 1), "snomedct", "1000001", status="resolved")
    run = check(engine, pop, rules, lists)
    assert excluded_at(run) == {1: "only", 2: None}
    assert run.results[1]["evidence"]["date"] == "2024-01-01"


# --- case 10: partial birth dates decide age in the safe direction -----------------------------


def test_case10_born_2008_is_not_old_enough_for_min_18_until_every_reading_is(engine):
    rules = one_step({"age_between": {"min": 18, "max": 64}})
    index = D(2026, 6, 1)
    pop = Population()
    pop.add_patient(1, date_of_birth=D(2008, 1, 1), date_of_birth_latest=D(2008, 12, 31))  # "2008"
    pop.add_patient(2, date_of_birth=D(2008, 1, 1))  # exactly 1 Jan 2008: 18
    pop.add_patient(3, date_of_birth=D(2008, 5, 1), date_of_birth_latest=D(2008, 5, 31))  # "2008-05"
    pop.add_patient(4, date_of_birth=D(2008, 6, 1), date_of_birth_latest=D(2008, 6, 30))  # "2008-06"
    run = check(engine, pop, rules, {}, index)
    assert run.candidates() == {2, 3}


def test_case10_the_maximum_age_uses_the_earliest_possible_birth(engine):
    rules = one_step({"age_between": {"min": 18, "max": 64}})
    index = D(2026, 6, 1)
    pop = Population()
    pop.add_patient(1, date_of_birth=D(1961, 1, 1), date_of_birth_latest=D(1961, 12, 31))  # "1961": may be 65
    pop.add_patient(2, date_of_birth=D(1961, 12, 31))  # exact: 64
    pop.add_patient(3, date_of_birth=D(1962, 1, 1), date_of_birth_latest=D(1962, 12, 31))  # "1962": 63 or 64
    run = check(engine, pop, rules, {}, index)
    assert run.candidates() == {2, 3}
