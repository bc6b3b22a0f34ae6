"""How good is a search? Compare a stored run on made-up records with the generator's hidden truth.

`recruit synth` writes, beside the extract, DIR/truth/truth.csv: one row per made-up person with
whether they are in paid work and whether they are truly eligible. This module answers a trial
manager's questions about a run on that extract:

* of the people who would be invited (the run's candidates), how many are in work (letters
  wasted on people the trial cannot help) and how many are truly eligible (precision);
* of the truly eligible, how many the search misses (recall) and at which step each was lost;
* for every step, how many eligible and how many in-work people it left out;
* by wave: the top 10%, 25% and 50% of the ranked list, and all of it;
* the ceiling: for each wave, the best precision any ranking of the same candidates could reach
  using only what their records hold (ceiling.py), so anyone can see how much better the
  out-of-work score could do.

People are matched by NHS number, never by the database's internal ids; patients from a
pseudonymised extract (no NHS number) by their pseudonym, the patient id the extract gives them
(patient.source_id), which truth.csv gives beside each NHS number. The truth file is
streamed into a temporary table (it may hold a million rows) and every count is one set-based
query; only the candidates (a small set) come back to Python, for the waves. The answer is an
`Evaluation` (plain data); the CLI prints it (recruit/cli_render.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Subquery,
    Table,
    case,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from recruit.bulk_write import write_rows
from recruit.errors import RecruitError
from recruit.evaluation.ceiling import (
    SMALL_GROUP,
    CeilingFeatures,
    Features,
    ceiling_by_wave,
    ceiling_groups,
    load_ceiling_features,
)
from recruit.evaluation.truth import (
    ELIGIBILITY,
    PSEUDONYM_PREFIX,
    TruthStats,
    truth_csv,
    truth_extract_date,
    truth_rows,
)
from recruit.search_run import SearchRun, StepTally
from recruit.tables import PATIENT, RESULT
from synthetic_ehr.truth_columns import ELIGIBLE_IPS

WAVES: tuple[tuple[str, float], ...] = (("top 10%", 0.10), ("top 25%", 0.25), ("top 50%", 0.50), ("all", 1.0))

NOT_IN_RECORDS = "not_in_records"

_temp_names = count(1)


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepEvaluation:
    """One step of the run, seen against the truth."""

    index: int
    step_id: str
    kind: str
    reason: str
    excluded: int  # people this step left out (in the run's order)
    eligible_excluded: int  # of whom truly eligible: missed here
    in_work_excluded: int  # of whom in paid work: rightly left out (for the in-work question)
    eligible_failing_alone: int  # truly eligible people failing this step whatever the order
    eligible_cost: int  # truly eligible people who would be invited if this step were dropped
    in_work_cost: int  # people in work who would be invited if this step were dropped


@dataclass(frozen=True)
class WaveEvaluation:
    """The first part of the ranked candidate list: who would get the first letters."""

    label: str
    fraction: float
    invited: int
    in_work: int
    not_in_work: int
    eligible: int
    precision: float | None  # eligible / invited
    recall: float | None  # eligible / all truly eligible
    lowest_score: float | None
    ceiling: float | None = None  # the best precision a ranking by recorded features could reach


@dataclass
class Evaluation:
    run_id: int
    rule_set: str
    rule_set_version: str
    index_date: dt.date
    practice: str | None
    truth_file: str
    truth_extract_date: dt.date | None
    eligibility: str
    eligibility_words: str
    people: int  # people in the run with a truth row
    people_without_truth: int  # in the run, but their NHS number is not in the truth file
    records_without_nhs_number: int  # cannot be matched at all
    invited: int
    invited_in_work: int
    invited_not_in_work: int
    invited_unknown: int  # candidates with no truth row
    invited_eligible: int
    eligible_total: int
    eligible_missed: int
    eligible_not_in_records: int  # truly eligible, in scope, but not in the run's records at all
    invited_by_state: dict[str, int] = field(default_factory=dict)
    steps: list[StepEvaluation] = field(default_factory=list)
    waves: list[WaveEvaluation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ceiling_features: list[str] = field(default_factory=list)  # what the oracle ranking may use
    ceiling_groups: int = 0  # candidates with identical features form one group
    ceiling_small_groups: int = 0  # candidates in groups of fewer than SMALL_GROUP people
    # (people, eligible, features) per group: counts only, for pooling runs (bench/score_ceiling.py)
    ceiling_by_features: list[tuple[int, int, Features]] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return _ratio(self.invited_eligible, self.invited)

    @property
    def recall(self) -> float | None:
        return _ratio(self.invited_eligible, self.eligible_total)

    @property
    def in_work_share(self) -> float | None:
        return _ratio(self.invited_in_work, self.invited)

    def missed_by_step(self) -> dict[str, int]:
        """Where the truly eligible who are not invited were lost (steps with none left out)."""
        out = {NOT_IN_RECORDS: self.eligible_not_in_records} if self.eligible_not_in_records else {}
        out.update({s.step_id: s.eligible_excluded for s in self.steps if s.eligible_excluded})
        return out

    def to_json(self) -> dict[str, object]:
        """Plain data for machines (no patient identifiers: counts only)."""
        return {
            "run": {
                "id": self.run_id,
                "rule_set": self.rule_set,
                "version": self.rule_set_version,
                "index_date": self.index_date.isoformat(),
                "practice": self.practice,
            },
            "truth": {
                "file": self.truth_file,
                "extract_date": self.truth_extract_date.isoformat() if self.truth_extract_date else None,
                "eligibility_column": self.eligibility,
                "eligible_means": self.eligibility_words,
                "people_matched": self.people,
                "people_without_truth": self.people_without_truth,
                "records_without_nhs_number": self.records_without_nhs_number,
            },
            "invited": {
                "total": self.invited,
                "in_work": self.invited_in_work,
                "not_in_work": self.invited_not_in_work,
                "unknown": self.invited_unknown,
                "eligible": self.invited_eligible,
                "not_eligible": self.invited - self.invited_eligible,
                "in_work_share": _round(self.in_work_share),
                "precision": _round(self.precision),
                "by_employment_state": dict(self.invited_by_state),
            },
            "eligible": {
                "total": self.eligible_total,
                "found": self.invited_eligible,
                "missed": self.eligible_missed,
                "recall": _round(self.recall),
                "missed_by_step": self.missed_by_step(),
            },
            "steps": [asdict(s) for s in self.steps],
            "waves": [
                {
                    **asdict(w),
                    "precision": _round(w.precision),
                    "recall": _round(w.recall),
                    "ceiling": _round(w.ceiling),
                }
                for w in self.waves
            ],
            "ceiling": {
                "features": list(self.ceiling_features),
                "groups": self.ceiling_groups,
                "people_in_small_groups": self.ceiling_small_groups,
                "by_features": [list(g) for g in self.ceiling_by_features],
            },
            "notes": list(self.notes),
        }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# --- evaluating ----------------------------------------------------------------------------------


def evaluate_run(
    engine: Engine,
    run_id: int,
    truth: str | Path,
    eligibility: str = ELIGIBLE_IPS,
    ceiling: CeilingFeatures | None = None,
) -> Evaluation:
    """Compare run `run_id` with the truth file (or folder) that came with the made-up extract.

    `ceiling`: the recorded features the best possible ranking may use (default: those of
    rules/ceiling_features.yaml; see ceiling.py's `ceiling_by_wave`)."""
    if eligibility not in ELIGIBILITY:
        raise RecruitError(
            f"Unknown eligibility column {eligibility!r}; use one of {', '.join(ELIGIBILITY)}."
        )
    truth_file = truth_csv(truth)
    if ceiling is None:
        ceiling = load_ceiling_features()
    with engine.begin() as conn:
        run = SearchRun.load(conn, run_id).require_finished()
        steps = run.counts(conn)
        pseudonyms = _has_pseudonymised(conn, run_id)
        table = Table(
            f"ev_truth_{next(_temp_names)}",
            MetaData(),
            # The person key: the NHS number (or "pseudonym N" for a truth row with none).
            Column("nhs_number", String(40), nullable=False),
            Column("pseudonym", String(40), nullable=True),
            Column("eligible", Integer, nullable=False),
            Column("in_work", Integer, nullable=False),
            Column("state", String(40), nullable=False),
            prefixes=["TEMPORARY"],
        )
        table.create(conn)
        stats = TruthStats()
        rows = truth_rows(truth_file, eligibility, run.index_date, run.practice_ods_code, stats, pseudonyms)
        write_rows(conn, table, rows)  # a million rows: the engine's bulk path
        _index_one_row_per_person(conn, table, truth_file)
        if pseudonyms:
            _index_one_row_per_person(conn, table, truth_file, "pseudonym")
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"ANALYZE {table.name}")
        evaluation = _evaluate(conn, run, steps, table, eligibility, truth_file, stats, pseudonyms, ceiling)
        # Not in a `finally`: after a database error the transaction is aborted (PostgreSQL
        # refuses any further statement) and its rollback removes the table anyway.
        table.drop(conn)
    return evaluation


