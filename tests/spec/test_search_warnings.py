"""Search warns when a step removes (nearly) everyone because the extract lacks the field it
needs (issue 16 item 1): the registration step on an extract without registration start dates."""

from __future__ import annotations

import datetime as dt

from recruit.query.absent import search_warnings
from tests.search_helpers import Population, make_codelist, one_step, rule_set, run_engine

D = dt.date
CODES = {
    "a": make_codelist("a", [("snomedct", "1000001")]),
    "m": make_codelist("m", [("dmd", "2000001")]),
}
NO_START = "no patient has a registration start date: the extract carries no registration details"


def _population(n: int, with_start: int = 0, left: int = 0) -> Population:
    pop = Population()
    for pid in range(1, n + 1):
        if pid <= with_start:
            pop.add_patient(pid)  # registered since 2000
        elif pid <= with_start + left:
            pop.add_patient(pid, registration_start=None, registration_end=D(2020, 1, 1))
        else:
            pop.add_patient(pid, registration_start=None)
    return pop


def _warnings(engine, pop, criterion):
    rules = one_step(criterion)
    run = run_engine(engine, pop, rules, {})
    with engine.connect() as conn:
        return run, search_warnings(conn, run.run_id, rules)


def test_registered_step_removing_everyone_for_want_of_a_start_names_the_field(engine):
    run, warnings = _warnings(engine, _population(30), {"registered": {}})
    assert run.candidates() == set()
    assert len(warnings) == 1
    (warning,) = warnings
    assert (warning.step_id, warning.field, warning.entering, warning.removed) == (
        "only",
        "registration_start",
        30,
        30,
    )
    assert NO_START in str(warning)
    assert "unknown_start: counts" in str(warning)


def test_nearly_everyone_removed_with_a_few_starts_still_warns(engine):
    _, warnings = _warnings(
        engine, _population(40, with_start=1), {"registered": {"for_at_least_months": 12}}
    )
    assert [w.field for w in warnings] == ["registration_start"]
    assert (
        "39 of the 39 it removed who had not left have no registration start date: "
        "the extract carries registration details for few" in str(warnings[0])
    )


def test_no_warning_when_an_unknown_start_counts_or_few_are_removed_or_people_left(engine):
    # The rule counts an unknown start: nobody removed for want of one.
    _, warnings = _warnings(engine, _population(30), {"registered": {"unknown_start": "counts"}})
    assert warnings == []
    # Fewer than 20 entering: too few to tell.
    _, warnings = _warnings(engine, _population(19), {"registered": {}})
    assert warnings == []
    # Most have a start date: the step removes under 95%.
    _, warnings = _warnings(engine, _population(30, with_start=25), {"registered": {}})
    assert warnings == []
    # Everyone removed had left the practice: the data is there, the answer is true.
    _, warnings = _warnings(engine, _population(30, left=30), {"registered": {"unknown_start": "counts"}})
    assert warnings == []


def test_a_registered_step_through_a_definition_is_recognised(engine):
    pop = _population(25)
    rules = rule_set(
        [{"id": "reg", "kind": "include", "reason": "Registered", "criterion": {"ref": "on_list"}}],
        definitions={"on_list": {"registered": {}}},
    )
    run = run_engine(engine, pop, rules, {})
    with engine.connect() as conn:
        warnings = search_warnings(conn, run.run_id, rules)
    assert [w.step_id for w in warnings] == ["reg"]


def test_nhs_number_step_removing_everyone_names_the_field(engine):
    """Example data without NHS numbers: the step keeps nobody, and the search says why."""
    pop = Population()
    for pid in range(1, 31):
        pop.add_patient(pid, nhs_number=f"99900{pid:05d}" if pid == 1 else None)
    run, warnings = _warnings(engine, pop, {"nhs_number_verified": {}})
    assert run.candidates() == {1}
    [warning] = warnings
    assert (warning.field, warning.entering, warning.removed) == ("nhs_number", 30, 29)
    assert "no verified NHS number in the extract" in str(warning)


def test_nhs_number_step_removing_a_few_says_nothing(engine):
    pop = Population()
    for pid in range(1, 31):
        pop.add_patient(pid, nhs_number=None if pid <= 3 else f"99900{pid:05d}")
    run, warnings = _warnings(engine, pop, {"nhs_number_verified": {}})
    assert len(run.candidates()) == 27 and warnings == []


def test_a_step_reading_coded_entries_warns_when_the_extract_has_none(engine):
    """A demographics-only extract (PDS): the chronic-pain step removes everyone, and says the
    extract holds no coded entries or prescriptions, not that nobody has chronic pain."""
    pop = Population()
    for pid in range(1, 31):
        pop.add_patient(pid)
    criterion = {
        "any": [
            {"has_code": {"codelist": "a", "window": "ever"}},
            {"medication_count": {"codelist": "m", "window": "ever", "min_issues": 1}},
        ]
    }
    rules = one_step(criterion)
    run = run_engine(engine, pop, rules, CODES)
    with engine.connect() as conn:
        [warning] = search_warnings(conn, run.run_id, rules)
    assert warning.field == "clinical_events and medication_issues"
    assert (warning.entering, warning.removed) == (30, 30)
    assert "holds none for the patients searched" in str(warning)


def test_a_step_reading_coded_entries_says_nothing_when_some_exist(engine):
    pop = Population()
    for pid in range(1, 31):
        pop.add_patient(pid)
    pop.add_event(1, D(2020, 1, 1), "snomedct", "999001")  # a code no rule names
    rules = one_step({"has_code": {"codelist": "a", "window": "ever"}})
    run = run_engine(engine, pop, rules, CODES)
    with engine.connect() as conn:
        assert search_warnings(conn, run.run_id, rules) == []
    assert run.candidates() == set()
