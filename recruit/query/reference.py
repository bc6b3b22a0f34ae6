"""The rule semantics in plain Python, one patient at a time: small, slow and obviously correct.

Used by the tests only, as the oracle the SQL engine must agree with patient by patient and count
by count. It reads plain rows (dicts shaped like the tables) and shares nothing with the compiler
except the date helpers, so a mistake in the SQL cannot hide in both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recruit.codelists import Codelist
from recruit.load.status import EVENT_STATUS_WHEN_NULL, MEDICATION_STATUS_WHEN_NULL
from recruit.query.dates import age_on, months_before, window_bounds
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
    StatusSource,
    Window,
)

Row = Mapping[str, Any]
Evidence = tuple[dt.date, str, str, str | None]  # date, system, code, term


@dataclass
class Data:
    patients: Sequence[Row]
    events: Sequence[Row] = ()
    medications: Sequence[Row] = ()
    invitations: Sequence[Row] = ()
    studies: Sequence[Row] = ()


@dataclass
class PatientResult:
    patient_id: int
    practice_id: int
    passes: list[bool]
    outcome: str
    excluding_step: str | None
    evidence: dict[str, Any] | None
    step_mask: int
    score: float | None
    rank: int | None = None


@dataclass
class ReferenceRun:
    results: dict[int, PatientResult]
    counts: list[dict[str, Any]] = field(default_factory=list)


def _code_matches(codelist: Codelist, categories: Sequence[str] | None, system: str, code: str) -> bool:
    for row in codelist.codes:
        if categories and row.category not in categories:
            continue
        if str(row.system) != system:
            continue
        if system == "readv2" and row.attrs.get("match", "").strip().lower() == "prefix":
            if code.startswith(row.code.rstrip(".")):
                return True
        elif row.code == code:
            return True
    return False


class Reference:
    def __init__(
        self, rule_set: RuleSet, codelists: Mapping[str, Codelist], data: Data, index: dt.date
    ) -> None:
        self.rule_set = rule_set
        self.codelists = codelists
        self.data = data
        self.index = index
        self.study_ids = {s["code"]: s["id"] for s in data.studies}

    def _records(
        self,
        rows: Sequence[Row],
        date_key: str,
        patient: Row,
        names: Sequence[str],
        categories,
        window: Window,
        statuses: Sequence[str] | None = None,
    ) -> list[Row]:
        start, end = window_bounds(window, self.index)
        when_null = EVENT_STATUS_WHEN_NULL if date_key == "event_date" else MEDICATION_STATUS_WHEN_NULL
        found = []
        for row in rows:
            if row["patient_id"] != patient["id"]:
                continue
            if statuses is not None and (row.get("status") or when_null) not in statuses:
                continue
            day = row[date_key]
            if day > end or (start is not None and day < start):
                continue
            if any(
                _code_matches(self.codelists[n], categories, row["code_system"], row["code"]) for n in names
            ):
                found.append(row)
        return found

    def holds(self, c: Kind, p: Row) -> bool:
        return self.evaluate(c, p)[0]

    def evaluate(self, c: Kind, p: Row) -> tuple[bool, Evidence | None]:
        """Whether the criterion holds for patient p, and the record that decided it."""
        return EVALUATE(c, self, p)

    def _invitations(self, p: Row) -> list[Row]:
        return [
            i
            for i in self.data.invitations
            if i["patient_id"] == p["id"] or (p.get("nhs_number") and i["nhs_number"] == p["nhs_number"])
        ]

    def _deciding(
        self, sources: Sequence[StatusSource], window: Window, p: Row
    ) -> tuple[str, Evidence] | None:
        best: tuple[Any, ...] | None = None
        for priority, source in enumerate(sources):
            for r in self._records(
                self.data.events, "event_date", p, [source.codelist], source.categories, window
            ):
                # newest first, then the source listed first, then system, code, term
                key = (-r["event_date"].toordinal(), priority, r["code_system"], r["code"], r["term"] or "")
                if best is None or key < best[0]:
                    best = (key, source.status, _evidence(r, "event_date"))
        return None if best is None else (best[1], best[2])

    def run(self) -> ReferenceRun:
        steps = self.rule_set.steps
        results: dict[int, PatientResult] = {}
        for p in self.data.patients:
            passes = []
            for step in steps:
                held = self.holds(step.criterion, p)
                passes.append(held if step.kind == "include" else not held)
            first = next((i for i, ok in enumerate(passes) if not ok), None)
            evidence = None
            if first is not None and steps[first].kind == "exclude":
                ev = self.evaluate(steps[first].criterion, p)[1]
                if ev is not None:
                    evidence = {"code": ev[2], "date": ev[0].isoformat(), "system": ev[1], "term": ev[3]}
            score = None
            if self.rule_set.score:
                score = 0.0
                for component in self.rule_set.score:
                    score = score + (float(component.weight) if self.holds(component.criterion, p) else 0.0)
            results[p["id"]] = PatientResult(
                patient_id=p["id"],
                practice_id=p["practice_id"],
                passes=passes,
                outcome="candidate" if first is None else "excluded",
                excluding_step=None if first is None else steps[first].id,
                evidence=evidence,
                step_mask=sum(1 << i for i, ok in enumerate(passes) if ok),
                score=score,
            )
        candidates = [r for r in results.values() if r.outcome == "candidate"]
        for r in candidates:
            r.rank = 1 + sum(1 for o in candidates if (o.score or 0.0) > (r.score or 0.0))
        counts = []
        for i, step in enumerate(steps):
            entering = [r for r in results.values() if all(r.passes[:i])]
            kept = [r for r in entering if r.passes[i]]
            counts.append(
                {
                    "step_id": step.id,
                    "entering": len(entering),
                    "kept": len(kept),
                    "excluded": len(entering) - len(kept),
                    "failing_alone": sum(1 for r in results.values() if not r.passes[i]),
                }
            )
        return ReferenceRun(results, counts)


Outcome = tuple[bool, Evidence | None]
EVALUATE: KindTable[Outcome] = KindTable("The reference evaluator")


@EVALUATE.register(Ref)
def _ref(c: Ref, ref: Reference, p: Row) -> Outcome:
    return ref.evaluate(ref.rule_set.definitions[c.name], p)


@EVALUATE.register(Registered)
def _registered(c: Registered, ref: Reference, p: Row) -> Outcome:
    start, end = p["registration_start"], p["registration_end"]
    if start is None:
        ok = c.unknown_start == "counts"
    else:
        ok = start <= months_before(ref.index, c.for_at_least_months)
    return ok and (end is None or end >= ref.index), None


@EVALUATE.register(Alive)
def _alive(c: Alive, ref: Reference, p: Row) -> Outcome:
    return p["date_of_death"] is None or p["date_of_death"] > ref.index, None


@EVALUATE.register(NhsNumberVerified)
def _nhs_number_verified(c: NhsNumberVerified, ref: Reference, p: Row) -> Outcome:
    # (a pseudonymised patient was verified by the provider before pseudonymising)
    return p.get("nhs_number") is not None or bool(p.get("pseudonymised")), None


@EVALUATE.register(AgeBetween)
def _age_between(c: AgeBetween, ref: Reference, p: Row) -> Outcome:
    # Safe direction for partial birth dates: old enough if born on the last possible day,
    # young enough if born on the first.
    latest_birth = p.get("date_of_birth_latest") or p["date_of_birth"]
    return c.min <= age_on(latest_birth, ref.index) and age_on(p["date_of_birth"], ref.index) <= c.max, None


@EVALUATE.register(HasCode)
def _has_code(c: HasCode, ref: Reference, p: Row) -> Outcome:
    events = ref.data.events
    if c.occurrence == "any":
        rows = ref._records(events, "event_date", p, c.names, c.categories, c.window, c.statuses)
        return bool(rows), _newest(rows, "event_date")
    rows = ref._records(events, "event_date", p, c.names, c.categories, Window(ever=True), c.statuses)
    if not rows:
        return False, None
    pick = _oldest(rows, "event_date") if c.occurrence == "first" else _newest(rows, "event_date")
    start, end = window_bounds(c.window, ref.index)
    ok = pick is not None and pick[0] <= end and (start is None or pick[0] >= start)
    return ok, pick if ok else None


@EVALUATE.register(CodeOnDays)
def _code_on_days(c: CodeOnDays, ref: Reference, p: Row) -> Outcome:
    rows = ref._records(ref.data.events, "event_date", p, c.names, c.categories, c.window, c.statuses)
    ok = len({r["event_date"] for r in rows}) >= c.min_days
    return ok, _newest(rows, "event_date") if ok else None


@EVALUATE.register(MedicationCount)
def _medication_count(c: MedicationCount, ref: Reference, p: Row) -> Outcome:
    rows = ref._records(ref.data.medications, "issue_date", p, c.names, c.categories, c.window, c.statuses)
    if c.course != "any":
        rows = [r for r in rows if r["course"] == c.course]
    months = {(r["issue_date"].year, r["issue_date"].month) for r in rows}
    ok = len(rows) >= c.min_issues and (c.min_distinct_months is None or len(months) >= c.min_distinct_months)
    return ok, _newest(rows, "issue_date") if ok else None


def _latest(latest: LatestCodeAmong, ref: Reference, p: Row) -> Outcome:
    decided = ref._deciding(latest.sources, latest.window, p)
    if decided is None:
        return latest.when_none, None
    status, evidence = decided
    ok = status in latest.status_in
    return ok, evidence if ok else None


@EVALUATE.register(LatestCodeAmong)
def _latest_code_among(c: LatestCodeAmong, ref: Reference, p: Row) -> Outcome:
    return _latest(c, ref, p)


@EVALUATE.register(LikelyInWork)
def _likely_in_work(c: LikelyInWork, ref: Reference, p: Row) -> Outcome:
    return _latest(c.as_latest(), ref, p)


@EVALUATE.register(AlreadyInvited)
def _already_invited(c: AlreadyInvited, ref: Reference, p: Row) -> Outcome:
    study = ref.study_ids.get(c.study or ref.rule_set.study)
    return any(i["study_id"] == study for i in ref._invitations(p)), None


@EVALUATE.register(DoNotContact)
def _do_not_contact(c: DoNotContact, ref: Reference, p: Row) -> Outcome:
    study = ref.study_ids.get(c.study or ref.rule_set.study)
    return any(
        (i["status"] == "do_not_contact" or i.get("reply") == "do_not_contact")
        and (c.any_study or i["study_id"] == study)
        for i in ref._invitations(p)
    ), None


@EVALUATE.register(Not)
def _not(c: Not, ref: Reference, p: Row) -> Outcome:
    return not ref.holds(c.item, p), None


@EVALUATE.register(AllOf, AnyOf)
def _combination(c: AllOf | AnyOf, ref: Reference, p: Row) -> Outcome:
    results = [ref.evaluate(child, p) for child in c.items]
    ok = all(r[0] for r in results) if isinstance(c, AllOf) else any(r[0] for r in results)
    if not ok:
        return False, None
    return True, next((ev for held, ev in results if held and ev is not None), None)


EVALUATE.complete()


def _evidence(row: Row, date_key: str) -> Evidence:
    return (row[date_key], row["code_system"], row["code"], row["term"])


def _newest(rows: Sequence[Row], date_key: str) -> Evidence | None:
    if not rows:
        return None
    row = min(rows, key=lambda r: (-r[date_key].toordinal(), r["code_system"], r["code"], r["term"] or ""))
    return _evidence(row, date_key)


def _oldest(rows: Sequence[Row], date_key: str) -> Evidence | None:
    if not rows:
        return None
    row = min(rows, key=lambda r: (r[date_key].toordinal(), r["code_system"], r["code"], r["term"] or ""))
    return _evidence(row, date_key)


def run_reference(
    rule_set: RuleSet, codelists: Mapping[str, Codelist], data: Data, index_date: dt.date
) -> ReferenceRun:
    return Reference(rule_set, codelists, data, index_date).run()
