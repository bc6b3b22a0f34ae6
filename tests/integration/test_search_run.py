"""SearchRun: a stored run loaded once, typed, with its rules, counts and explanations; and one
"no such run" message whichever command is given a run number this database does not hold."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from recruit.audit.figures import gather
from recruit.cli_render import format_flow
from recruit.errors import RecruitError
from recruit.letters.batch import write_letters
from recruit.query.flow import flow_of, run_flow
from recruit.query.run import load_search
from recruit.review import candidate_rows, export_review
from recruit.search_run import NoSuchRun, RunStep, SearchRun, StepTally
from recruit.tables import RESULT, RUN, STEP_COUNT
from recruit.waves import run_score_items
from tests.conftest import postgres_schema_url
from tests.integration.review.practice import INDEX, RULES, load_and_search, practice
from tests.search_helpers import fresh_engine

MISSING = 99
NO_SUCH_RUN = f"There is no search run {MISSING}. `recruit search` prints the number of each run."


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def searched(request, tmp_path_factory):
    """(engine, run id): practice() searched with the InSTEP rules, once per database."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('run') / 'recruit.db'}"
        else:
            url = stack.enter_context(postgres_schema_url("sr"))
        engine = fresh_engine(url)
        stack.callback(engine.dispose)
        yield engine, load_and_search(engine, practice())


def load(engine: Engine, run_id: int) -> SearchRun:
    with engine.connect() as conn:
        return SearchRun.load(conn, run_id)


def test_load_gives_the_run_typed(searched):
    engine, run_id = searched
    run = load(engine, run_id)
    rule_set = load_search(RULES)[0]
    assert (run.id, run.status, run.error) == (run_id, "finished", None)
    assert (run.rule_set_name, run.rule_set_version) == (rule_set.name, rule_set.version)
    assert run.rule_set_fingerprint == rule_set.fingerprint()
    assert run.index_date == INDEX and isinstance(run.index_date, dt.date)
    assert run.practice_ods_code == "A81001" and run.study_id is not None
    assert run.finished and run.finished_at is not None and run.started_at is not None
    assert run.steps == tuple(RunStep(i, s.id, s.kind, s.reason) for i, s in enumerate(rule_set.steps))
    assert run.step_ids == tuple(s.id for s in rule_set.steps)
    assert set(run.codelist_fingerprints) == set(rule_set.codelist_names())
    assert isinstance(run.extract_fingerprints, tuple)
    assert run.require_finished() is run


def test_a_missing_run_is_one_error_with_one_message(searched):
    engine, _ = searched
    with pytest.raises(NoSuchRun) as raised:
        load(engine, MISSING)
    assert str(raised.value) == NO_SUCH_RUN
    assert isinstance(raised.value, RecruitError) and raised.value.run_id == MISSING


def _in_conn(engine: Engine, use: Callable[[Any], object]) -> object:
    with engine.connect() as conn:
        return use(conn)


