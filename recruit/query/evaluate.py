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
  using only what their records hold (see `ceiling_by_wave`), so anyone can see how much better
  the out-of-work score could do.

People are matched by NHS number, never by the database's internal ids; patients from a
pseudonymised extract (no NHS number) by their pseudonym, the patient id the extract gives them
(patient.source_id), which truth.csv gives beside each NHS number. The truth file is
streamed into a temporary table (it may hold a million rows) and every count is one set-based
query; only the candidates (a small set) come back to Python, for the waves.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
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

from recruit.codelists import Codelist
from recruit.errors import RecruitError
from recruit.rules.model import RuleSet
from recruit.tables import PATIENT, RESULT, RUN, STEP_COUNT

WAVES: tuple[tuple[str, float], ...] = (("top 10%", 0.10), ("top 25%", 0.25), ("top 50%", 0.50), ("all", 1.0))

# Which truth column says "truly eligible", and what that means in words.
ELIGIBILITY = {
    "eligible_ips": "aged 18 to 64, chronic pain, not in paid work, registered and alive",
    "eligible_ips_strict": (
        "aged 18 to 64, chronic pain, out of work for 3 months or more as unemployed, long-term sick "
        "or caring (not retired or a student), really living in the area, and no cancer, dementia, "
        "palliative care or research opt-out"
    ),
}
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
    ceiling_by_features: list[tuple[int, int, tuple[Any, ...]]] = field(default_factory=list)

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

    def to_json(self) -> dict[str, Any]:
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


# --- reading the truth ---------------------------------------------------------------------------


def truth_csv(path: str | Path) -> Path:
    """The truth.csv for a path: the file itself, or inside a folder (DIR/truth or DIR)."""
    p = Path(path)
    for candidate in (p, p / "truth.csv", p / "truth" / "truth.csv"):
        if candidate.is_file():
            return candidate
    raise RecruitError(
        f"No truth file at {p}. Give the truth.csv that `recruit synth` wrote (in its truth folder)."
    )


def truth_extract_date(truth_file: Path) -> dt.date | None:
    """The date the truth describes, from the params.json `recruit synth` writes beside it."""
    params = truth_file.parent / "params.json"
    try:
        data = json.loads(params.read_text(encoding="utf-8"))
        return dt.date.fromisoformat(data["params"]["extract_date"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


_TRUE = frozenset({"true", "True", "TRUE", "1", "yes", "Yes", "y", "t"})


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value.strip()) if value.strip() else None
    except ValueError:
        return None


@dataclass
class _TruthStats:
    rows: int = 0
    in_scope: int = 0
    eligible_flagged: int = 0
    eligible_not_on_index_date: int = 0  # eligible on the extract date, not on the list on the index date


PSEUDONYM_PREFIX = "pseudonym "  # the person key of a truth row with a pseudonym but no NHS number


def _truth_rows(
    path: Path,
    eligibility: str,
    index_date: dt.date,
    practice: str | None,
    stats: _TruthStats,
    pseudonyms: bool = False,
) -> Iterator[tuple[str, str | None, int, int, str]]:
    """(person key, pseudonym, eligible for this run, in work, employment state) for each
    in-scope person. The key is the NHS number; pseudonyms (a run on a pseudonymised extract):
    also the pseudonym, and a person with a pseudonym but no NHS number is keyed by it.

    A person flagged eligible in the truth is eligible for this run only if the truth also has
    them registered (and alive) on the run's index date: the search cannot be blamed for people
    who joined the practice after it, or had left or died before it. Rows are read with plain
    csv.reader and column positions (a million rows: DictReader would double the time).
    """
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        needed = ["nhs_number", eligibility, "in_work_at_extract"]
        missing = [name for name in needed if name not in header]
        if missing:
            raise RecruitError(
                f"{path} is not a truth file from `recruit synth`: it has no column {', '.join(missing)}."
            )
        col = {name: i for i, name in enumerate(header)}
        i_nhs, i_eligible, i_work = (col[name] for name in needed)
        i_pseudonym = col.get("pseudonym") if pseudonyms else None
        if pseudonyms and i_pseudonym is None:
            raise RecruitError(
                f"{path} has no pseudonym column, so the people of a pseudonymised extract cannot be "
                "matched to it: make the extract and its truth again with this version of `recruit synth`."
            )
        i_state = col.get("employment_at_extract")
        i_practice = col.get("practice_ods") if practice is not None else None
        dates = [col.get(name) for name in ("registration_start", "deregistration_date", "death_date")]
        width = len(header)
        for row in reader:
            stats.rows += 1
            if len(row) < width:
                row += [""] * (width - len(row))
            nhs = row[i_nhs].replace(" ", "")
            pseudonym = row[i_pseudonym].strip() or None if i_pseudonym is not None else None
            key = nhs or (PSEUDONYM_PREFIX + pseudonym if pseudonym else "")
            if not key or (i_practice is not None and row[i_practice] not in ("", practice)):
                continue
            stats.in_scope += 1
            eligible = row[i_eligible] in _TRUE
            if eligible:
                stats.eligible_flagged += 1
                start, left, died = (None if i is None else _date(row[i]) for i in dates)
                on_index = (
                    (start is None or start <= index_date)
                    and (left is None or left > index_date)
                    and (died is None or died > index_date)
                )
                if not on_index:
                    stats.eligible_not_on_index_date += 1
                    eligible = False
            state = (row[i_state].strip() if i_state is not None else "") or "unknown"
            yield key, pseudonym, int(eligible), int(row[i_work] in _TRUE), state[:40]


def _bulk_insert(conn: Connection, table: Table, rows: Iterator[Sequence[Any]], batch: int = 20_000) -> None:
    """Rows as plain tuples, in batches (COPY on PostgreSQL): a million rows stay cheap."""
    names = [c.name for c in table.columns]
    copy = conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"
    style = conn.dialect.paramstyle
    marks = {
        "qmark": ["?"] * len(names),
        "numeric_dollar": [f"${i}" for i in range(1, len(names) + 1)],
    }.get(style, ["%s"] * len(names))
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(marks)})"
    buffer: list[Sequence[Any]] = []

    def flush() -> None:
        if not buffer:
            return
        if copy:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as out:
                for row in buffer:
                    out.write_row(row)
        else:
            conn.exec_driver_sql(sql, buffer)
        buffer.clear()

    for row in rows:
        buffer.append(row)
        if len(buffer) >= batch:
            flush()
    flush()


