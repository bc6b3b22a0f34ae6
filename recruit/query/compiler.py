"""Compile rule-set criteria to SQLAlchemy Core: record look-ups once, then one pass over patients.

Set-based by design, and shaped so that each patient is visited once, whatever the number of
steps:

- Criteria about coded records (has_code, medication_count, latest_code_among, likely_in_work,
  already_invited, do_not_contact) are "atoms": each is one query finding the few patients it
  holds for, from the (code_system, code, date, patient_id) indexes of the record tables.
- All atoms are gathered in one statement into a flags table: one row per patient any atom
  holds for, one bit per atom (a SUM of distinct powers of two, GROUP BY over a UNION ALL of
  the atom queries).
- Every criterion is then a plain boolean expression over a patient's row and their flags row
  (registered, alive, nhs_number_verified and age read the patient's columns; all / any / not
  combine expressions),
  so a step's pass or fail, the step mask and the score come from a single scan of patients
  left-joined to the flags (run.py).

Dates are compared with bound values worked out in Python (recruit.query.dates), so the same
statements run on SQLite, PostgreSQL and DuckDB.

Evidence (the code, term and date that made a criterion hold) is looked up lazily, only for the
patients an exclusion step excluded.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial

from sqlalchemy import (
    Column,
    CompoundSelect,
    Connection,
    Date,
    FromClause,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    and_,
    case,
    distinct,
    func,
    literal,
    literal_column,
    not_,
    null,
    or_,
    select,
    true,
    union,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from recruit.codelists import Codelist
from recruit.load.status import EVENT_STATUS_WHEN_NULL, MEDICATION_STATUS_WHEN_NULL
from recruit.query.codes_match import has_prefix_rows, records_on_lists
from recruit.query.dates import months_before, window_bounds, years_before
from recruit.query.model import (
    AgeBetween,
    Alive,
    AllOf,
    AlreadyInvited,
    AnyOf,
    CodeOnDays,
    DoNotContact,
    HasCode,
    Kind,
    KindTable,
    LatestCodeAmong,
    LikelyInWork,
    MedicationCount,
    NhsNumberVerified,
    Not,
    Ref,
    Registered,
    RuleSet,
)
from recruit.tables import EVENT, INVITATION, MEDICATION, PATIENT, STUDY

_run_counter = itertools.count(1)
FLAG_BITS = 30  # atoms per flags column
Query = Select | CompoundSelect  # a query of rows (UNION where codes match two ways)


class Compiler:
    """Compiles criteria for one run on one connection (temporary tables are per session)."""

    def __init__(
        self,
        conn: Connection,
        rule_set: RuleSet,
        index_date: dt.date,
        codelist_ids: Mapping[str, int],
        codelists: Mapping[str, Codelist],
        practice_id: int | None = None,
        among: Select | None = None,
    ) -> None:
        """practice_id: search one practice's patients; among: only these patients (a query of
        patient ids: review explains a run's candidates). Either makes every record look-up join
        that population, so the work grows with it, not with everyone loaded."""
        self.conn = conn
        self.dialect = conn.dialect.name
        self.rule_set = rule_set
        self.index_date = index_date
        self.codelist_ids = dict(codelist_ids)
        self.codelists = dict(codelists)
        self.practice_id = practice_id
        self.meta = MetaData()
        self.prefix = f"rq{next(_run_counter)}_"
        self.tables: list[Table] = []
        self._atoms: dict[str, Query] = {}  # key -> query of the patients the atom holds for
        self._deciding: dict[str, Table] = {}
        self._deciding_windows: list[tuple[str, dt.date | None, dt.date, Table]] = []
        self._evidence: dict[str, Table] = {}
        self._study_ids: dict[str, int | None] = {}
        self._latest: list[LatestCodeAmong] = []  # met while collecting, tables made in prepare()
        self._flag_bits: dict[str, tuple[Column, int]] | None = None  # None while collecting
        self.flags: Table | None = None
        if among is None and practice_id is not None:
            among = select(PATIENT.c.id).where(PATIENT.c.practice_id == practice_id)
        self.population = self.patient_set(among) if among is not None else None

    # --- temporary tables ----------------------------------------------------------------

    def temp_table(self, *columns: Column) -> Table:
        table = Table(f"{self.prefix}{len(self.tables)}", self.meta, *columns, prefixes=["TEMPORARY"])
        table.create(self.conn)
        self.tables.append(table)
        return table

    def key_column(self, name: str = "patient_id") -> Column:
        """A temporary table's patient key: a primary key where it speeds look-ups (SQLite's rowid,
        PostgreSQL's index); DuckDB joins by hashing and would only pay to build an index."""
        return Column(name, Integer, primary_key=self.dialect != "duckdb", autoincrement=False)

    def patient_set(self, query: Select) -> Table:
        table = self.temp_table(self.key_column())
        self.fill(table, ["patient_id"], query)
        return table

    def fill(self, table: Table, columns: Sequence[str], query: Select) -> None:
        """INSERT ... SELECT into a temporary table, then give PostgreSQL its statistics (autovacuum
        never analyses temporary tables, and without them the planner guesses their size)."""
        self.conn.execute(table.insert().from_select(list(columns), query))
        if self.dialect == "postgresql":
            self.conn.exec_driver_sql(f"ANALYZE {table.name}")

    def drop(self) -> None:
        for table in reversed(self.tables):
            table.drop(self.conn)
        self.tables.clear()

    # --- criteria ----------------------------------------------------------------------------

    def resolve(self, criterion: Kind) -> Kind:
        return self.rule_set.resolve(criterion)

    def key(self, criterion: Kind) -> str:
        return self.resolve(criterion).file_json()

    def prepare(self, criteria: Iterable[Kind]) -> None:
        """Find every atom the criteria use and gather them into the flags table (one statement).

        The criteria are compiled once with every atom standing in as true, which registers the
        atoms and the latest-code tables they read; condition() then compiles them for real."""
        criteria = list(criteria)
        for criterion in criteria:
            self.condition(criterion)
        # Widest windows first, so a narrower window's deciding records come from a wider one's.
        for latest in sorted(self._latest, key=self._window_start):
            deciding = self.deciding_table(latest)
            self._atom(self._held_key(latest), partial(self._latest_held, deciding, latest))
            if latest.when_none:
                self._atom(self._any_key(latest), partial(select, deciding.c.patient_id))
        self._flag_bits = {}
        if not self._atoms:
            return
        keys = list(self._atoms)
        # Each atom is one bit: a patient's flags are the sum of the bits of the atoms that hold
        # for them. Every atom query yields a patient at most once (DISTINCT, GROUP BY, UNION or
        # a table keyed by patient), so the sum is their bitwise OR; one SUM per word is much
        # cheaper than a MAX(CASE ...) per atom. 30 bits a word keeps every sum an INTEGER on
        # each engine (PostgreSQL widens a SUM of BIGINT to NUMERIC).
        words = [f"f{w}" for w in range((len(keys) + FLAG_BITS - 1) // FLAG_BITS)]
        bits = [(words[k // FLAG_BITS], 1 << k % FLAG_BITS) for k in range(len(keys))]
        parts = [
            select(
                self._atoms[key].subquery(f"atom{k}").c.patient_id,
                *(literal_column(str(bit if name == word else 0)).label(name) for name in words),
            )
            for k, (key, (word, bit)) in enumerate(zip(keys, bits, strict=True))
        ]
        atoms = union_all(*parts).subquery("atoms")
        query = select(atoms.c.patient_id, *(func.sum(atoms.c[name]) for name in words))
        self.flags = self.temp_table(self.key_column(), *(Column(name, Integer) for name in words))
        self.fill(self.flags, ["patient_id", *words], query.group_by(atoms.c.patient_id))
        self._flag_bits = {
            key: (self.flags.c[word], bit) for key, (word, bit) in zip(keys, bits, strict=True)
        }

    def atom(self, criterion: Kind, make: Callable[[], Query]) -> ColumnElement[bool]:
        """A criterion about coded records: one query of the patients it holds for (made once,
        while collecting), read back as its bit of the flags table."""
        key = self.key(criterion)
        self._atom(key, make)
        return self._flag(key)

    def latest_condition(self, latest: LatestCodeAmong) -> ColumnElement[bool]:
        """Whether the most recent code among the sources has one of the statuses."""
        if self._flag_bits is None:
            self._latest.append(latest)
            return true()
        held = self._flag(self._held_key(latest))
        if not latest.when_none:
            return held
        return or_(held, not_(self._flag(self._any_key(latest))))

    def _window_start(self, latest: LatestCodeAmong) -> dt.date:
        start, _ = window_bounds(latest.window, self.index_date)
        return start or dt.date.min

    def _atom(self, key: str, make: Callable[[], Query]) -> None:
        if key not in self._atoms:
            self._atoms[key] = make()

    def _held_key(self, latest: LatestCodeAmong) -> str:
        return "held:" + latest.model_dump_json(include={"sources", "window", "status_in"})

    def _any_key(self, latest: LatestCodeAmong) -> str:
        return "any:" + latest.model_dump_json(include={"sources", "window"})

    def _latest_held(self, deciding: Table, latest: LatestCodeAmong) -> Select:
        return select(deciding.c.patient_id).where(deciding.c.status.in_(latest.status_in))

    def _flag(self, key: str) -> ColumnElement[bool]:
        if self._flag_bits is None:
            return true()  # collecting: the atom stands in as true
        column, bit = self._flag_bits[key]
        bits: ColumnElement[int] = literal_column(str(bit))
        return func.coalesce(column, literal_column("0")).op("&")(bits) == bits

    def condition(self, criterion: Kind) -> ColumnElement[bool]:
        """Whether the criterion holds, over PATIENT and the flags table (never NULL)."""
        return CONDITION(self.resolve(criterion), self)

    def patients_from(self) -> FromClause:
        """Every patient searched, with their flags: the FROM that condition() expressions read."""
        joined: FromClause = PATIENT
        if self.flags is not None:
            joined = joined.outerjoin(self.flags, self.flags.c.patient_id == PATIENT.c.id)
        return joined

    def patients_where(self) -> list[ColumnElement[bool]]:
        return [] if self.practice_id is None else [PATIENT.c.practice_id == self.practice_id]

    # --- atoms -------------------------------------------------------------------------------

    def _invited(self, condition: ColumnElement[bool]) -> Query:
        """Invitations match by patient or by NHS number (the key across re-registrations)."""
        by_patient = select(PATIENT.c.id.label("patient_id")).join(
            INVITATION, INVITATION.c.patient_id == PATIENT.c.id
        )
        by_number = select(PATIENT.c.id.label("patient_id")).join(
            INVITATION, INVITATION.c.nhs_number == PATIENT.c.nhs_number
        )
        if self.population is not None:
            pop = self.population
            by_patient = by_patient.join(pop, pop.c.patient_id == PATIENT.c.id)
            by_number = by_number.join(pop, pop.c.patient_id == PATIENT.c.id)
        return union(by_patient.where(condition), by_number.where(condition))

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
        statuses: Sequence[str] | None = None,
    ) -> Query:
        """Distinct records (id, patient_id, date, system, code, term) with a code from the lists,
        of the patients searched (or of `patients`, a subset of them), and with one of
        `statuses` when given (a record with no status counts as recorded / unknown)."""
        date_col = records.c.event_date if records is EVENT else records.c.issue_date
        ids = [self.codelist_ids[name] for name in names]
        pop = self.population if patients is None else patients
        where: list[ColumnElement[bool]] = [date_col <= end]
        if start is not None:
            where.append(date_col >= start)
        if course != "any":
            where.append(records.c.course == course)
        if statuses is not None:
            when_null = EVENT_STATUS_WHEN_NULL if records is EVENT else MEDICATION_STATUS_WHEN_NULL
            where.append(func.coalesce(records.c.status, when_null).in_(list(statuses)))
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
        ways = (False, True) if any(self._has_prefix_rows(name) for name in names) else (False,)
        parts = []
        for by_prefix in ways:
            part = records_on_lists(records, columns, ids, by_prefix=by_prefix, categories=categories)
            part = part.where(*where)
            if pop is not None:
                part = part.join(pop, pop.c.patient_id == records.c.patient_id)
            parts.append(part)
        if len(parts) == 1:
            # One list holds a code once, so only several lists (or patient ids) can repeat rows.
            return parts[0].distinct() if patient_only or len(ids) > 1 else parts[0]
        return union(*parts)

    def _has_prefix_rows(self, name: str) -> bool:
        return has_prefix_rows(self.codelists.get(name))

    def deciding_table(self, latest: LatestCodeAmong) -> Table:
        """Per patient, the most recent code among the sources in the window (and its status)."""
        key = latest.model_dump_json(include={"sources", "window"})
        cached = self._deciding.get(key)
        if cached is not None:
            return cached
        start, end = window_bounds(latest.window, self.index_date)
        sources = latest.model_dump_json(include={"sources"})
        for other_sources, other_start, other_end, wider in self._deciding_windows:
            if (
                other_sources == sources
                and other_end == end
                and (other_start or dt.date.min) <= (start or dt.date.min)
            ):
                # Same sources, same end, a wider window: its most recent record is this window's
                # most recent record when it falls inside this window; otherwise there is none.
                table = self._deciding_columns()
                query = select(*wider.c)
                if start is not None:
                    query = query.where(wider.c.ev_date >= start)
                self.fill(table, [c.name for c in wider.c], query)
                self._deciding[key] = table
                return table
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
        table = self._deciding_columns()
        query = select(
            ranked.c.patient_id, ranked.c.date, ranked.c.system, ranked.c.code, ranked.c.term, ranked.c.status
        ).where(ranked.c.rn == 1)
        self.fill(table, ["patient_id", "ev_date", "ev_system", "ev_code", "ev_term", "status"], query)
        self._deciding[key] = table
        self._deciding_windows.append((sources, start, end, table))
        return table

    def _deciding_columns(self) -> Table:
        return self.temp_table(
            self.key_column(),
            Column("ev_date", Date),
            Column("ev_system", String(10)),
            Column("ev_code", String(20)),
            Column("ev_term", String(255)),
            Column("status", String(100)),
        )

    # --- evidence --------------------------------------------------------------------------

    def can_have_evidence(self, criterion: Kind) -> bool:
        return EVIDENCE(self.resolve(criterion), self) is not None

    def evidence(self, criterion: Kind, among: Table, holds_for_all: bool = False) -> Table | None:
        """patient_id -> the record that made the criterion hold, for the patients in `among`
        it holds for (only those a step excluded need evidence, so only they are looked up).
        holds_for_all: the criterion is known to hold for everyone in `among`."""
        criterion = self.resolve(criterion)
        build = EVIDENCE(criterion, self)
        if build is None:
            return None
        key = f"{among.name}:{self.key(criterion)}"
        if key not in self._evidence:
            held = among if holds_for_all else self.held_among(criterion, among)
            table = self.temp_table(
                self.key_column(),
                Column("ev_date", Date),
                Column("ev_system", String(10)),
                Column("ev_code", String(20)),
                Column("ev_term", String(255)),
            )
            self.fill(table, list(EVIDENCE_COLUMNS), build(held))
            self._evidence[key] = table
        return self._evidence[key]

    def held_among(self, criterion: Kind, among: Table) -> Table:
        """Patients in `among` for whom the criterion holds. Outer joins, though every patient in
        `among` has a patient row: SQLite then keeps `among` (few) as the outer loop."""
        joined = among.outerjoin(PATIENT, PATIENT.c.id == among.c.patient_id)
        if self.flags is not None:
            joined = joined.outerjoin(self.flags, self.flags.c.patient_id == among.c.patient_id)
        query = select(among.c.patient_id).select_from(joined).where(self.condition(criterion))
        return self.patient_set(query)

    def newest_record(
        self,
        records: Table,
        settings: HasCode | CodeOnDays | MedicationCount,
        held: Table,
        newest_first: bool = True,
        whole_history: bool = False,
    ) -> Select:
        """Each held patient's newest (or oldest) record with a code from the lists in the window
        (up to the index date only, with whole_history): the evidence of a code criterion."""
        start, end = window_bounds(settings.window, self.index_date)
        m = self._matches(
            records,
            settings.names,
            settings.categories,
            None if whole_history else start,
            end,
            settings.course if isinstance(settings, MedicationCount) else "any",
            patients=held,
            statuses=settings.statuses,
        ).subquery()
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
        return select(
            ranked.c.patient_id, ranked.c.date, ranked.c.system, ranked.c.code, ranked.c.term
        ).where(ranked.c.rn == 1)


EVIDENCE_COLUMNS = ("patient_id", "ev_date", "ev_system", "ev_code", "ev_term")

# --- the compiler's form of each criterion kind ---------------------------------------------------
#
# CONDITION: the boolean expression over PATIENT and the flags table. Criteria about coded records
# go through compiler.atom (one query of the patients they hold for, gathered into the flags).
# EVIDENCE: None if the criterion can name no record, else a function of the patients it holds
# for giving each one's deciding record (EVIDENCE_COLUMNS).

CONDITION: KindTable[ColumnElement[bool]] = KindTable("The SQL compiler")
Evidence = Callable[[Table], Select] | None
EVIDENCE: KindTable[Evidence] = KindTable("The SQL compiler's evidence")


@CONDITION.register(Registered)
def _registered(c: Registered, compiler: Compiler) -> ColumnElement[bool]:
    index = compiler.index_date
    start_by = months_before(index, c.for_at_least_months)
    start_ok = and_(PATIENT.c.registration_start.is_not(None), PATIENT.c.registration_start <= start_by)
    if c.unknown_start == "counts":
        start_ok = or_(PATIENT.c.registration_start.is_(None), PATIENT.c.registration_start <= start_by)
    return and_(start_ok, or_(PATIENT.c.registration_end.is_(None), PATIENT.c.registration_end >= index))


@CONDITION.register(Alive)
def _alive(c: Alive, compiler: Compiler) -> ColumnElement[bool]:
    return or_(PATIENT.c.date_of_death.is_(None), PATIENT.c.date_of_death > compiler.index_date)


@CONDITION.register(NhsNumberVerified)
def _nhs_number_verified(c: NhsNumberVerified, compiler: Compiler) -> ColumnElement[bool]:
    # The loader stores only verified numbers. A pseudonymised extract holds none, but its
    # provider verified identity before pseudonymising: its patients pass (never written to).
    return or_(PATIENT.c.nhs_number.is_not(None), PATIENT.c.pseudonymised == literal(True))


@CONDITION.register(AgeBetween)
def _age_between(c: AgeBetween, compiler: Compiler) -> ColumnElement[bool]:
    # A partial birth date spans date_of_birth (first possible day) to date_of_birth_latest
    # (last); the minimum age must hold for the latest possible birth and the maximum for the
    # earliest. date_of_birth is never NULL, so neither side is NULL either.
    index = compiler.index_date
    latest_birth = func.coalesce(PATIENT.c.date_of_birth_latest, PATIENT.c.date_of_birth)
    return and_(
        latest_birth <= years_before(index, c.min),
        PATIENT.c.date_of_birth > years_before(index, c.max + 1),
    )


@CONDITION.register(HasCode)
def _has_code(c: HasCode, compiler: Compiler) -> ColumnElement[bool]:
    def query() -> Query:
        start, end = window_bounds(c.window, compiler.index_date)
        if c.occurrence == "any":
            return compiler._matches(
                EVENT, c.names, c.categories, start, end, patient_only=True, statuses=c.statuses
            )
        # The first or last such record up to the index date must fall in the window.
        m = compiler._matches(
            EVENT, c.names, c.categories, None, compiler.index_date, statuses=c.statuses
        ).subquery()
        edge = func.min(m.c.date) if c.occurrence == "first" else func.max(m.c.date)
        having = [edge <= end] + ([edge >= start] if start is not None else [])
        return select(m.c.patient_id).group_by(m.c.patient_id).having(and_(*having))

    return compiler.atom(c, query)


@CONDITION.register(CodeOnDays)
def _code_on_days(c: CodeOnDays, compiler: Compiler) -> ColumnElement[bool]:
    def query() -> Query:
        start, end = window_bounds(c.window, compiler.index_date)
        m = compiler._matches(EVENT, c.names, c.categories, start, end, statuses=c.statuses).subquery()
        return (
            select(m.c.patient_id)
            .group_by(m.c.patient_id)
            .having(func.count(distinct(m.c.date)) >= c.min_days)
        )

    return compiler.atom(c, query)


@CONDITION.register(MedicationCount)
def _medication_count(c: MedicationCount, compiler: Compiler) -> ColumnElement[bool]:
    def query() -> Query:
        start, end = window_bounds(c.window, compiler.index_date)
        m = compiler._matches(
            MEDICATION, c.names, c.categories, start, end, course=c.course, statuses=c.statuses
        ).subquery()
        having = [func.count() >= c.min_issues]
        if c.min_distinct_months is not None:
            month = func.extract("year", m.c.date) * 12 + func.extract("month", m.c.date)
            having.append(func.count(distinct(month)) >= c.min_distinct_months)
        return select(m.c.patient_id).group_by(m.c.patient_id).having(and_(*having))

    return compiler.atom(c, query)


@CONDITION.register(LatestCodeAmong)
def _latest_code_among(c: LatestCodeAmong, compiler: Compiler) -> ColumnElement[bool]:
    return compiler.latest_condition(c)


@CONDITION.register(LikelyInWork)
def _likely_in_work(c: LikelyInWork, compiler: Compiler) -> ColumnElement[bool]:
    return compiler.latest_condition(c.as_latest())


@CONDITION.register(AlreadyInvited)
def _already_invited(c: AlreadyInvited, compiler: Compiler) -> ColumnElement[bool]:
    def query() -> Query:
        study_id = compiler.study_id(c.study or compiler.rule_set.study)
        return compiler._invited(INVITATION.c.study_id == (study_id if study_id is not None else -1))

    return compiler.atom(c, query)


@CONDITION.register(DoNotContact)
def _do_not_contact(c: DoNotContact, compiler: Compiler) -> ColumnElement[bool]:
    def query() -> Query:
        asked = or_(INVITATION.c.status == "do_not_contact", INVITATION.c.reply == "do_not_contact")
        if not c.any_study:
            study_id = compiler.study_id(c.study or compiler.rule_set.study)
            asked = and_(asked, INVITATION.c.study_id == (study_id if study_id is not None else -1))
        return compiler._invited(asked)

    return compiler.atom(c, query)


@CONDITION.register(AllOf)
def _all(c: AllOf, compiler: Compiler) -> ColumnElement[bool]:
    return and_(*(compiler.condition(child) for child in c.items))


@CONDITION.register(AnyOf)
def _any(c: AnyOf, compiler: Compiler) -> ColumnElement[bool]:
    return or_(*(compiler.condition(child) for child in c.items))


@CONDITION.register(Not)
def _not(c: Not, compiler: Compiler) -> ColumnElement[bool]:
    return not_(compiler.condition(c.item))


@CONDITION.register(Ref)
def _ref(c: Ref, compiler: Compiler) -> ColumnElement[bool]:
    return compiler.condition(compiler.resolve(c))


@EVIDENCE.register(Registered, Alive, NhsNumberVerified, AgeBetween, AlreadyInvited, DoNotContact, Not)
def _no_record(c: Kind, compiler: Compiler) -> Evidence:
    return None


@EVIDENCE.register(Ref)
def _ref_evidence(c: Ref, compiler: Compiler) -> Evidence:
    return EVIDENCE(compiler.resolve(c), compiler)


@EVIDENCE.register(HasCode)
def _has_code_evidence(c: HasCode, compiler: Compiler) -> Evidence:
    # first / last: the first or last such record ever (up to the index date) is the one in the window
    if c.occurrence == "any":
        return lambda held: compiler.newest_record(EVENT, c, held)
    return lambda held: compiler.newest_record(
        EVENT, c, held, newest_first=c.occurrence == "last", whole_history=True
    )


@EVIDENCE.register(CodeOnDays)
def _code_on_days_evidence(c: CodeOnDays, compiler: Compiler) -> Evidence:
    return lambda held: compiler.newest_record(EVENT, c, held)


@EVIDENCE.register(MedicationCount)
def _medication_count_evidence(c: MedicationCount, compiler: Compiler) -> Evidence:
    return lambda held: compiler.newest_record(MEDICATION, c, held)


def _deciding_record(latest: LatestCodeAmong, compiler: Compiler) -> Evidence:
    def build(held: Table) -> Select:
        deciding = compiler.deciding_table(latest)
        return select(
            deciding.c.patient_id,
            deciding.c.ev_date,
            deciding.c.ev_system,
            deciding.c.ev_code,
            deciding.c.ev_term,
        ).join(held, held.c.patient_id == deciding.c.patient_id)

    return build


@EVIDENCE.register(LatestCodeAmong)
def _latest_evidence(c: LatestCodeAmong, compiler: Compiler) -> Evidence:
    return _deciding_record(c, compiler)


@EVIDENCE.register(LikelyInWork)
def _likely_in_work_evidence(c: LikelyInWork, compiler: Compiler) -> Evidence:
    return _deciding_record(c.as_latest(), compiler)


@EVIDENCE.register(AllOf, AnyOf)
def _first_child_evidence(c: AllOf | AnyOf, compiler: Compiler) -> Evidence:
    """The first child, in file order, that holds and has evidence."""
    if not any(compiler.can_have_evidence(child) for child in c.items):
        return None

    def build(held: Table) -> Select:
        found = [t for t in (compiler.evidence(child, held) for child in c.items) if t is not None]
        children = [t.alias(f"e{i}") for i, t in enumerate(found)]
        query = select(held.c.patient_id)
        for table in children:
            query = query.outerjoin(table, table.c.patient_id == held.c.patient_id)
        picked = []
        for name in EVIDENCE_COLUMNS[1:]:
            whens = [(t.c.patient_id.is_not(None), t.c[name]) for t in children]
            picked.append(case(*whens, else_=null()).label(name))
        return query.add_columns(*picked).where(or_(*(t.c.patient_id.is_not(None) for t in children)))

    return build


CONDITION.complete()
EVIDENCE.complete()