def _has_pseudonymised(conn: Connection, run_id: int) -> bool:
    """Whether any patient of the run comes from a pseudonymised extract (matched by pseudonym)."""
    return (
        conn.execute(
            select(literal(1))
            .select_from(RESULT.join(PATIENT, PATIENT.c.id == RESULT.c.patient_id))
            .where(RESULT.c.run_id == run_id, PATIENT.c.pseudonymised == true())
            .limit(1)
        ).first()
        is not None
    )


def _index_one_row_per_person(
    conn: Connection, table: Table, truth_file: Path, column: str = "nhs_number"
) -> None:
    """Index the NHS numbers (or pseudonyms) after the rows are in (building an index once is
    cheaper than keeping it up to date), and refuse a file naming a person twice."""
    what = "an NHS number" if column == "nhs_number" else "a pseudonym"
    message = (
        f"{truth_file} names {what} more than once: a truth file from `recruit synth` has one row per person."
    )
    col = table.c[column]
    name = f"{table.name}_{column}"
    if conn.dialect.name == "duckdb":  # DuckDB checks a unique index only at commit
        Index(name, col).create(conn)
        twice = select(col).where(col.is_not(None)).group_by(col).having(func.count() > 1)
        if conn.execute(twice.limit(1)).first() is not None:
            raise RecruitError(message)
        return
    try:
        Index(name, col, unique=True).create(conn)
    except DBAPIError:
        raise RecruitError(message) from None