# --- the ceiling: the best ranking the records allow ------------------------------------------

CEILING_FEATURES_FILE = "ceiling_features.yaml"
SMALL_GROUP = 10  # fewer people than this with the same records: their share eligible is mostly chance


@dataclass(frozen=True)
class CeilingFeatures:
    """What the oracle ranking may know about each candidate: named yes/no criteria about their
    record (a rule file's `score:` items; their weights are not used), besides the run's own score.
    """

    rule_set: RuleSet
    codelists: dict[str, Codelist]

    @property
    def names(self) -> list[str]:
        return [item.id for item in self.rule_set.score]


def load_ceiling_features(path: str | Path | None = None) -> CeilingFeatures:
    """The features file (default: rules/ceiling_features.yaml, ./rules/ first) and its codelists."""
    from recruit.query.run import load_search
    from recruit.resources import rules_file

    rule_set, codelists, _ = load_search(rules_file(CEILING_FEATURES_FILE) if path is None else path)
    return CeilingFeatures(rule_set, codelists)


def ceiling_by_wave(
    groups: Sequence[tuple[int, int]], sizes: Sequence[int], prior: float = 0.0
) -> list[float | None]:
    """The best precision of the first `size` letters for each size, ranking groups of people.

    `groups` are (people, truly eligible) for each group of candidates whose recorded features are
    identical: no ranking that uses only those features can tell them apart, so the oracle ranks
    whole groups by their share eligible, best first, and a wave that ends inside a group takes
    its people at the group's share (a random draw from the group, on average). No score built
    from those features can do better on these people (ties broken at random).

    It flatters when groups are small: a group of one person is 0% or 100% eligible by chance,
    and no score could repeat that luck on the next practice's records. `prior` > 0 ranks the
    groups instead by their share shrunk towards the share among all candidates, as if `prior`
    more people at that share were in each, (eligible + prior x overall) / (people + prior),
    while still counting each group's real share (so the whole list's figure is unchanged).
    """
    people = sum(n for n, _ in groups)
    overall = sum(e for _, e in groups) / people if people else 0.0
    ranked = sorted(((e + prior * overall) / (n + prior), e / n, n) for n, e in groups if n)
    ranked.reverse()
    shares = [(rate, n) for _, rate, n in ranked]
    return [top_precision(shares, size) if size else None for size in sizes]


def top_precision(shares: Sequence[tuple[float, int]], size: float) -> float:
    """Precision of the first `size` letters taken from groups in the order given, as (share
    eligible, people) each: a wave ending inside a group takes its people at the group's share."""
    left, eligible = float(size), 0.0
    for rate, n in shares:
        if left <= 0:
            break
        take = min(n, left)
        eligible += take * rate
        left -= take
    return eligible / size


