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

import datetime as dt
import os
import random
import uuid
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from recruit.query.flow import flow_for_order, mask_histogram, step_costs
from recruit.rules.model import RuleSet
from tests.conftest import postgres_base_url
from tests.search_helpers import (
    Population,
    assert_agrees,
    duckdb_available,
    duckdb_engine_for_tests,
    fresh_engine,
    make_codelist,
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

EVENT_CODES = [
    ("snomedct", "1000001"),
    ("snomedct", "1000002"),
    ("snomedct", "1000003"),
    ("readv2", "N2411"),
    ("readv2", "N2412"),
    ("readv2", "N2500"),
    ("ctv3", "XaB12"),
]
DRUG_CODES = [("dmd", "2000001"), ("dmd", "2000002"), ("dmd", "2000003")]
CATEGORIES = ["x", "y"]
INDEX_DATES = [dt.date(2025, 6, 30), dt.date(2024, 2, 29), dt.date(2025, 3, 31)]
dates = st.dates(dt.date(2014, 1, 1), dt.date(2026, 6, 30))
CODELIST_NAMES = ["a", "b", "c", "m"]


# --- databases -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory):
    engine = fresh_engine(f"sqlite:///{tmp_path_factory.mktemp('gen') / 'gen.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_engine():
    base = postgres_base_url()
    schema = f"g_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    engine = fresh_engine(f"{base}{sep}options={quote(f'-csearch_path={schema}')}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
def duckdb_engine(tmp_path_factory):
    engine = duckdb_engine_for_tests(str(tmp_path_factory.mktemp("gen") / "gen.duckdb"))
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


# --- strategies ------------------------------------------------------------------------------------


@st.composite
def codelists(draw):
    out = {}
    for name in ("a", "b", "c"):
        rows = draw(
            st.lists(
                st.tuples(st.sampled_from(EVENT_CODES), st.sampled_from([*CATEGORIES, ""])),
                min_size=1,
                max_size=4,
                unique_by=lambda r: r[0],
            )
        )
        listed = [(system, code, category) for (system, code), category in rows]
        if draw(st.booleans()):
            listed.append(("readv2", "N24..", draw(st.sampled_from(CATEGORIES)), "prefix"))
        out[name] = make_codelist(name, listed)
    drugs = draw(st.lists(st.sampled_from(DRUG_CODES), min_size=1, max_size=3, unique=True))
    out["m"] = make_codelist("m", drugs)
    return out


@st.composite
def populations(draw):
    pop = Population()
    pop.practices.append({"id": 1, "ods_code": "A00001", "name": "One"})
    pop.practices.append({"id": 2, "ods_code": "A00002", "name": "Two"})
    n = draw(st.integers(1, 10))
    for pid in range(1, n + 1):
        start = draw(st.one_of(st.none(), dates))
        pop.add_patient(
            pid,
            practice_id=draw(st.sampled_from([1, 2])),
            nhs_number=draw(st.sampled_from([None, f"9{pid:09d}", "9000000001"])),
            date_of_birth=draw(st.dates(dt.date(1950, 1, 1), dt.date(2012, 12, 31))),
            registration_start=start,
            registration_end=draw(st.one_of(st.none(), dates)) if start else None,
            date_of_death=draw(st.one_of(st.none(), dates)),
        )
        for _ in range(draw(st.integers(0, 4))):
            system, code = draw(st.sampled_from(EVENT_CODES))
            term = draw(st.sampled_from([None, "t1", "t2"]))
            pop.add_event(pid, draw(dates), system, code, term)
        for _ in range(draw(st.integers(0, 4))):
            _, code = draw(st.sampled_from(DRUG_CODES))
            pop.add_issue(
                pid, draw(dates), code, course=draw(st.sampled_from(["acute", "repeat", "unknown"]))
            )
        for _ in range(draw(st.integers(0, 1))):
            pop.add_invitation(
                pid,
                draw(st.sampled_from(["instep", "other"])),
                status=draw(st.sampled_from(["drafted", "sent", "do_not_contact"])),
                reply=draw(st.sampled_from([None, "interested", "do_not_contact"])),
            )
    # One invitation per NHS number per study (the table's rule).
    seen = set()
    pop.invitations = [
        i
        for i in pop.invitations
        if (key := (i["study_id"], i["nhs_number"])) not in seen and not seen.add(key)
    ]
    return pop


windows = st.one_of(
    st.just("ever"),
    st.builds(lambda n: {"last_months": n}, st.integers(1, 40)),
    st.builds(lambda n: {"last_days": n}, st.integers(1, 800)),
    st.builds(lambda a, b: {"start": min(a, b), "end": max(a, b)}, dates, dates),
)
categories = st.one_of(st.none(), st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=2, unique=True))


def _codes(draw, names: list[str]) -> dict:
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    out = {"codelist": chosen[0]} if len(chosen) == 1 else {"codelists": chosen}
    cats = draw(categories)
    if cats:
        out["categories"] = cats
    return out


@st.composite
def status_sources(draw):
    return [
        {"codelist": draw(st.sampled_from(["a", "b", "c"])), "status": draw(st.sampled_from(["in", "out"]))}
        | ({"categories": cats} if (cats := draw(categories)) else {})
        for _ in range(draw(st.integers(1, 3)))
    ]


@st.composite
def leaves(draw):
    kind = draw(
        st.sampled_from(
            [
                "registered",
                "alive",
                "age_between",
                "has_code",
                "medication_count",
                "latest_code_among",
                "likely_in_work",
                "already_invited",
                "do_not_contact",
            ]
        )
    )
    if kind == "registered":
        return {"registered": {"for_at_least_months": draw(st.sampled_from([0, 6, 24]))}}
    if kind == "alive":
        return {"alive": {}}
    if kind == "age_between":
        low, high = sorted(draw(st.lists(st.integers(0, 80), min_size=2, max_size=2)))
        return {"age_between": {"min": low, "max": high}}
    if kind == "has_code":
        body = _codes(draw, ["a", "b", "c"]) | {"window": draw(windows)}
        body["occurrence"] = draw(st.sampled_from(["any", "first", "last"]))
        return {"has_code": body}
    if kind == "medication_count":
        body = _codes(draw, ["m"]) | {"window": draw(windows), "min_issues": draw(st.integers(1, 3))}
        body.pop("categories", None)
        if draw(st.booleans()):
            body["min_distinct_months"] = draw(st.integers(1, 3))
        body["course"] = draw(st.sampled_from(["any", "repeat", "acute"]))
        return {"medication_count": body}
    if kind == "latest_code_among":
        return {
            "latest_code_among": {
                "sources": draw(status_sources()),
                "window": draw(windows),
                "status_in": draw(
                    st.lists(st.sampled_from(["in", "out"]), min_size=1, max_size=2, unique=True)
                ),
                "when_none": draw(st.booleans()),
            }
        }
    if kind == "likely_in_work":
        return {
            "likely_in_work": {
                "look_back_months": draw(st.integers(1, 36)),
                "evidence": draw(status_sources()),
                "in_work_statuses": ["in"],
                "unknown": draw(st.sampled_from(["keep", "exclude"])),
            }
        }
    if kind == "already_invited":
        return {"already_invited": {}}
    return {"do_not_contact": {"any_study": draw(st.booleans())}}


def criteria(definitions: list[str]):
    base = (
        leaves()
        if not definitions
        else st.one_of(leaves(), st.sampled_from([{"ref": d} for d in definitions]))
    )
    return st.recursive(
        base,
        lambda inner: st.one_of(
            st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda x: {"not": x}, inner),
        ),
        max_leaves=4,
    )


@st.composite
def rule_sets(draw):
    definitions = {}
    for name in draw(st.lists(st.sampled_from(["d1", "d2"]), max_size=2, unique=True)):
        definitions[name] = draw(criteria(sorted(definitions)))  # refer only to earlier ones: no loops
    names = sorted(definitions)
    steps = [
        {
            "id": f"s{i}",
            "kind": draw(st.sampled_from(["include", "exclude"])),
            "reason": f"reason {i}",
            "criterion": draw(criteria(names)),
        }
        for i in range(draw(st.integers(1, 5)))
    ]
    score = [
        {
            "id": f"c{j}",
            "weight": draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])),
            "why": "w",
            "criterion": draw(criteria(names)),
        }
        for j in range(draw(st.integers(0, 2)))
    ]
    return RuleSet.model_validate(
        {
            "name": "gen",
            "version": "1",
            "study": "instep",
            "definitions": definitions,
            "steps": steps,
            "score": score,
        }
    )


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
