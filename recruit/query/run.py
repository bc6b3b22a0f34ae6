"""Run a rule set inside the database and record the run.

Every patient's pass or fail at every step goes into one temporary table (the first step they
fail, and a bitmask of the steps they pass, stored as search_result.step_mask), from which the
flow counts come in one aggregate query and the results in one INSERT ... SELECT: no
per-patient Python loop.
Because each step's pass is stored on its own, the flow for another step order, and how many
people each step costs, come from the stored masks without re-running (recruit.query.flow).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import reduce
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    String,
    Table,
    case,
    cast,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from recruit import __version__
from recruit.bulk_write import insert_rows
from recruit.codelists import (
    Codelist,
    CodelistError,
    CodeSystem,
    available_codelists,
    codelist_directory,
    load_codelist,
    manifest_entry,
)
from recruit.errors import RecruitError
from recruit.models import (
    utcnow,
)
from recruit.query.codes_match import code_matches_by_prefix
from recruit.query.compiler import Compiler
from recruit.query.flow import flow_for_order
from recruit.query.model import RuleSet
from recruit.rules.model import load_rule_set
from recruit.tables import CODELIST, CODES, EXTRACT, PATIENT, PRACTICE, RESULT, RUN, STEP_COUNT, STUDY

# --- files ---------------------------------------------------------------------------------


def load_search(rules_path: str | Path) -> tuple[RuleSet, dict[str, Codelist], str]:
    """The rule set, every codelist it names (loaded and checked), and the file's text."""
    path = Path(rules_path)

    codelists: dict[str, Codelist] = {}

    def known(rule_set: RuleSet) -> dict[str, set[str] | None]:
        directory = codelist_directory(path, rule_set.codelist_directory, path.parent)
        available = set(available_codelists(directory))
        for name in rule_set.codelist_names():
            if name in available:
                codelists[name] = _with_manifest_match(load_codelist(name, directory), directory)
        out: dict[str, set[str] | None] = {name: None for name in available}
        for name, codelist in codelists.items():
            out[name] = {c.category for c in codelist.codes if c.category}
        return out

    rule_set = load_rule_set(path, known_codelists=known)
    return rule_set, codelists, path.read_text(encoding="utf-8")


def _with_manifest_match(codelist: Codelist, directory: Path) -> Codelist:
    """`match: prefix` on a codelist's manifest entry makes all its Read v2 rows match by prefix."""
    try:
        entry = manifest_entry(codelist.name, directory)
    except CodelistError:
        return codelist
    if str(entry.get("match", "exact")).lower() != "prefix":
        return codelist
    codes = tuple(
        replace(code, attrs=MappingProxyType({**code.attrs, "match": "prefix"}))
        if code.system == CodeSystem.READV2 and "match" not in code.attrs
        else code
        for code in codelist.codes
    )
    return replace(codelist, codes=codes)


def run_search(
    engine: Engine,
    rules_path: str | Path,
    index_date: dt.date | None = None,
    practice: str | None = None,
) -> int:
    """Run the rule file against the database (optionally one practice by ODS code); the run id."""
    rule_set, codelists, text = load_search(rules_path)
    if practice is None:
        with engine.connect() as conn:
            if conn.execute(select(PRACTICE.c.id).limit(1)).first() is None:
                # Most likely a mistyped --db, or a load not yet run: say so rather than
                # record a search of no one.
                raise RecruitError(
                    "No practice's records have been loaded into this database yet, so there is no "
                    "one to search. Load an extract first (recruit load FOLDER), or check the "
                    "database given with --db."
                )
    if index_date is None:
        index_date = default_index_date(engine, practice).date
    return run_rule_set(engine, rule_set, codelists, index_date, practice, text)


@dataclass(frozen=True)
class IndexDate:
    """The date a search is run as on, and why that date, in words for the person running it."""

    date: dt.date
    reason: str