def _ceiling_groups(
    conn: Connection, run: Any, people: Any, truth: Table, features: CeilingFeatures
) -> list[tuple[int, int, tuple[Any, ...]]]:
    """(people, truly eligible, features) for each group of candidates with identical recorded
    features (the run's score, then 1 or 0 for each criterion of `features`).

    The features are the run's score and each criterion of `features`, worked out by the search's
    own compiler for the candidates only (their codelists are stored as a search stores them).
    """
    from recruit.query.compiler import Compiler
    from recruit.query.run import store_codelists

    rule_set = features.rule_set
    compiler = Compiler(
        conn, rule_set, run.index_date, store_codelists(conn, features.codelists), features.codelists
    )
    candidates = select(people.c.patient_id).where(people.c.outcome == "candidate")
    compiler.population = compiler.patient_set(candidates)
    criteria = [item.criterion for item in rule_set.score]
    compiler.prepare(criteria)
    one, zero = literal_column("1"), literal_column("0")
    flags = [case((compiler.condition(c), one), else_=zero).label(f"x{i}") for i, c in enumerate(criteria)]
    per_person = (
        select(
            people.c.score,
            *flags,
            func.coalesce(truth.c.eligible, zero).label("eligible"),
        )
        .select_from(
            compiler.patients_from()
            .join(people, people.c.patient_id == PATIENT.c.id)
            .outerjoin(truth, truth.c.nhs_number == people.c.nhs_number)
        )
        .where(people.c.outcome == "candidate")
        .subquery("features")
    )
    keys = [per_person.c.score, *(per_person.c[f"x{i}"] for i in range(len(criteria)))]
    rows = conn.execute(select(func.count(), func.sum(per_person.c.eligible), *keys).group_by(*keys)).all()
    compiler.drop()
    return [(int(n), int(e or 0), tuple(key)) for n, e, *key in rows]


# --- evaluating ----------------------------------------------------------------------------------


def evaluate_run(
    engine: Engine,
    run_id: int,
    truth: str | Path,
    eligibility: str = "eligible_ips",
    ceiling: CeilingFeatures | None = None,
) -> Evaluation:
    """Compare run `run_id` with the truth file (or folder) that came with the made-up extract.

    `ceiling`: the recorded features the best possible ranking may use (default: those of
    rules/ceiling_features.yaml; see `ceiling_by_wave`)."""
    if eligibility not in ELIGIBILITY:
        raise RecruitError(
            f"Unknown eligibility column {eligibility!r}; use one of {', '.join(ELIGIBILITY)}."
        )
    truth_file = truth_csv(truth)
    if ceiling is None:
        ceiling = load_ceiling_features()
    with engine.begin() as conn:
        run: Any = conn.execute(select(RUN).where(RUN.c.id == run_id)).one_or_none()
        if run is None:
            raise RecruitError(f"There is no search run {run_id}.")
        if run.status != "finished":
            raise RecruitError(f"Search run {run_id} did not finish ({run.status}); run the search again.")
        steps = conn.execute(
            select(STEP_COUNT).where(STEP_COUNT.c.run_id == run_id).order_by(STEP_COUNT.c.step_index)
        ).all()
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
        stats = _TruthStats()
        rows = _truth_rows(truth_file, eligibility, run.index_date, run.practice_ods_code, stats, pseudonyms)
        _bulk_insert(conn, table, rows)
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


def _people(conn: Connection, run_id: int, step_ids: Sequence[str], truth: Table | None = None) -> Any:
    """One row per person in the run: the record that got furthest through the steps (a person
    with records at two practices counts once). A person is their NHS number; given the truth
    (a run on pseudonymised patients), a pseudonymised patient is the truth's person whose
    pseudonym is their patient id, or "pseudonym ID" when the truth has no such person."""
    key: Any = PATIENT.c.nhs_number
    matchable: Any = PATIENT.c.nhs_number.is_not(None)
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
    run: Any,
    steps: Sequence[Any],
    truth: Table,
    eligibility: str,
    truth_file: Path,
    stats: _TruthStats,
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
    found = _ceiling_groups(conn, run, people, truth, ceiling) if ceiling is not None and invited else []
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


