"""Warnings when a search step removes (nearly) everyone because the extract lacks its data.

A rule that needs a field the extract does not carry removes every patient without error: a
plain R4 Bulk export has no registration start dates, so `registered` (unless it counts an
unknown start) leaves nobody. The flow's numbers show the drop but not why; these warnings name
the missing field, so a practice does not read "0 candidates" as a true answer (issue 16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import Connection, and_, exists, func, or_, select

from recruit.load.codes import CODE_SYSTEMS
from recruit.load.coverage import system_words
from recruit.query.model import Kind, Ref, Registered, RuleSet, walk
from recruit.search_run import SearchRun
from recruit.tables import CODELIST, CODES, EVENT, MEDICATION, PATIENT, RESULT, STEP_COUNT

# A step "removes nearly everyone" when it removes at least this share of at least this many.
NEARLY_ALL = 0.95
AT_LEAST = 20


@dataclass(frozen=True, slots=True)
class SearchWarning:
    """One step that removed (nearly) everyone because a field is absent from the extract."""

    step_id: str
    field: str
    entering: int
    removed: int
    message: str

    def __str__(self) -> str:
        return self.message


class _Counts(NamedTuple):
    """A step's stored counts, as far as the warnings read them."""

    step_index: int
    entering: int
    excluded: int


def search_warnings(conn: Connection, run_id: int, rule_set: RuleSet | None = None) -> list[SearchWarning]:
    """The warnings for a finished run; the rule set defaults to the text stored with the run."""
    run = SearchRun.load(conn, run_id)
    if rule_set is None:
        rule_set = run.rule_set
        if rule_set is None:
            return []
    counts = {
        row.step_index: row
        for row in (
            _Counts(*r)
            for r in conn.execute(
                select(STEP_COUNT.c.step_index, STEP_COUNT.c.entering, STEP_COUNT.c.excluded).where(
                    STEP_COUNT.c.run_id == run_id
                )
            )
        )
    }
    found: list[SearchWarning] = []
    systems = _Systems(conn, run)
    for i, step in enumerate(rule_set.steps):
        row = counts.get(i)
        if row is not None and (
            unfindable := _codes_not_held(rule_set, step.id, step.criterion, systems, row)
        ):
            found.append(unfindable)
            continue
        if row is None or row.entering < AT_LEAST or row.excluded < NEARLY_ALL * row.entering:
            continue
        if step.kind != "include":
            continue
        criterion = rule_set.resolve(step.criterion)
        warning = None
        if isinstance(criterion, Registered):
            earlier = [s.id for s in rule_set.steps[:i]]
            warning = _registration_absent(conn, run, step.id, earlier, row, criterion)
        elif criterion.key == "nhs_number_verified":
            warning = _nhs_numbers_absent(step.id, row)
        else:
            warning = _records_absent(conn, run_id, rule_set, step.id, criterion, row)
        if warning is not None:
            found.append(warning)
    return found


# The records criteria read (Kind.reads), and how the extract names them.
_FIELDS = {
    "events": (EVENT, "clinical_events", "coded entries (Condition or Observation records)"),
    "medications": (
        MEDICATION,
        "medication_issues",
        "prescriptions (MedicationRequest or MedicationStatement)",
    ),
}


def _needed(rule_set: RuleSet, criterion: Kind, seen: int = 0) -> set[str]:
    """The kinds of record a criterion reads, through definitions and all / any / not."""
    needed: set[str] = set()
    if seen > 100:
        return needed
    for _, node in walk(criterion, ()):
        if isinstance(node, Ref):
            needed |= _needed(rule_set, rule_set.definitions[node.name], seen + 1)
        needed |= set(node.reads)
    return needed


