"""Compile rule-set criteria to SQLAlchemy Core and materialise each as a set of patients.

Set-based by design: every criterion becomes one INSERT ... SELECT into a temporary table of
patient ids (primary key), built once per run and shared by every step, definition and score
component that uses it. Codes are joined from codelist_code on the (code_system, code, date,
patient_id) indexes of the record tables, and dates are compared with bound values worked out in
Python (recruit.query.dates), so the same statements run on SQLite, PostgreSQL and DuckDB.

Evidence (the code, term and date that made a criterion hold) is a second, lazily built table per
criterion, because only exclusion steps need it.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence

from sqlalchemy import (
    Column,
    Connection,
    Date,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    and_,
    case,
    distinct,
    false,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from recruit.codelists import Code, Codelist, CodeSystem
from recruit.errors import RecruitError
from recruit.models import ClinicalEvent, CodelistCode, Invitation, MedicationIssue, Patient, Study
from recruit.query.dates import months_before, window_bounds, years_before
from recruit.rules.model import Criterion, LatestCodeAmong, RuleSet

EVENT = ClinicalEvent.__table__
MEDICATION = MedicationIssue.__table__
CODES = CodelistCode.__table__
PATIENT = Patient.__table__
INVITATION = Invitation.__table__
STUDY = Study.__table__

EVIDENCE_KINDS = {"has_code", "medication_count", "latest_code_among", "likely_in_work"}
_run_counter = itertools.count(1)


class Compiler:
    """Materialises criteria for one run on one connection (temporary tables are per session)."""

    def __init__(
        self,
        conn: Connection,
        rule_set: RuleSet,
        index_date: dt.date,
        codelist_ids: Mapping[str, int],
        codelists: Mapping[str, Codelist],
        practice_id: int | None = None,
    ) -> None:
        self.conn = conn
        self.rule_set = rule_set
        self.index_date = index_date
        self.codelist_ids = dict(codelist_ids)
        self.codelists = dict(codelists)
        self.practice_id = practice_id
        self.meta = MetaData()
        self.prefix = f"rq{next(_run_counter)}_"
        self.tables: list[Table] = []
        self._sets: dict[str, Table] = {}
        self._evidence: dict[str, Table] = {}
        self._study_ids: dict[str, int | None] = {}
        self.population = self._make_population()

    # --- temporary tables ----------------------------------------------------------------

    def temp_table(self, *columns: Column) -> Table:
        table = Table(f"{self.prefix}{len(self.tables)}", self.meta, *columns, prefixes=["TEMPORARY"])
        table.create(self.conn)
        self.tables.append(table)
        return table

    def patient_set(self, query: Select) -> Table:
        table = self.temp_table(Column("patient_id", Integer, primary_key=True, autoincrement=False))
        self.fill(table, ["patient_id"], query)
        return table

    def fill(self, table: Table, columns: Sequence[str], query: Select) -> None:
        """INSERT ... SELECT into a temporary table, then give PostgreSQL its statistics (autovacuum
        never analyses temporary tables, and without them the planner guesses their size)."""
        self.conn.execute(table.insert().from_select(list(columns), query))
        if self.conn.dialect.name == "postgresql":
            self.conn.exec_driver_sql(f"ANALYZE {table.name}")

    def drop(self) -> None:
        for table in reversed(self.tables):
            table.drop(self.conn)
        self.tables.clear()

    def _make_population(self) -> Table:
        table = self.temp_table(
            Column("patient_id", Integer, primary_key=True, autoincrement=False),
            Column("practice_id", Integer, nullable=False),
        )
        query = select(PATIENT.c.id, PATIENT.c.practice_id)
        if self.practice_id is not None:
            query = query.where(PATIENT.c.practice_id == self.practice_id)
        self.fill(table, ["patient_id", "practice_id"], query)
        return table

    # --- patient sets ----------------------------------------------------------------------

    def resolve(self, criterion: Criterion) -> Criterion:
        while criterion.kind == "ref":
            criterion = self.rule_set.definitions[criterion.ref]  # type: ignore[index]
        return criterion

    def key(self, criterion: Criterion) -> str:
        return self.resolve(criterion).model_dump_json(by_alias=True, exclude_none=True)

    def patients(self, criterion: Criterion) -> Table:
        """The temporary table of patients (in the population) for whom the criterion holds."""
        criterion = self.resolve(criterion)
        key = self.key(criterion)
        if key not in self._sets:
            self._sets[key] = self.patient_set(self._patients_query(criterion))
        return self._sets[key]

    def _patients_query(self, criterion: Criterion) -> Select:
        pop = self.population
        kind, body, index = criterion.kind, criterion.body, self.index_date
        if kind == "registered":
            start_by = months_before(index, body.for_at_least_months)
            return (
                select(pop.c.patient_id)
                .join(PATIENT, PATIENT.c.id == pop.c.patient_id)
                .where(
                    PATIENT.c.registration_start.is_not(None),
                    PATIENT.c.registration_start <= start_by,
                    or_(PATIENT.c.registration_end.is_(None), PATIENT.c.registration_end >= index),
                )
            )
        if kind == "alive":
            return (
                select(pop.c.patient_id)
                .join(PATIENT, PATIENT.c.id == pop.c.patient_id)
                .where(or_(PATIENT.c.date_of_death.is_(None), PATIENT.c.date_of_death > index))
            )
        if kind == "age_between":
            return (
                select(pop.c.patient_id)
                .join(PATIENT, PATIENT.c.id == pop.c.patient_id)
                .where(
                    PATIENT.c.date_of_birth <= years_before(index, body.min),
                    PATIENT.c.date_of_birth > years_before(index, body.max + 1),
                )
            )
        if kind == "has_code":
            start, end = window_bounds(body.window, index)
            if body.occurrence == "any":
                return self._matches(EVENT, body.names, body.categories, start, end, patient_only=True)
            m = self._matches(EVENT, body.names, body.categories, None, index).subquery()
            edge = func.min(m.c.date) if body.occurrence == "first" else func.max(m.c.date)
            having = [edge <= end] + ([edge >= start] if start is not None else [])
            return select(m.c.patient_id).group_by(m.c.patient_id).having(and_(*having))
        if kind == "medication_count":
            start, end = window_bounds(body.window, index)
            m = self._matches(
                MEDICATION, body.names, body.categories, start, end, course=body.course
            ).subquery()
            having = [func.count() >= body.min_issues]
            if body.min_distinct_months is not None:
                month = func.extract("year", m.c.date) * 12 + func.extract("month", m.c.date)
                having.append(func.count(distinct(month)) >= body.min_distinct_months)
            return select(m.c.patient_id).group_by(m.c.patient_id).having(and_(*having))
        if kind in ("latest_code_among", "likely_in_work"):
            latest = body if kind == "latest_code_among" else body.as_latest()
            deciding = self._deciding(latest)
            held = select(deciding.c.patient_id).where(deciding.c.status.in_(latest.status_in))
            if not latest.when_none:
                return held
            none = (
                select(pop.c.patient_id)
                .outerjoin(deciding, deciding.c.patient_id == pop.c.patient_id)
                .where(deciding.c.patient_id.is_(None))
            )
            return union(held, none)
        if kind == "already_invited":
            study_id = self.study_id(body.study or self.rule_set.study)
            return self._invited(INVITATION.c.study_id == (study_id if study_id is not None else -1))
        if kind == "do_not_contact":
            asked = or_(INVITATION.c.status == "do_not_contact", INVITATION.c.reply == "do_not_contact")
            if not body.any_study:
                study_id = self.study_id(body.study or self.rule_set.study)
                asked = and_(asked, INVITATION.c.study_id == (study_id if study_id is not None else -1))
            return self._invited(asked)
        if kind == "all_":
            tables = [t.alias(f"a{i}") for i, t in enumerate(self.patients(child) for child in body)]
            query = select(tables[0].c.patient_id)
            for table in tables[1:]:
                query = query.join(table, table.c.patient_id == tables[0].c.patient_id)
            return query
        if kind == "any_":
            return union(*(select(self.patients(child).c.patient_id) for child in body))
        if kind == "not_":
            inner = self.patients(body)
            return (
                select(pop.c.patient_id)
                .outerjoin(inner, inner.c.patient_id == pop.c.patient_id)
                .where(inner.c.patient_id.is_(None))
            )
        raise RecruitError(f"recruit cannot compile a {kind!r} criterion")  # pragma: no cover

    def _invited(self, condition: ColumnElement[bool]) -> Select:
        """Invitations match by patient or by NHS number (the key across re-registrations)."""
        pop = self.population
        by_patient = (
            select(pop.c.patient_id)
            .join(INVITATION, INVITATION.c.patient_id == pop.c.patient_id)
            .where(condition)
        )
        by_number = (
            select(pop.c.patient_id)
            .join(PATIENT, PATIENT.c.id == pop.c.patient_id)
            .join(INVITATION, INVITATION.c.nhs_number == PATIENT.c.nhs_number)
            .where(condition)
        )
        return union(by_patient, by_number)

    def study_id(self, code: str | None) -> int | None:
        if code is None:
            return None
        if code not in self._study_ids:
            self._study_ids[code] = self.conn.execute(select(STUDY.c.id).where(STUDY.c.code == code)).scalar()
        return self._study_ids[code]

    # --- coded records ---------------------------------------------------------------------

    def _matches(
        self,
        records: Table,
        names: Sequence[str],
        categories: Sequence[str] | None,
        start: dt.date | None,
        end: dt.date,
        course: str = "any",
        patients: Table | None = None,
        patient_only: bool = False,
    ) -> Select:
        """Distinct records (id, patient_id, date, system, code, term) with a code from the lists,
        of patients in the population (or in `patients`, a subset of it)."""
        date_col = records.c.event_date if records is EVENT else records.c.issue_date
        ids = [self.codelist_ids[name] for name in names]
        pop = self.population if patients is None else patients
        where: list[ColumnElement[bool]] = [CODES.c.codelist_id.in_(ids), date_col <= end]
        if start is not None:
            where.append(date_col >= start)
        if categories:
            where.append(CODES.c.category.in_(list(categories)))
        if course != "any":
            where.append(records.c.course == course)
        columns = (
            (records.c.patient_id,)
            if patient_only
            else (
                records.c.id,
                records.c.patient_id,
                date_col.label("date"),
                records.c.code_system.label("system"),
                records.c.code,
                records.c.term,
            )
        )
        # Every patient is in the population unless one practice is searched: skip that join.
        restrict = patients is not None or self.practice_id is not None
        exact = (
            select(*columns)
            .select_from(records)
            .join(CODES, and_(CODES.c.code_system == records.c.code_system, CODES.c.code == records.c.code))
            .where(*where, CODES.c.match_prefix == false())
        )
        if restrict:
            exact = exact.join(pop, pop.c.patient_id == records.c.patient_id)
        if not any(self._has_prefix_rows(name) for name in names):
            # One list holds a code once, so only several lists (or patient ids) can repeat rows.
            return exact.distinct() if patient_only or len(ids) > 1 else exact
        stem = func.rtrim(CODES.c.code, ".")
        prefixed = (
            select(*columns)
            .select_from(records)
            .join(
                CODES,
                and_(
                    CODES.c.code_system == records.c.code_system,
                    func.substr(records.c.code, 1, func.length(stem)) == stem,
                ),
            )
            .where(*where, CODES.c.match_prefix == true())
        )
        if restrict:
            prefixed = prefixed.join(pop, pop.c.patient_id == records.c.patient_id)
        return union(exact, prefixed)

    def _has_prefix_rows(self, name: str) -> bool:
        codelist = self.codelists.get(name)
        return codelist is not None and any(code_matches_by_prefix(code) for code in codelist.codes)

    def _deciding(self, latest: LatestCodeAmong) -> Table:
        """Per patient, the most recent code among the sources in the window (and its status)."""
        key = "deciding:" + latest.model_dump_json(include={"sources", "window"})
        cached = self._sets.get(key)
        if cached is not None:
            return cached
        start, end = window_bounds(latest.window, self.index_date)
        parts = []
        for priority, source in enumerate(latest.sources):
            m = self._matches(EVENT, [source.codelist], source.categories, start, end).subquery()
            parts.append(
                select(
                    m.c.patient_id,
                    m.c.date,
                    m.c.system,
                    m.c.code,
                    m.c.term,
                    literal(priority).label("priority"),
                    literal(source.status).label("status"),
                )
            )
        rows = union_all(*parts).subquery()
        ranked = select(
            rows,
            func.row_number()
            .over(
                partition_by=rows.c.patient_id,
                order_by=(
                    rows.c.date.desc(),
                    rows.c.priority,
                    rows.c.system,
                    rows.c.code,
                    func.coalesce(rows.c.term, ""),
                ),
            )
            .label("rn"),
        ).subquery()
        table = self.temp_table(
            Column("patient_id", Integer, primary_key=True, autoincrement=False),
            Column("ev_date", Date),
            Column("ev_system", String(10)),
            Column("ev_code", String(20)),
            Column("ev_term", String(255)),
            Column("status", String(100)),
        )
        query = select(
            ranked.c.patient_id, ranked.c.date, ranked.c.system, ranked.c.code, ranked.c.term, ranked.c.status
        ).where(ranked.c.rn == 1)
        self.fill(table, ["patient_id", "ev_date", "ev_system", "ev_code", "ev_term", "status"], query)
        self._sets[key] = table
        return table

    # --- evidence --------------------------------------------------------------------------

    def can_have_evidence(self, criterion: Criterion) -> bool:
        criterion = self.resolve(criterion)
        if criterion.kind in EVIDENCE_KINDS:
            return True
        if criterion.kind in ("all_", "any_"):
            return any(self.can_have_evidence(child) for child in criterion.body)
        return False

    def evidence(self, criterion: Criterion, among: Table) -> Table | None:
        """patient_id -> the record that made the criterion hold, for the patients in `among`
        it holds for (only those a step excluded need evidence, so only they are looked up)."""
        criterion = self.resolve(criterion)
        if not self.can_have_evidence(criterion):
            return None
        key = f"{among.name}:{self.key(criterion)}"
        if key not in self._evidence:
            self._evidence[key] = self._evidence_table(criterion, among)
        return self._evidence[key]

    def _held_among(self, criterion: Criterion, among: Table) -> Table:
        """Patients in `among` for whom the criterion holds."""
        held = self.patients(criterion)
        return self.patient_set(
            select(among.c.patient_id).join(held, held.c.patient_id == among.c.patient_id)
        )

    def _evidence_table(self, criterion: Criterion, among: Table) -> Table:
        kind, body, index = criterion.kind, criterion.body, self.index_date
        columns = ["patient_id", "ev_date", "ev_system", "ev_code", "ev_term"]
        held = self._held_among(criterion, among)
        if kind in ("latest_code_among", "likely_in_work"):
            latest = body if kind == "latest_code_among" else body.as_latest()
            deciding = self._deciding(latest)
            query = select(
                deciding.c.patient_id,
                deciding.c.ev_date,
                deciding.c.ev_system,
                deciding.c.ev_code,
                deciding.c.ev_term,
            ).join(held, held.c.patient_id == deciding.c.patient_id)
        elif kind in ("has_code", "medication_count"):
            start, end = window_bounds(body.window, index)
            records = EVENT if kind == "has_code" else MEDICATION
            course = body.course if kind == "medication_count" else "any"
            newest_first = True
            if kind == "has_code" and body.occurrence != "any":
                newest_first = body.occurrence == "last"
                start = None
            m = self._matches(records, body.names, body.categories, start, end, course, patients=held)
            m = m.subquery()
            ranked = select(
                m,
                func.row_number()
                .over(
                    partition_by=m.c.patient_id,
                    order_by=(
                        m.c.date.desc() if newest_first else m.c.date.asc(),
                        m.c.system,
                        m.c.code,
                        func.coalesce(m.c.term, ""),
                    ),
                )
                .label("rn"),
            ).subquery()
            query = select(
                ranked.c.patient_id, ranked.c.date, ranked.c.system, ranked.c.code, ranked.c.term
            ).where(ranked.c.rn == 1)
        else:  # all / any: the first child, in file order, that holds and has evidence
            found = [t for t in (self.evidence(child, held) for child in body) if t is not None]
            children = [t.alias(f"e{i}") for i, t in enumerate(found)]
            query = select(held.c.patient_id)
            for table in children:
                query = query.outerjoin(table, table.c.patient_id == held.c.patient_id)
            picked = []
            for name in columns[1:]:
                whens = [(t.c.patient_id.is_not(None), t.c[name]) for t in children]
                picked.append(case(*whens, else_=null()).label(name))
            query = query.add_columns(*picked).where(or_(*(t.c.patient_id.is_not(None) for t in children)))
        table = self.temp_table(
            Column("patient_id", Integer, primary_key=True, autoincrement=False),
            Column("ev_date", Date),
            Column("ev_system", String(10)),
            Column("ev_code", String(20)),
            Column("ev_term", String(255)),
        )
        self.fill(table, columns, query)
        return table


def code_matches_by_prefix(code: Code) -> bool:
    """A Read v2 row matches by prefix (its code without trailing dots, so N24.. matches N2411)
    when its `match` column says `prefix`. Read v2 is the only hierarchy spelt out in its codes."""
    return code.system == CodeSystem.READV2 and code.attrs.get("match", "").strip().lower() == "prefix"