def _people(conn: Connection, run_id: int, step_ids: Sequence[str], truth: Table | None = None) -> Subquery:
    """One row per person in the run: the record that got furthest through the steps (a person
    with records at two practices counts once). A person is their NHS number; given the truth
    (a run on pseudonymised patients), a pseudonymised patient is the truth's person whose
    pseudonym is their patient id, or "pseudonym ID" when the truth has no such person."""
    key: ColumnElement[str | None] = PATIENT.c.nhs_number
    matchable: ColumnElement[bool] = PATIENT.c.nhs_number.is_not(None)
    if truth is not None:
        by_pseudonym = (
            select(truth.c.nhs_number).where(truth.c.pseudonym == PATIENT.c.source_id).scalar_subquery()
        )
        key = case(
            (
                PATIENT.c.pseudonymised == true(),
                func.coalesce(by_pseudonym, literal(PSEUDONYM_PREFIX) + PATIENT.c.source_id),
            ),
            else_=PATIENT.c.nhs_number,
        )
        matchable = or_(matchable, PATIENT.c.pseudonymised == true())
    reached = case(
        *((RESULT.c.excluding_step == sid, literal(i)) for i, sid in enumerate(step_ids)),
        else_=literal(len(step_ids)),
    )
    ranked = (
        select(
            key.label("nhs_number"),
            RESULT.c.patient_id,
            RESULT.c.step_mask,
            RESULT.c.outcome,
            RESULT.c.rank,
            RESULT.c.score,
            func.row_number()
            .over(
                partition_by=key,
                order_by=(reached.desc(), RESULT.c.step_mask.desc(), RESULT.c.patient_id),
            )
            .label("nth"),
        )
        .select_from(RESULT.join(PATIENT, PATIENT.c.id == RESULT.c.patient_id))
        .where(RESULT.c.run_id == run_id, matchable)
        .subquery("ranked")
    )
    return (
        select(
            ranked.c.nhs_number,
            ranked.c.patient_id,
            ranked.c.step_mask,
            ranked.c.outcome,
            ranked.c.rank,
            ranked.c.score,
        )
        .where(ranked.c.nth == 1)
        .subquery("people")
    )


