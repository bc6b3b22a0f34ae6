"""Pseudonymised extracts (CPRD, OpenSAFELY, OMOP: no NHS number, name or address) in the search
and in evaluate: their patients pass nhs_number_verified (the provider verified identity before
pseudonymising), so a pseudonymised extract's flow counts equal those of the same people's
identified extract; evaluate matches them to the truth by pseudonym. On every search engine.
"""

from __future__ import annotations

import datetime as dt

import pytest

from recruit.errors import RecruitError
from recruit.evaluation.judge import NOT_IN_RECORDS, evaluate_run
from synthetic_ehr.keys import pseudonym
from tests.search_helpers import INDEX, Population, check, make_codelist, one_step, rule_set
from tests.spec.test_evaluate import CODELISTS as EV_CODELISTS
from tests.spec.test_evaluate import RULES as EV_RULES
from tests.spec.test_evaluate import hand_built, write_truth

D = dt.date
PAIN = {"pain": make_codelist("pain", [("snomedct", "82423001")])}


def pseudonymised(pop: Population) -> Population:
    """The same people as a pseudonymised extract gives them: keyed by pseudonym, no NHS number,
    no name or address."""
    for p in pop.patients:
        p.update(nhs_number=None, pseudonymised=True, source_id=str(pseudonym(p["id"])))
    return pop


def test_nhs_number_verified_passes_pseudonymised_patients_only(engine):
    pop = Population()
    pop.add_patient(1, nhs_number="9400000001")
    pop.add_patient(2, nhs_number=None)  # identified extract, no verified number: left out
    pop.add_patient(3, nhs_number=None, pseudonymised=True)
    run = check(engine, pop, one_step({"nhs_number_verified": None}), PAIN)
    assert run.candidates() == {1, 3}


def population() -> Population:
    pop = Population()
    for pid in range(1, 9):
        pop.add_patient(
            pid,
            nhs_number=f"94000000{pid:02d}",
            registration_start=D(2024, 12, 1) if pid == 7 else D(2010, 1, 1),
            date_of_death=D(2025, 1, 1) if pid == 8 else None,
        )
        if pid % 2:
            pop.add_event(pid, D(2024, 3, 1), "snomedct", "82423001")
    return pop


FLOW = rule_set(
    [
        {
            "id": "registered",
            "kind": "include",
            "reason": "r",
            "criterion": {"registered": {"for_at_least_months": 12}},
        },
        {"id": "alive", "kind": "include", "reason": "a", "criterion": {"alive": None}},
        {"id": "nhs_number", "kind": "include", "reason": "n", "criterion": {"nhs_number_verified": None}},
        {"id": "pain", "kind": "include", "reason": "p", "criterion": {"has_code": {"codelist": "pain"}}},
    ]
)


def test_flow_counts_of_a_pseudonymised_extract_equal_the_identified_ones(engine):
    def counts(pop: Population) -> list[tuple[str, int, int, int]]:
        run = check(engine, pop, FLOW, PAIN)
        return [(c["step_id"], c["entering"], c["kept"], c["excluded"]) for c in run.counts]

    identified = counts(population())
    assert identified[-1][2] == 3  # 1, 3, 5 (7 joined lately)
    assert counts(pseudonymised(population())) == identified


def test_evaluate_matches_pseudonymised_patients_by_pseudonym(engine, tmp_path):
    """The hand-built case of test_evaluate, loaded as a pseudonymised extract, gives the same
    figures; the patient with no truth row is now unknown rather than unmatchable."""
    pop, truth = hand_built()
    pseudonymised(pop)
    nhs_to_pid = {f"94000000{pid:02d}": pid for pid in range(1, 11)}
    for row in truth:
        if row["nhs_number"] in nhs_to_pid:
            row["pseudonym"] = str(pseudonym(nhs_to_pid[row["nhs_number"]]))
    # Patient 10 has no truth row; person 9 has a pseudonym but no NHS number in the truth.
    truth[8]["nhs_number"] = ""
    run = check(engine, pop, EV_RULES, EV_CODELISTS, INDEX)
    path = write_truth(tmp_path / "truth", truth, extract_date=INDEX)

    ev = evaluate_run(engine, run.run_id, path)

    # Patient 10 (no NHS number, so unmatchable when identified) now is a candidate of unknown truth.
    assert (ev.invited, ev.invited_in_work, ev.invited_not_in_work, ev.invited_unknown) == (4, 1, 2, 1)
    assert ev.invited_eligible == 1
    assert ev.missed_by_step() == {NOT_IN_RECORDS: 2, "pain": 1, "in_work": 1}  # 8 and B00002's
    assert ev.people == 7 and ev.people_without_truth == 1 and ev.records_without_nhs_number == 0
    assert [(s.excluded, s.eligible_excluded, s.in_work_excluded) for s in ev.steps] == [
        (1, 0, 1),
        (1, 1, 0),
        (2, 1, 1),
    ]


def test_evaluate_refuses_a_truth_file_without_pseudonyms_for_a_pseudonymised_run(engine, tmp_path):
    pop, truth = hand_built()
    run = check(engine, pseudonymised(pop), EV_RULES, EV_CODELISTS, INDEX)
    path = write_truth(tmp_path / "truth", truth)  # pseudonym column present but empty
    with pytest.raises(RecruitError, match="None of the NHS numbers or pseudonyms"):
        evaluate_run(engine, run.run_id, path)
    old = tmp_path / "old.csv"
    old.write_text("nhs_number,eligible_ips,in_work_at_extract\n9400000001,true,false\n")
    with pytest.raises(RecruitError, match="has no pseudonym column"):
        evaluate_run(engine, run.run_id, old)