ENTRY_POINTS: dict[str, Callable[[Engine, Any], object]] = {
    "review candidates": lambda engine, tmp: candidate_rows(engine, MISSING),
    "review export": lambda engine, tmp: export_review(engine, MISSING, tmp / "r.xlsx"),
    "letters": lambda engine, tmp: write_letters(engine, MISSING, tmp / "letters"),
    "audit": lambda engine, tmp: _in_conn(engine, lambda c: gather(c, MISSING)),
    "flow": lambda engine, tmp: _in_conn(engine, lambda c: run_flow(c, MISSING)),
    "waves": lambda engine, tmp: _in_conn(engine, lambda c: run_score_items(c, MISSING)),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_command_says_no_such_run_in_the_same_words(searched, tmp_path, entry):
    engine, _ = searched
    with pytest.raises(NoSuchRun) as raised:
        ENTRY_POINTS[entry](engine, tmp_path)
    assert str(raised.value) == NO_SUCH_RUN


def test_the_stored_rule_set_reads_back_as_run(searched):
    engine, run_id = searched
    run = load(engine, run_id)
    assert run.rule_set is not None
    assert run.rule_set == load_search(RULES)[0]
    assert run.rule_set.fingerprint() == run.rule_set_fingerprint
    assert run.rule_set is run.rule_set  # parsed once
    no_text = replace(run, rule_set_text=None)
    assert no_text.rule_set is None
    broken = replace(run, rule_set_text="steps: [unclosed")
    assert broken.rule_set is None


def test_counts_are_the_stored_step_counts_in_order(searched):
    engine, run_id = searched
    with engine.connect() as conn:
        run = SearchRun.load(conn, run_id)
        counts = run.counts(conn)
        stored = conn.execute(
            select(STEP_COUNT).where(STEP_COUNT.c.run_id == run_id).order_by(STEP_COUNT.c.step_index)
        ).all()
        flows = run_flow(conn, run_id)
    assert counts == [StepTally(**{k: v for k, v in row._mapping.items() if k != "run_id"}) for row in stored]
    assert [c.step_id for c in counts] == list(run.step_ids)
    assert [c.step_index for c in counts] == list(range(len(run.steps)))
    for before, after in zip(counts, counts[1:], strict=False):
        assert after.entering == before.kept
    assert counts[0].entering == len(practice().patients)
    with engine.connect() as conn:
        assert flow_of(conn, run) == flows
        heading = format_flow(run, flows).splitlines()[0]
    named = f"{run.rule_set_name} {run.rule_set_version}, index date {INDEX} at practice A81001"
    assert heading == f"Search run {run_id}: {named}"
    assert [(f.entering, f.kept, f.excluded) for f in flows] == [
        (c.entering, c.kept, c.excluded) for c in counts
    ]


def test_results_are_the_stored_results(searched):
    """Every patient's result; candidates by rank; the flow's last step kept exactly them."""
    engine, run_id = searched
    with engine.connect() as conn:
        run = SearchRun.load(conn, run_id)
        everyone = run.results(conn)
        candidates = run.results(conn, outcome="candidate")
        stored = conn.execute(select(RESULT).where(RESULT.c.run_id == run_id)).all()
        last = run.counts(conn)[-1]
        nobody = run.results(conn, practice_id=-1)
    assert nobody == []
    assert {r.patient_id for r in everyone} == {row.patient_id for row in stored}
    assert {r.patient_id for r in candidates} == {r.patient_id for r in everyone if r.outcome == "candidate"}
    assert len(candidates) == last.kept > 0
    assert [r.rank for r in candidates] == sorted(r.rank for r in candidates if r.rank is not None)
    excluded = [r for r in everyone if r.outcome == "excluded"]
    assert excluded and all(r.excluding_step in run.step_ids and r.reason for r in excluded)


def test_explain_says_what_the_review_sheet_says(searched):
    engine, run_id = searched
    rows = {r.patient_id: r for r in candidate_rows(engine, run_id)}
    with engine.begin() as conn:
        run = SearchRun.load(conn, run_id)
        four = run.explain(conn, 4)
        with pytest.raises(RecruitError, match="Patient 2 is not a candidate in search run"):
            run.explain(conn, 2)  # excluded (dementia)
    assert "\n".join(four.why) == rows[4].why and four.why[0].startswith("Chronic pain coded")
    assert four.work == rows[4].work and four.work.startswith("Out of work:")
    assert ", ".join(four.score_parts) == rows[4].score_parts


def test_an_unfinished_run_keeps_its_own_words(searched, tmp_path):
    engine, run_id = searched
    with engine.begin() as conn:
        row = conn.execute(select(RUN).where(RUN.c.id == run_id)).one()._asdict()
        values = {k: v for k, v in row.items() if k != "id"} | {"status": "failed", "error": "made up"}
        failed = conn.execute(insert(RUN).values(values).returning(RUN.c.id)).scalar_one()
    run = load(engine, failed)
    with pytest.raises(
        RecruitError, match=rf"^Search run {failed} did not finish \(failed\); run the search again"
    ):
        run.require_finished()
    with pytest.raises(RecruitError, match=f"^Search run {failed} failed, so it has no list to review"):
        candidate_rows(engine, failed)
    with engine.connect() as conn, pytest.raises(RecruitError, match=r"did not finish \(failed\)"):
        gather(conn, failed)