def _records_absent(
    conn: Connection, run_id: int, rule_set: RuleSet, step_id: str, criterion: Kind, counts: _Counts
) -> SearchWarning | None:
    """Warn when a step that reads coded entries or prescriptions removed (nearly) everyone and
    the patients searched have none of them at all: the extract did not carry them (a PDS or
    demographics-only extract), so "0 candidates" is not an answer about the people."""
    needed = _needed(rule_set, criterion)
    if not needed:
        return None
    searched = select(RESULT.c.patient_id).where(RESULT.c.run_id == run_id)
    missing = []
    for kind in sorted(needed):
        table, field, words = _FIELDS[kind]
        if conn.execute(select(exists().where(table.c.patient_id.in_(searched)))).scalar():
            return None  # some records of a kind it reads are there: the answer may be true
        missing.append((field, words))
    fields = " and ".join(f for f, _ in missing)
    what = " or ".join(w for _, w in missing)
    message = (
        f"Step '{step_id}' removed {counts.excluded:,} of the {counts.entering:,} patients entering it: "
        f"it reads {what}, and the extract holds none for the patients searched. Check that the "
        "extract includes them (some extracts carry only demographics) and load it again."
    )
    return SearchWarning(step_id, fields, counts.entering, counts.excluded, message)


class _Systems:
    """The code systems the run's patients' records hold, per kind of record (asked once, and
    only if some step reads codes): one EXISTS per system, on the (code_system, code) index."""

    def __init__(self, conn: Connection, run: SearchRun) -> None:
        self.conn, self.run_id, self.run = conn, run.id, run
        self._held: dict[str, set[str]] | None = None
        self._lists: dict[str, set[str]] = {}

    def held(self, kind: str) -> set[str]:
        if self._held is None:
            searched = select(RESULT.c.patient_id).where(RESULT.c.run_id == self.run_id)
            self._held = {}
            for name, (table, _, _) in _FIELDS.items():
                self._held[name] = {
                    system
                    for system in CODE_SYSTEMS
                    if self.conn.execute(
                        select(
                            exists().where(table.c.code_system == system, table.c.patient_id.in_(searched))
                        )
                    ).scalar()
                }
        return self._held[kind]

    def of_list(self, name: str) -> set[str] | None:
        """The systems a codelist the run used has codes in; None if the run did not store it."""
        if name not in self._lists:
            fingerprint = self.run.codelist_fingerprints.get(name)
            if not fingerprint:
                return None
            ids = select(CODELIST.c.id).where(CODELIST.c.name == name, CODELIST.c.fingerprint == fingerprint)
            self._lists[name] = set(
                self.conn.execute(
                    select(CODES.c.code_system).where(CODES.c.codelist_id.in_(ids)).distinct()
                ).scalars()
            )
        return self._lists[name]


def _code_reads(rule_set: RuleSet, criterion: Kind, seen: int = 0) -> list[tuple[str, str]]:
    """(kind of record, codelist name) for every codelist a criterion reads, through definitions."""
    out: list[tuple[str, str]] = []
    if seen > 100:
        return out
    for _, node in walk(criterion, ()):
        if isinstance(node, Ref):
            out += _code_reads(rule_set, rule_set.definitions[node.name], seen + 1)
        out += [(records, name) for records in node.reads for name, _ in node.codelist_refs()]
    return out


def _codes_not_held(
    rule_set: RuleSet, step_id: str, criterion: Kind, systems: _Systems, counts: _Counts
) -> SearchWarning | None:
    """Warn when none of a step's codelists has a code in any system the extract's records use
    (SNOMED CT lists on a CTV3 extract): the step cannot find anything in this extract, so its
    count says nothing about the people. An extract with no such records at all is left to
    _records_absent."""
    reads = _code_reads(rule_set, criterion)
    if not reads:
        return None
    lists: set[str] = set()
    held: set[str] = set()
    for kind, name in reads:
        in_list = systems.of_list(name)
        if in_list is None:
            return None  # a run stored before its codelists were: cannot tell
        here = systems.held(kind)
        if in_list & here:
            return None
        lists |= in_list
        held |= here
    if not held:
        return None
    names = ", ".join(dict.fromkeys(name for _, name in reads))
    has = " and ".join(system_words(s) for s in CODE_SYSTEMS if s in lists) or "no"
    holds = " and ".join(system_words(s) for s in CODE_SYSTEMS if s in held)
    message = (
        f"Step '{step_id}' cannot find anything in this extract: its codelists ({names}) have {has} "
        f"codes, and the extract's records use {holds} codes only. Its count ({counts.excluded:,} of "
        f"{counts.entering:,} removed) says nothing about the patients; add {holds} codes to the "
        "codelists, or search an extract coded in a system they cover."
    )
    return SearchWarning(step_id, "code_system", counts.entering, counts.excluded, message)