def default_index_date(engine: Engine, practice: str | None = None) -> IndexDate:
    """The newest extract date of the practices searched (today when no extract says its date).

    Records cannot know what happened after their extract was taken: searching an extract dated
    three weeks ago as on today would count three weeks the records know nothing of (a look-back
    window ending today, ages a few weeks older than the records say).
    """
    query = (
        select(PRACTICE.c.ods_code, EXTRACT.c.extract_date)
        .select_from(PRACTICE.join(EXTRACT, EXTRACT.c.id == PRACTICE.c.extract_id))
        .where(EXTRACT.c.extract_date.is_not(None))
    )
    if practice is not None:
        query = query.where(func.upper(PRACTICE.c.ods_code) == practice.strip().upper())
    with engine.connect() as conn:
        dated = [(ods, date) for ods, date in conn.execute(query)]
    if not dated:
        return IndexDate(dt.date.today(), "today: no loaded extract says when it was taken")
    newest = max(date for _, date in dated)
    oldest = min(date for _, date in dated)
    if len(dated) == 1:
        return IndexDate(newest, f"the date practice {dated[0][0]}'s extract was taken")
    if oldest == newest:
        return IndexDate(newest, f"the date the {len(dated)} practices' extracts were taken")
    behind = sorted(ods for ods, date in dated if date < newest)
    return IndexDate(
        newest,
        f"the newest extract date of the {len(dated)} practices searched; the extracts of "
        f"{', '.join(behind)} are older (from {oldest}), so they cannot show what happened since",
    )


# --- running ---------------------------------------------------------------------------------


def run_rule_set(
    engine: Engine,
    rule_set: RuleSet,
    codelists: Mapping[str, Codelist],
    index_date: dt.date,
    practice: str | None = None,
    rule_set_text: str | None = None,
) -> int:
    """Run an already loaded rule set; records search_run, step_count and search_result."""
    missing = [name for name in rule_set.codelist_names() if name not in codelists]
    if missing:
        raise RecruitError(f"rule set {rule_set.name!r} needs codelists that were not loaded: {missing}")
    with engine.begin() as conn:
        practice_id = _practice_id(conn, practice)
        study_id = None
        if rule_set.study:
            study_id = conn.execute(select(STUDY.c.id).where(STUDY.c.code == rule_set.study)).scalar()
        run_id = conn.execute(
            insert(RUN)
            .values(
                study_id=study_id,
                rule_set_name=rule_set.name,
                rule_set_version=rule_set.version,
                rule_set_fingerprint=rule_set.fingerprint(),
                rule_set_text=rule_set_text,
                codelist_fingerprints={
                    name: codelists[name].fingerprint for name in rule_set.codelist_names()
                },
                extract_fingerprints=_extract_fingerprints(conn, practice_id),
                steps=[
                    {"index": i, "id": s.id, "kind": s.kind, "reason": s.reason}
                    for i, s in enumerate(rule_set.steps)
                ],
                practice_ods_code=practice,
                index_date=index_date,
                recruit_version=__version__,
                started_at=utcnow(),
                status="running",
            )
            .returning(RUN.c.id)
        ).scalar_one()
    try:
        with engine.connect() as conn:
            undo = _tune_sqlite(conn)
            with conn.begin():
                execute_run(conn, run_id, rule_set, codelists, index_date, practice_id)
            for statement in undo:
                conn.exec_driver_sql(statement)
            conn.commit()
    except Exception as exc:
        with engine.begin() as conn:
            conn.execute(
                update(RUN)
                .where(RUN.c.id == run_id)
                .values(status="failed", error=str(exc)[:2000], finished_at=utcnow())
            )
        raise
    return run_id


def _practice_id(conn: Connection, ods_code: str | None) -> int | None:
    if ods_code is None:
        return None
    found = conn.execute(select(PRACTICE.c.id).where(PRACTICE.c.ods_code == ods_code)).scalar()
    if found is None:
        raise RecruitError(f"No practice with ODS code {ods_code} has been loaded.")
    return found


