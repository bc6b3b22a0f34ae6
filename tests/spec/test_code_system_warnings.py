"""Search warns, per step, when none of a step's codelists has a code in any system the
extract's records use (SNOMED CT lists on an extract coded in CTV3): the step can find nothing
there, whatever it removed (issue 18, tabular extracts from older systems)."""

from __future__ import annotations

import datetime as dt

from recruit.query.absent import search_warnings
from tests.search_helpers import Population, make_codelist, rule_set, run_engine

D = dt.date
CODES = {
    "pain_sct": make_codelist("pain_sct", [("snomedct", "1000001")]),
    "pain_both": make_codelist("pain_both", [("snomedct", "1000001"), ("ctv3", "XE1aB")]),
    "cancer_sct": make_codelist("cancer_sct", [("snomedct", "2000001")]),
    "drugs": make_codelist("drugs", [("dmd", "3000001")]),
}


def ctv3_population() -> Population:
    pop = Population()
    for pid in range(1, 31):
        pop.add_patient(pid)
        pop.add_event(pid, D(2020, 1, 1), "ctv3", "XE1aB" if pid % 2 else "X00ab")
    pop.add_issue(1, D(2024, 1, 1), "3000001")
    return pop


def step(sid: str, kind: str, criterion: dict) -> dict:
    return {"id": sid, "kind": kind, "reason": sid, "criterion": criterion}


RULES = rule_set(
    [
        step("pain_any_system", "include", {"has_code": {"codelist": "pain_both"}}),
        step("cancer", "exclude", {"has_code": {"codelist": "cancer_sct"}}),
        step(
            "drugs", "exclude", {"medication_count": {"codelist": "drugs", "window": "ever", "min_issues": 1}}
        ),
        step("pain", "include", {"any": [{"has_code": {"codelist": "pain_sct"}}, {"alive": None}]}),
    ]
)


def test_a_step_whose_codelists_miss_every_system_of_the_extract_warns(engine):
    run = run_engine(engine, ctv3_population(), RULES, CODES)
    with engine.connect() as conn:
        warnings = search_warnings(conn, run.run_id, RULES)
    by_step = {w.step_id: w for w in warnings}
    # The exclusion (SNOMED CT only) finds no cancer in a CTV3 extract: warned, though it removed none.
    assert set(by_step) == {"cancer", "pain"}
    said = str(by_step["cancer"])
    assert said.startswith("Step 'cancer' cannot find anything in this extract")
    assert "(cancer_sct) have SNOMED CT codes" in said and "use CTV3 codes only" in said
    assert by_step["cancer"].field == "code_system"
    assert "(pain_sct)" in str(by_step["pain"])


def test_no_warning_when_the_codelists_cover_a_system_the_extract_holds(engine):
    pop = ctv3_population()
    pop.add_event(2, D(2020, 1, 1), "snomedct", "9999999")  # one SNOMED CT code anywhere will do
    run = run_engine(engine, pop, RULES, CODES)
    with engine.connect() as conn:
        assert search_warnings(conn, run.run_id, RULES) == []