def _evaluate(
    conn: Connection,
    run: SearchRun,
    steps: Sequence[StepTally],
    truth: Table,
    eligibility: str,
    truth_file: Path,
    stats: TruthStats,
    pseudonyms: bool = False,
    ceiling: CeilingFeatures | None = None,
) -> Evaluation:
    run_id = run.id
    n = len(steps)
    everything = (1 << n) - 1
    people = _people(conn, run_id, [s.step_id for s in steps], truth if pseudonyms else None)
    # Literal 1/0, not bound parameters: PostgreSQL must see the same expression in GROUP BY.
    has_truth = case((truth.c.nhs_number.is_not(None), literal_column("1")), else_=literal_column("0"))

    # Everyone in the run, by step mask and truth: a few hundred rows however big the run.
    histogram: list[tuple[int, bool, int, int, int]] = [
        (int(mask), bool(has), int(elig or 0), int(work or 0), int(k))
        for mask, has, elig, work, k in conn.execute(
            select(
                people.c.step_mask,
                has_truth,
                truth.c.eligible,
                truth.c.in_work,
                func.count(),
            )
            .select_from(people.outerjoin(truth, truth.c.nhs_number == people.c.nhs_number))
            .group_by(people.c.step_mask, has_truth, truth.c.eligible, truth.c.in_work)
        )
    ]
    with_truth = sum(k for _, has, _, _, k in histogram if has)
    without_truth = sum(k for _, has, _, _, k in histogram if not has)
    if histogram and with_truth == 0:
        by = "NHS numbers or pseudonyms" if pseudonyms else "NHS numbers"
        raise RecruitError(
            f"None of the {by} in search run {run_id} is in {truth_file}: "
            "is it the truth for the extract that was loaded?"
        )
    no_nhs = conn.execute(
        select(func.count())
        .select_from(RESULT.join(PATIENT, PATIENT.c.id == RESULT.c.patient_id))
        .where(RESULT.c.run_id == run_id, PATIENT.c.nhs_number.is_(None), PATIENT.c.pseudonymised == false())
    ).scalar_one()
    # Each person in the run matches at most one truth row (both are one row per NHS number), so
    # the eligible people missing from the run are the truth's eligible less those found in it.
    eligible_in_truth = conn.execute(
        select(func.count()).select_from(truth).where(truth.c.eligible == 1)
    ).scalar_one()

    def first_fail(mask: int) -> int:
        return next(i for i in range(n) if not mask >> i & 1)

    step_rows = []
    for i, s in enumerate(steps):
        bit = 1 << i
        at_step = [h for h in histogram if h[0] != everything and first_fail(h[0]) == i]
        alone_cost = everything & ~bit
        step_rows.append(
            StepEvaluation(
                index=i,
                step_id=s.step_id,
                kind=s.kind,
                reason=s.description or "",
                excluded=sum(h[4] for h in at_step),
                eligible_excluded=sum(h[4] for h in at_step if h[2]),
                in_work_excluded=sum(h[4] for h in at_step if h[3]),
                eligible_failing_alone=sum(h[4] for h in histogram if h[2] and not h[0] & bit),
                eligible_cost=sum(h[4] for h in histogram if h[2] and h[0] == alone_cost),
                in_work_cost=sum(h[4] for h in histogram if h[3] and h[0] == alone_cost),
            )
        )

    # The candidates, best first (ties in the order of their NHS numbers, which says nothing
    # about the person: within a tie, letters are as good as drawn at random).
    candidates = conn.execute(
        select(people.c.score, truth.c.eligible, truth.c.in_work, truth.c.state)
        .select_from(people.outerjoin(truth, truth.c.nhs_number == people.c.nhs_number))
        .where(people.c.outcome == "candidate")
        .order_by(people.c.rank, people.c.nhs_number)
    ).all()
    invited = len(candidates)
    invited_in_work = sum(1 for c in candidates if c.in_work == 1)
    invited_unknown = sum(1 for c in candidates if c.in_work is None)
    invited_eligible = sum(1 for c in candidates if c.eligible == 1)
    eligible_in_run = sum(h[4] for h in histogram if h[2])
    not_in_records = int(eligible_in_truth) - eligible_in_run
    eligible_total = eligible_in_run + not_in_records
    by_state = Counter(c.state if c.state is not None else "no truth row" for c in candidates)

    sizes = [min(invited, math.ceil(fraction * invited - 1e-9)) for _, fraction in WAVES]
    found = ceiling_groups(conn, run, people, truth, ceiling) if ceiling is not None and invited else []
    groups = [(n, e) for n, e, _ in found]
    best = ceiling_by_wave(groups, sizes) if groups else [None] * len(sizes)
    waves = []
    for (label, fraction), size, best_here in zip(WAVES, sizes, best, strict=True):
        part = candidates[:size]
        eligible = sum(1 for c in part if c.eligible == 1)
        in_work = sum(1 for c in part if c.in_work == 1)
        waves.append(
            WaveEvaluation(
                label=label,
                fraction=fraction,
                invited=size,
                in_work=in_work,
                not_in_work=sum(1 for c in part if c.in_work == 0),
                eligible=eligible,
                precision=_ratio(eligible, size),
                recall=_ratio(eligible, eligible_total),
                lowest_score=part[-1].score if part else None,
                ceiling=best_here,
            )
        )

    extract_date = truth_extract_date(truth_file)
    notes = []
    if extract_date is not None and extract_date != run.index_date:
        notes.append(
            f"The truth describes people on {extract_date} (the extract date) but the search ran as on "
            f"{run.index_date}: work status and age are as on {extract_date}."
        )
    if stats.eligible_not_on_index_date:
        notes.append(
            f"{stats.eligible_not_on_index_date:,} people eligible on the extract date were not registered "
            f"(or not alive) on the index date {run.index_date}; they are not counted as eligible here."
        )
    if without_truth:
        notes.append(f"{without_truth:,} people in the run are not in the truth file (counted as unknown).")
    if no_nhs:
        notes.append(f"{no_nhs:,} records in the run have no NHS number and cannot be matched.")
    small = sum(n for n, _ in groups if n < SMALL_GROUP)
    if small:
        notes.append(
            f"{small:,} of the {invited:,} people invited are in groups of fewer than {SMALL_GROUP} with the "
            "same records: for them chance decides the share eligible, so 'best possible' flatters "
            "(the more such people, the more it does)."
        )
    if run.practice_ods_code:
        notes.append(
            f"Only the truth for practice {run.practice_ods_code} is used, as the run searched it alone."
        )

    return Evaluation(
        run_id=run_id,
        rule_set=run.rule_set_name,
        rule_set_version=run.rule_set_version,
        index_date=run.index_date,
        practice=run.practice_ods_code,
        truth_file=str(truth_file),
        truth_extract_date=extract_date,
        eligibility=eligibility,
        eligibility_words=ELIGIBILITY[eligibility],
        people=with_truth,
        people_without_truth=without_truth,
        records_without_nhs_number=int(no_nhs),
        invited=invited,
        invited_in_work=invited_in_work,
        invited_not_in_work=invited - invited_in_work - invited_unknown,
        invited_unknown=invited_unknown,
        invited_eligible=invited_eligible,
        eligible_total=eligible_total,
        eligible_missed=eligible_total - invited_eligible,
        eligible_not_in_records=int(not_in_records),
        invited_by_state=dict(by_state.most_common()),
        steps=step_rows,
        waves=waves,
        notes=notes,
        ceiling_features=["the run's score", *ceiling.names] if ceiling is not None else [],
        ceiling_groups=len(groups),
        ceiling_small_groups=sum(n for n, _ in groups if n < SMALL_GROUP),
        ceiling_by_features=found,
    )


def write_json(evaluation: Evaluation, path: str | Path) -> None:
    Path(path).write_text(json.dumps(evaluation.to_json(), indent=2) + "\n", encoding="utf-8")