def _extract_fingerprints(conn: Connection, practice_id: int | None) -> list[str]:
    query = select(EXTRACT.c.fingerprint).join(PRACTICE, PRACTICE.c.extract_id == EXTRACT.c.id).distinct()
    if practice_id is not None:
        query = query.where(PRACTICE.c.id == practice_id)
    return sorted(conn.execute(query).scalars())


def store_codelists(conn: Connection, codelists: Mapping[str, Codelist]) -> dict[str, int]:
    """codelist and codelist_code rows for these lists, reusing a stored list with the same fingerprint."""
    ids: dict[str, int] = {}
    for name, codelist in codelists.items():
        found = conn.execute(
            select(CODELIST.c.id).where(
                CODELIST.c.name == name, CODELIST.c.fingerprint == codelist.fingerprint
            )
        ).scalar()
        if found is None:
            found = conn.execute(
                insert(CODELIST)
                .values(
                    name=name,
                    version=codelist.version or None,
                    fingerprint=codelist.fingerprint,
                    source="\n".join(codelist.sources) or None,
                )
                .returning(CODELIST.c.id)
            ).scalar_one()
            names = ["codelist_id", "code_system", "code", "term", "category", "match_prefix"]
            rows = [
                (
                    found,
                    str(code.system),
                    code.code,
                    (code.term or None) and code.term[:255],
                    code.category,
                    code_matches_by_prefix(code),
                )
                for code in codelist.codes
            ]
            if rows:
                insert_rows(conn, CODES, names, rows)  # thousands of rows: the engine's bulk path
        ids[name] = found
    return ids


def _text(value: str) -> ColumnElement[str]:
    # A typed parameter: PostgreSQL cannot infer the type of a bare parameter in `$1 || x`.
    return cast(literal(value), String)


def _concat(*parts: ColumnElement[str]) -> ColumnElement[str]:
    return reduce(lambda a, b: a.concat(b), parts)


def _json_string(column: ColumnElement[object]) -> ColumnElement[str]:
    escaped: ColumnElement[str] = cast(column, String)
    for old, new in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        escaped = func.replace(escaped, _text(old), _text(new), type_=String)
    return case((column.is_(None), _text("null")), else_=_concat(_text('"'), escaped, _text('"')))


def evidence_json(ev: Table) -> ColumnElement[str]:
    """{"code","date","system","term"} as JSON text built in SQL (keys sorted like JSONText)."""
    return _concat(
        _text('{"code":'),
        _json_string(ev.c.ev_code),
        _text(',"date":'),
        _json_string(ev.c.ev_date),
        _text(',"system":'),
        _json_string(ev.c.ev_system),
        _text(',"term":'),
        _json_string(ev.c.ev_term),
        _text("}"),
    )


def evidence_words(ev: Table) -> ColumnElement[str]:
    """': term (system code) on date', naming the record that decided."""
    return _concat(
        _text(": "),
        func.coalesce(ev.c.ev_term, ev.c.ev_code),
        _text(" ("),
        ev.c.ev_system,
        _text(" "),
        ev.c.ev_code,
        _text(") on "),
        cast(ev.c.ev_date, String),
    )


def execute_run(
    conn: Connection,
    run_id: int,
    rule_set: RuleSet,
    codelists: Mapping[str, Codelist],
    index_date: dt.date,
    practice_id: int | None = None,
) -> None:
    """Look up every atom, then write step counts and results for run_id."""
    if conn.dialect.name == "postgresql":
        # Room to hash and sort in memory; SET LOCAL ends with the transaction.
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{POSTGRES_WORK_MEM}'")
    codelist_ids = store_codelists(conn, {n: codelists[n] for n in rule_set.codelist_names()})
    compiler = Compiler(conn, rule_set, index_date, codelist_ids, codelists, practice_id)
    compiler.prepare([*(s.criterion for s in rule_set.steps), *(c.criterion for c in rule_set.score)])
    passes = _pass_table(compiler)
    _write_step_counts(conn, run_id, rule_set, passes)
    _write_results(conn, run_id, rule_set, compiler, passes)
    conn.execute(update(RUN).where(RUN.c.id == run_id).values(status="finished", finished_at=utcnow()))
    # Not in a `finally`: after a database error the transaction is aborted (PostgreSQL refuses
    # any further statement) and its rollback removes the tables; names never repeat meanwhile.
    compiler.drop()