# --- showing it ------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def summary_lines(ev: Evaluation) -> list[str]:
    """The figures in sentences a trial manager can read without the tables."""
    where = f" at practice {ev.practice}" if ev.practice else ""
    lines = [
        f"Search run {ev.run_id} ({ev.rule_set} {ev.rule_set_version}, index date {ev.index_date}{where}) "
        f"checked against the made-up truth in {ev.truth_file}.",
        f"Truly eligible means: {ev.eligibility_words} (truth column {ev.eligibility}).",
        "",
        f"Letters: {ev.invited:,} people would be invited.",
        f"  {ev.invited_in_work:,} of them are in paid work ({_pct(ev.in_work_share)}): letters the trial "
        "cannot use.",
        f"  {ev.invited_not_in_work:,} are not in paid work; {ev.invited_eligible:,} of the "
        f"{ev.invited:,} are truly eligible (precision {_pct(ev.precision)}).",
    ]
    if ev.invited_unknown:
        lines.append(f"  {ev.invited_unknown:,} are not in the truth file.")
    lines.append(
        f"Eligible people: {ev.eligible_total:,} are truly eligible; the search finds "
        f"{ev.invited_eligible:,} (recall {_pct(ev.recall)}) and misses {ev.eligible_missed:,}."
    )
    missed = ev.missed_by_step()
    if missed:
        where_lost = ", ".join(
            f"{k:,} {'not in the loaded records' if step == NOT_IN_RECORDS else 'at ' + step}"
            for step, k in missed.items()
        )
        lines.append(f"  Lost: {where_lost}.")
    first = ev.waves[0] if ev.waves else None
    if first is not None and first.ceiling is not None:
        lines.append(
            f"First wave ({first.label}, {first.invited:,} letters): {_pct(first.precision)} reach truly "
            f"eligible people; the best possible ranking by what the records hold would reach "
            f"{_pct(first.ceiling)} (see 'best possible' below)."
        )
    if ev.invited_by_state:
        states = ", ".join(f"{state.replace('_', ' ')} {k:,}" for state, k in ev.invited_by_state.items())
        lines.append(f"Invited people by their real work situation: {states}.")
    return lines


def render(ev: Evaluation) -> list[Any]:
    """Rich renderables: the summary, then a table per step and a table per wave."""
    from rich.table import Table as RichTable
    from rich.text import Text

    out: list[Any] = [Text("\n".join(summary_lines(ev)))]
    steps = RichTable(title="Each step against the truth (in the run's order)", title_justify="left")
    for name, justify in (
        ("#", "right"),
        ("step", "left"),
        ("left out", "right"),
        ("eligible left out", "right"),
        ("in work left out", "right"),
        ("eligible failing it alone", "right"),
        ("eligible gained if dropped", "right"),
        ("in work gained if dropped", "right"),
    ):
        steps.add_column(name, justify=justify)  # type: ignore[arg-type]
    if ev.eligible_not_in_records:
        steps.add_row(
            "", "(not in the loaded records)", "", f"{ev.eligible_not_in_records:,}", "", "", "", ""
        )
    for s in ev.steps:
        steps.add_row(
            str(s.index + 1),
            s.step_id,
            f"{s.excluded:,}",
            f"{s.eligible_excluded:,}",
            f"{s.in_work_excluded:,}",
            f"{s.eligible_failing_alone:,}",
            f"{s.eligible_cost:,}",
            f"{s.in_work_cost:,}",
        )
    out.append(steps)
    waves = RichTable(title="Letters in waves, strongest out-of-work evidence first", title_justify="left")
    for name in (
        "wave",
        "letters",
        "in work",
        "not in work",
        "eligible",
        "precision",
        "recall",
        "lowest score",
        "best possible",
    ):
        waves.add_column(name, justify="left" if name == "wave" else "right")
    for w in ev.waves:
        waves.add_row(
            w.label,
            f"{w.invited:,}",
            f"{w.in_work:,}",
            f"{w.not_in_work:,}",
            f"{w.eligible:,}",
            _pct(w.precision),
            _pct(w.recall),
            "-" if w.lowest_score is None else f"{w.lowest_score:g}",
            _pct(w.ceiling),
        )
    out.append(waves)
    legend = (
        "precision: share of letters that reach a truly eligible person; recall: share of all truly "
        "eligible people who get a letter. Within tied scores letters are as good as drawn at random. "
        "best possible: the precision of the best ranking of the same people using only what their "
        "records hold (" + ", ".join(ev.ceiling_features) + f"; {ev.ceiling_groups:,} groups of people "
        "with the same records, ranked by their share eligible): how much better the score could do."
    )
    out.append(Text(legend))
    out.extend(Text(f"Note: {note}") for note in ev.notes)
    return out
