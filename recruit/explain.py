"""Why each candidate is on a search run's list: the evidence the review sheet shows the GP.

The run's own rules and codelists (stored with it) are compiled again over its candidates only,
so the work grows with the candidates, not with everyone loaded: the records that met each
inclusion, the score items that held, the latest work record, and records the rules did not
count that a GP may still want to see (an exclusion's code outside its window).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Connection, Select, select

from recruit.load.codes import SYSTEM_NAMES
from recruit.query.compiler import Compiler
from recruit.query.dates import months_before
from recruit.query.model import (
    EVER,
    AllOf,
    AnyOf,
    HasCode,
    Kind,
    LatestCodeAmong,
    LikelyInWork,
    Ref,
    RuleSet,
    StatusSource,
    Step,
)
from recruit.search_run import SearchRun
from recruit.tables import RESULT

STATUS_WORDS = {"out_of_work": "Out of work", "in_work": "In work", "not_in_paid_work": "Not in paid work"}


def day_words(day: dt.date | None) -> str:
    """12 Mar 2024: unambiguous in every locale."""
    return "" if day is None else f"{day.day} {day:%b %Y}"


@dataclass
class Explained:
    """Per candidate, the lines the review sheet shows: why they are on the list, their latest work
    record, the score items that held, and records the GP should check first."""

    why: dict[int, list[str]] = field(default_factory=dict)
    work: dict[int, str] = field(default_factory=dict)
    score_parts: dict[int, list[str]] = field(default_factory=dict)
    missing: str = ""
    no_work: str = "No work, fit note or benefit record"
    # Records the rules did not count but a GP should see: an exclusion's code outside its
    # window (or of a status it skips), a latest in-work record older than the look-back.
    check_first: dict[int, list[str]] = field(default_factory=dict)


def _candidates(run_id: int, practice_id: int | None) -> Select:
    """The run's candidates (of one practice, when given): the patients review explains."""
    query = select(RESULT.c.patient_id).where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate")
    if practice_id is not None:
        query = query.where(RESULT.c.practice_id == practice_id)
    return query


def explain_candidates(conn: Connection, run: SearchRun, practice_id: int | None = None) -> Explained:
    """Each candidate's evidence (of one practice's candidates, when given, so a region's export
    holds one practice's evidence at a time), from the rule file and codelists stored with the run."""
    explained = Explained()
    rule_set = run.rule_set
    stored = run.codelists(conn)
    if rule_set is None or rule_set.fingerprint() != run.rule_set_fingerprint or stored is None:
        explained.missing = "Met every step of the search (this run did not keep its rules, so no detail)"
        explained.no_work = ""
        return explained
    codelists, ids = stored
    compiler = Compiler(
        conn, rule_set, run.index_date, ids, codelists, among=_candidates(run.id, practice_id)
    )
    pop = compiler.population
    assert pop is not None
    not_counted = _not_counted(rule_set)
    compiler.prepare(
        [step.criterion for step in rule_set.steps]
        + [c.criterion for c in rule_set.score]
        + [criterion for _, criterion in not_counted]
    )
    for step in rule_set.steps:
        if step.kind == "include" and compiler.can_have_evidence(step.criterion):
            table = compiler.evidence(step.criterion, pop)
            if table is None:
                continue
            for ev in conn.execute(select(table)):
                words = record_words(ev.ev_term, ev.ev_system, ev.ev_code, ev.ev_date)
                explained.why.setdefault(ev.patient_id, []).append(f"{step.reason}: {words}")
    for step, criterion in not_counted:
        # Candidates passed this exclusion, so a record found with the window widened to "ever"
        # (and every status) is one the step did not count: the GP may still want to know.
        table = compiler.evidence(criterion, pop)
        if table is None:
            continue
        for ev in conn.execute(select(table)):
            words = record_words(ev.ev_term, ev.ev_system, ev.ev_code, ev.ev_date)
            explained.check_first.setdefault(ev.patient_id, []).append(
                f"Not counted by the search (outside its window or status) for '{step.reason}': {words}"
            )
    for component in rule_set.score:
        table = compiler.held_among(component.criterion, pop)
        label = f"{component.id.replace('_', ' ')} (+{component.weight:g})"
        for pid in conn.execute(select(table.c.patient_id)).scalars():
            explained.score_parts.setdefault(pid, []).append(label)
    work = _work_sources(rule_set)
    if work is None:
        explained.no_work = "(this search does not look at work status)"
    else:
        sources, look_back = work
        statuses = sorted({s.status for s in sources})
        # Any date, not only the search's look-back: an older fit note still helps the GP.
        deciding = compiler.deciding_table(LatestCodeAmong(sources=sources, window=EVER, status_in=statuses))
        since = months_before(run.index_date, look_back) if look_back else None
        for ev in conn.execute(select(deciding)):
            status = STATUS_WORDS.get(ev.status, ev.status.replace("_", " ").capitalize())
            words = record_words(ev.ev_term, ev.ev_system, ev.ev_code, ev.ev_date)
            text = f"{status}: {words}"
            older = since is not None and _as_date(ev.ev_date) < since
            if older:
                text += f" (older than the search's {look_back}-month look-back)"
            explained.work[ev.patient_id] = text
            if older and ev.status in IN_WORK_STATUSES:
                explained.check_first.setdefault(ev.patient_id, []).append(
                    f"Latest work record says in work but is older than the search's {look_back}-month "
                    f"look-back, so the search did not count it: {words}"
                )
    compiler.drop()
    return explained