def _tune_sqlite(conn: Connection) -> list[str]:
    """SQLite settings for one big search, made outside its transaction (temp_store cannot change
    inside one): temporary tables in memory rather than in temporary files, and a bigger page
    cache. Returns the statements that put the connection back as it was."""
    if conn.dialect.name != "sqlite":
        return []
    undo = [
        f"PRAGMA {name} = {int(conn.exec_driver_sql(f'PRAGMA {name}').scalar_one())}"
        for name in ("temp_store", "cache_size")
    ]
    conn.exec_driver_sql("PRAGMA temp_store = MEMORY")
    conn.exec_driver_sql(f"PRAGMA cache_size = {-SQLITE_CACHE_KIB}")
    conn.commit()
    return undo


SQLITE_CACHE_KIB = 256 * 1024
POSTGRES_WORK_MEM = "256MB"


def _pass_table(compiler: Compiler) -> Table:
    """One row per patient searched: first_fail (the first step failed), the step mask and the
    score, from one scan of the patients left-joined to the flags of the atoms."""
    rule_set = compiler.rule_set
    steps = rule_set.steps
    one: ColumnElement[int] = literal_column("1")
    zero: ColumnElement[int] = literal_column("0")
    pass_cols = []
    for step in steps:
        holds = compiler.condition(step.criterion)
        pass_cols.append(
            case((holds, one), else_=zero) if step.kind == "include" else case((holds, zero), else_=one)
        )
    mask = reduce(lambda a, b: a + b, (p * literal_column(str(1 << i)) for i, p in enumerate(pass_cols)))
    first_fail = case(*((p == 0, literal_column(str(i))) for i, p in enumerate(pass_cols)), else_=null())
    if rule_set.score:
        score: ColumnElement[Any] = reduce(
            lambda a, b: a + b,
            (
                case(
                    (compiler.condition(c.criterion), cast(literal_column(repr(float(c.weight))), Float)),
                    else_=0.0,
                )
                for c in rule_set.score
            ),
        )
    else:
        score = null()
    # Which score items applied (bit i: item i), so weights fitted to replies can order a wave
    # later (recruit.waves) without searching again.
    items: ColumnElement[Any] = (
        reduce(
            lambda a, b: a + b,
            (
                case((compiler.condition(c.criterion), literal_column(str(1 << i))), else_=zero)
                for i, c in enumerate(rule_set.score)
            ),
        )
        if rule_set.score
        else null()
    )
    query = (
        select(PATIENT.c.id, PATIENT.c.practice_id, first_fail, mask, score, items)
        .select_from(compiler.patients_from())
        .where(*compiler.patients_where())
    )
    table = compiler.temp_table(
        compiler.key_column(),
        Column("practice_id", Integer),
        Column("first_fail", Integer),
        Column("mask", BigInteger),
        Column("score", Float),
        Column("score_items", BigInteger),
    )
    compiler.fill(table, ["patient_id", "practice_id", "first_fail", "mask", "score", "score_items"], query)
    return table


