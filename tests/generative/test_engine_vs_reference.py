"""The SQL engine agrees with the reference evaluator on generated populations and rule sets.

Hypothesis draws small populations (patients, coded events, prescriptions, invitations), small
codelists (some Read v2 rows matched by prefix) and rule sets built from every criterion, nested
with all / any / not and named definitions. On each database (SQLite, PostgreSQL, and DuckDB
when duckdb-engine is installed) the engine must agree with the plain-Python reference patient
by patient (outcome, first excluding step, step mask, evidence, score, rank) and count by count.
Flow properties are checked on the same runs.

One schema per database serves the whole module (tables are emptied between examples).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recruit.explain import explain_candidates, record_words
from recruit.query.flow import flow_for_order, mask_histogram, step_costs
from recruit.query.model import RuleSet
from recruit.query.reference import Reference
from recruit.search_run import SearchRun
from tests.conftest import postgres_schema_url
from tests.generative.strategies import (
    INDEX_DATES,
    codelists,
    criteria,
    explained_rule_sets,
    populations,
    rule_sets,
)
from tests.search_helpers import (
    Population,
    assert_agrees,
    duckdb_available,
    fresh_engine,
    make_codelist,
    reference_data,
    reference_run,
    run_engine,
)

# RECRUIT_GENERATIVE_EXAMPLES raises the number of examples for a long local run.
EXAMPLES = int(os.environ.get("RECRUIT_GENERATIVE_EXAMPLES", "40"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    derandomize=False,
)

# --- databases -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory):
    engine = fresh_engine(f"sqlite:///{tmp_path_factory.mktemp('gen') / 'gen.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_engine():
    with postgres_schema_url("g") as url:
        engine = fresh_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def duckdb_engine(tmp_path_factory):
    engine = fresh_engine(f"duckdb:///{tmp_path_factory.mktemp('gen') / 'gen.duckdb'}")
    yield engine
    engine.dispose()


NO_DUCKDB = pytest.mark.skipif(not duckdb_available(), reason="duckdb-engine is not installed")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("duckdb", marks=NO_DUCKDB),
    ]
)
def engine(request):
    return request.getfixturevalue(f"{request.param}_engine")


# --- tests -----------------------------------------------------------------------------------------


@SETTINGS
@given(population=populations(), rules=rule_sets(), lists=codelists(), index=st.sampled_from(INDEX_DATES))
def test_engine_agrees_with_reference(engine, population, rules, lists, index):
    got = run_engine(engine, population, rules, lists, index)
    reference = reference_run(population, rules, lists, index)
    assert_agrees(got, reference)
    # Flow properties: entering = kept + excluded, each step takes in what the last one kept.
    previous_kept = len(population.patients)
    for count in got.counts:
        assert count["entering"] == count["kept"] + count["excluded"] == previous_kept
        previous_kept = count["kept"]
    assert previous_kept == len(got.candidates())
    # The stored masks give the same flow in file order, and any other order without re-running.
    with engine.connect() as conn:
        histogram = mask_histogram(conn, got.run_id)
    n = len(rules.steps)
    assert [(f["entering"], f["kept"]) for f in flow_for_order(histogram, range(n))] == [
        (c["entering"], c["kept"]) for c in got.counts
    ]
    order = list(range(n))
    random.Random(n).shuffle(order)
    reordered = rules.model_copy(update={"steps": [rules.steps[i] for i in order]})
    expected = reference_run(population, reordered, lists, index).counts
    assert [(f["entering"], f["kept"]) for f in flow_for_order(histogram, order)] == [
        (c["entering"], c["kept"]) for c in expected
    ]
    # Dropping a step gains exactly the people it alone kept out.
    for i, cost in enumerate(step_costs(histogram, n)):
        dropped = rules.model_copy(update={"steps": [s for j, s in enumerate(rules.steps) if j != i]})
        if dropped.steps:
            kept_without = reference_run(population, dropped, lists, index).counts[-1]["kept"]
            assert kept_without - previous_kept == cost, f"dropping step {i}"


@settings(max_examples=max(15, EXAMPLES // 3), deadline=None, suppress_health_check=list(HealthCheck))
@given(
    population=populations(),
    rules=rule_sets(),
    extra=criteria([]),
    lists=codelists(),
    seed=st.integers(0, 2**16),
)
def test_adding_an_exclusion_never_grows_the_final_set(sqlite_engine, population, rules, extra, lists, seed):
    extra_step = {"id": "extra", "kind": "exclude", "reason": "extra", "criterion": extra}
    data = rules.model_dump(by_alias=True, exclude_none=True)
    data["steps"].insert(random.Random(seed).randint(0, len(data["steps"])), extra_step)
    stricter = RuleSet.model_validate(data)
    before = run_engine(sqlite_engine, population, rules, lists).candidates()
    after = run_engine(sqlite_engine, population, stricter, lists, reload=False).candidates()
    assert after <= before


@settings(max_examples=max(15, EXAMPLES // 3), deadline=None, suppress_health_check=list(HealthCheck))
@given(population=populations(), rules=rule_sets(), lists=codelists(), seed=st.integers(0, 2**16))
def test_results_do_not_depend_on_row_or_load_order(engine, population, rules, lists, seed):
    first = run_engine(engine, population, rules, lists)
    # Load again in another order, with other database ids, as a later extract would.
    rng = random.Random(seed)
    new_ids = list(range(100, 100 + len(population.patients)))
    rng.shuffle(new_ids)
    id_map = {p["id"]: new for p, new in zip(population.patients, new_ids, strict=True)}
    shuffled = Population(practices=list(population.practices), studies=list(population.studies))
    shuffled.patients = [p | {"id": id_map[p["id"]]} for p in population.patients]
    for name in ("events", "medications", "invitations"):
        rows = [r | {"patient_id": id_map[r["patient_id"]]} for r in getattr(population, name)]
        rng.shuffle(rows)
        setattr(shuffled, name, [r | {"id": k + 1} for k, r in enumerate(rows)])
    rng.shuffle(shuffled.patients)
    second = run_engine(engine, shuffled, rules, lists)
    keep = ("outcome", "excluding_step", "reason", "evidence", "step_mask", "score", "rank")
    assert {id_map[pid]: {k: r[k] for k in keep} for pid, r in first.results.items()} == {
        pid: {k: r[k] for k in keep} for pid, r in second.results.items()
    }
    assert [{k: v for k, v in c.items() if k != "run_id"} for c in first.counts] == [
        {k: v for k, v in c.items() if k != "run_id"} for c in second.counts
    ]


@settings(max_examples=max(10, EXAMPLES // 4), deadline=None, suppress_health_check=list(HealthCheck))
@given(population=populations(), rules=rule_sets(), lists=codelists())
def test_one_practice_is_the_same_as_filtering_the_whole_run(sqlite_engine, population, rules, lists):
    whole = run_engine(sqlite_engine, population, rules, lists)
    one = run_engine(sqlite_engine, population, rules, lists, practice="A00002", reload=False)
    in_practice = {p["id"] for p in population.patients if p["practice_id"] == 2}
    assert set(one.results) == in_practice
    keep = ("outcome", "excluding_step", "step_mask", "evidence")
    assert {pid: {k: r[k] for k in keep} for pid, r in one.results.items()} == {
        pid: {k: r[k] for k in keep} for pid, r in whole.results.items() if pid in in_practice
    }


def _two_records_example() -> dict:
    """One candidate with two matching records in the window: the newer one is the evidence."""
    pop = Population()
    pop.practices.append({"id": 1, "ods_code": "A00001", "name": "One"})
    pop.add_patient(1, practice_id=1)
    pop.add_event(1, dt.date(2024, 1, 1), "snomedct", "1000001", "older")
    pop.add_event(1, dt.date(2025, 1, 1), "snomedct", "1000001", "newer")
    pop.add_issue(1, dt.date(2024, 2, 1), "2000001")
    pop.add_issue(1, dt.date(2025, 2, 1), "2000001")
    step = {"id": "s0", "kind": "include", "reason": "r"}
    rules = RuleSet.model_validate(
        {
            "name": "gen",
            "version": "1",
            "study": "instep",
            "steps": [
                {**step, "criterion": {"has_code": {"codelist": "a"}}},
                {**step, "id": "s1", "criterion": {"code_on_days": {"codelist": "a", "min_days": 2}}},
                {**step, "id": "s2", "criterion": {"medication_count": {"codelist": "m", "window": "ever"}}},
            ],
        }
    )
    lists = {
        "a": make_codelist("a", [("snomedct", "1000001")]),
        "m": make_codelist("m", [("dmd", "2000001")]),
    }
    return {"population": pop, "rules": rules, "lists": lists, "index": dt.date(2025, 6, 30)}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@example(**_two_records_example())
@given(
    population=populations(max_records=12, record_dates=st.dates(dt.date(2023, 1, 1), dt.date(2025, 6, 30))),
    rules=explained_rule_sets(),
    lists=codelists(),
    index=st.sampled_from(INDEX_DATES),
)
def test_review_explanations_agree_with_reference(engine, population, rules, lists, index):
    """The third engine, review's explanations (the run's rules compiled again over its candidates):
    each candidate's evidence for each inclusion, and the score items that held, are the
    reference evaluator's."""
    got = run_engine(engine, population, rules, lists, index)
    reference = Reference(rules, lists, reference_data(population), index)
    text = yaml.safe_dump(rules.model_dump(mode="json"), sort_keys=False)
    with engine.begin() as conn:
        run = dataclasses.replace(SearchRun.load(conn, got.run_id), rule_set_text=text)
        explained = explain_candidates(conn, run)
    assert not explained.missing, "the run's rules and codelists were read back"
    patients = {p["id"]: p for p in population.patients}
    for pid in got.candidates():
        why = []
        for step in rules.steps:
            if step.kind != "include":
                continue
            held, evidence = reference.evaluate(step.criterion, patients[pid])
            assert held
            if evidence is not None:
                day, system, code, term = evidence
                why.append(f"{step.reason}: {record_words(term, system, code, day)}")
        assert explained.why.get(pid, []) == why, f"patient {pid}"
        items = [
            f"{c.id.replace('_', ' ')} (+{c.weight:g})"
            for c in rules.score
            if reference.holds(c.criterion, patients[pid])
        ]
        assert explained.score_parts.get(pid, []) == items, f"patient {pid}"