IN_WORK_STATUSES = frozenset({"in_work"})


def _as_date(value: dt.date | str) -> dt.date:
    """A stored day: SQLite hands back text, the others a date."""
    return dt.date.fromisoformat(value[:10]) if isinstance(value, str) else value


def _not_counted(rule_set: RuleSet) -> list[tuple[Step, Kind]]:
    """For each exclusion's code test with a window, a status filter or an occurrence rule: the
    same codes at any date and status. Found among candidates, such a record is one the rules
    ignored (a cancer code older than the window, a palliative care code from years ago)."""
    out: list[tuple[Step, Kind]] = []

    def leaves(criterion: Kind, seen: frozenset[str]) -> Iterator[HasCode]:
        if isinstance(criterion, Ref) and criterion.name not in seen:
            yield from leaves(rule_set.definitions[criterion.name], seen | {criterion.name})
        elif isinstance(criterion, AllOf | AnyOf):
            for child in criterion.items:
                yield from leaves(child, seen)
        elif isinstance(criterion, HasCode):
            yield criterion

    for step in rule_set.steps:
        if step.kind != "exclude":
            continue
        for body in leaves(step.criterion, frozenset()):
            if body.window == EVER and body.statuses is None and body.occurrence == "any":
                continue  # it already counts every record: nothing it could have ignored
            wider = body.model_copy(update={"window": EVER, "statuses": None, "occurrence": "any"})
            out.append((step, wider))
    return out


def record_words(term: str | None, system: str | None, code: str | None, day: dt.date | str | None) -> str:
    if isinstance(day, str):
        day = dt.date.fromisoformat(day[:10])
    label = SYSTEM_NAMES.get(system or "", system or "")
    return f"{term or code} ({label} {code}), {day_words(day)}"


def _work_sources(rule_set: RuleSet) -> tuple[list[StatusSource], int | None] | None:
    """The work-status evidence the rules use: a likely_in_work criterion's, else the first
    latest_code_among's; with the look-back in months when the rules give one."""

    def found(criterion: Kind, kind: type[Kind], seen: frozenset[str]) -> Kind | None:
        if isinstance(criterion, Ref):
            if criterion.name in seen:
                return None
            return found(rule_set.definitions[criterion.name], kind, seen | {criterion.name})
        if isinstance(criterion, kind):
            return criterion
        return next((b for c in criterion.children() if (b := found(c, kind, seen)) is not None), None)

    for _, criterion in rule_set.criteria():
        if isinstance(work := found(criterion, LikelyInWork, frozenset()), LikelyInWork):
            return list(work.evidence), work.look_back_months
    for _, criterion in rule_set.criteria():
        if isinstance(latest := found(criterion, LatestCodeAmong, frozenset()), LatestCodeAmong):
            return list(latest.sources), latest.window.last_months
    return None