def _nhs_numbers_absent(step_id: str, counts: _Counts) -> SearchWarning:
    """The step removes only patients without a verified NHS number, so (nearly) all removed
    says the extract carries no usable NHS numbers (example data, or a feed that leaves them out)."""
    entering, removed = counts.entering, counts.excluded
    message = (
        f"Step '{step_id}' removed {removed:,} of the {entering:,} patients entering it: they have no "
        "verified NHS number in the extract (Patient.identifier with system "
        "https://fhir.nhs.uk/Id/nhs-number, passing its check digit and not marked untraced). "
        "Without one, opt-outs and earlier invitations cannot be checked and no letter can be "
        "written. Ask for an extract that includes NHS numbers."
    )
    return SearchWarning(step_id, "nhs_number", entering, removed, message)


def _registration_absent(
    conn: Connection, run: SearchRun, step_id: str, earlier: list[str], counts: _Counts, criterion: Registered
) -> SearchWarning | None:
    """Warn when (nearly) all the patients the step removed, leaving aside those who had left the
    practice, have no registration start date: the rule needed a start the extract lacks."""
    if criterion.unknown_start == "counts":
        return None  # an unknown start passes; whoever was removed left the practice
    run_id, index_date = run.id, run.index_date
    no_start = and_(
        PATIENT.c.registration_start.is_(None),
        or_(PATIENT.c.registration_end.is_(None), PATIENT.c.registration_end >= index_date),
    )  # still registered on the index date, since an unknown day
    entering, removed = counts.entering, counts.excluded
    among = select(func.count()).select_from(RESULT.join(PATIENT, PATIENT.c.id == RESULT.c.patient_id))
    among = among.where(RESULT.c.run_id == run_id)
    # Those removed who had not left the practice by the index date (leaving is a true answer).
    still = or_(PATIENT.c.registration_end.is_(None), PATIENT.c.registration_end >= index_date)
    removed_here = conn.execute(among.where(RESULT.c.excluding_step == step_id, still)).scalar_one()
    without = conn.execute(among.where(RESULT.c.excluding_step == step_id, no_start)).scalar_one()
    if not removed_here or without < NEARLY_ALL * removed_here:
        return None
    # Whether anyone entering the step has a start date at all (a candidate may have one).
    entered = or_(RESULT.c.excluding_step.is_(None), RESULT.c.excluding_step.not_in(earlier or [""]))
    with_start = conn.execute(among.where(entered, PATIENT.c.registration_start.is_not(None))).scalar_one()
    if with_start == 0:
        what = "no patient has a registration start date: the extract carries no registration details"
    else:
        what = (
            f"{without:,} of the {removed_here:,} it removed who had not left have no registration "
            "start date: the "
            "extract carries registration details for few patients"
        )
    message = (
        f"Step '{step_id}' removed {removed:,} of the {entering:,} patients entering it: {what}. "
        "The extract does not say since when they are registered, and this rule counts only a "
        "known start. If registration on the index date is what matters, add "
        "'unknown_start: counts' under 'registered' in the rule file and search again."
    )
    return SearchWarning(step_id, "registration_start", entering, removed, message)