def _write_step_counts(conn: Connection, run_id: int, rule_set: RuleSet, passes: Table) -> None:
    """Flow counts in one pass: a GROUP BY of the step masks, then arithmetic on that histogram
    (at most a few hundred distinct masks, whatever the number of patients)."""
    rows = conn.execute(select(passes.c.mask, func.count()).group_by(passes.c.mask)).all()
    histogram = {int(mask): int(n) for mask, n in rows}
    flows = flow_for_order(histogram, range(len(rule_set.steps)))
    failing = [
        sum(n for mask, n in histogram.items() if not mask >> i & 1) for i in range(len(rule_set.steps))
    ]
    conn.execute(
        insert(STEP_COUNT),
        [
            {
                "run_id": run_id,
                "step_index": i,
                "step_id": step.id,
                "kind": step.kind,
                "description": step.reason,
                "entering": flow["entering"],
                "kept": flow["kept"],
                "excluded": flow["excluded"],
                "failing_alone": failing[i],
            }
            for i, (step, flow) in enumerate(zip(rule_set.steps, flows, strict=True))
        ],
    )


def _write_results(
    conn: Connection, run_id: int, rule_set: RuleSet, compiler: Compiler, passes: Table
) -> None:
    """search_result rows: the excluded with a plain reason, then those an exclusion step with
    evidence excluded (joined to their evidence: few), then the candidates with their rank."""
    steps = rule_set.steps
    with_evidence = [
        i for i, s in enumerate(steps) if s.kind == "exclude" and compiler.can_have_evidence(s.criterion)
    ]
    columns = ["run_id", "patient_id", "practice_id", "outcome", "excluding_step", "reason", "evidence"]
    columns += ["step_mask", "score", "rank", "score_items"]
    run: ColumnElement[int] = literal_column(str(int(run_id)))
    failed = passes.c.first_fail

    def plain_reason(i: int) -> ColumnElement[str]:
        # An inclusion's reason says what is required, so say it was not met.
        return _text(steps[i].reason if steps[i].kind == "exclude" else f"Not met: {steps[i].reason}")

    excluding_step = case(*((failed == i, _text(s.id)) for i, s in enumerate(steps)), else_=null())
    reason = case(*((failed == i, plain_reason(i)) for i in range(len(steps))), else_=null())
    plain = select(
        run,
        passes.c.patient_id,
        passes.c.practice_id,
        _text("excluded"),
        excluding_step,
        reason,
        null(),
        passes.c.mask,
        passes.c.score,
        null(),
        passes.c.score_items,
    ).where(failed.is_not(None))
    if with_evidence:
        plain = plain.where(failed.not_in(with_evidence))
        evidenced = compiler.temp_table(compiler.key_column(), Column("step", Integer))
        compiler.fill(
            evidenced,
            ["patient_id", "step"],
            select(passes.c.patient_id, failed).where(failed.in_(with_evidence)),
        )
    conn.execute(RESULT.insert().from_select(columns, plain))
    for i in with_evidence:
        step = steps[i]
        among = compiler.patient_set(select(evidenced.c.patient_id).where(evidenced.c.step == i))
        # Everyone an exclusion step excluded meets its criterion.
        ev = compiler.evidence(step.criterion, among, holds_for_all=True)
        assert ev is not None
        text = case(
            (ev.c.patient_id.is_not(None), _concat(_text(step.reason), evidence_words(ev))),
            else_=plain_reason(i),
        )
        ev_json = case((ev.c.patient_id.is_not(None), evidence_json(ev)), else_=null())
        query = (
            select(
                run,
                passes.c.patient_id,
                passes.c.practice_id,
                _text("excluded"),
                _text(step.id),
                text,
                ev_json,
                passes.c.mask,
                passes.c.score,
                null(),
                passes.c.score_items,
            )
            .select_from(among.join(passes, passes.c.patient_id == among.c.patient_id))
            .outerjoin(ev, ev.c.patient_id == among.c.patient_id)
        )
        conn.execute(RESULT.insert().from_select(columns, query))
    # Only the candidates are sorted for their rank (ties share a rank).
    candidates = select(
        run,
        passes.c.patient_id,
        passes.c.practice_id,
        _text("candidate"),
        null(),
        null(),
        null(),
        passes.c.mask,
        passes.c.score,
        func.rank().over(order_by=passes.c.score.desc()),
        passes.c.score_items,
    ).where(failed.is_(None))
    conn.execute(RESULT.insert().from_select(columns, candidates))
