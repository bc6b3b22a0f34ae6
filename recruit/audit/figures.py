"""The audit's figures for a search run, counted in the database, with the relations between them.

Every figure is a count of people (or of quarantined records), per practice and for all
practices. Per-step counts and costs come from the stored step masks (recruit.query.flow), the
rest from review_decision, invitation, letter_batch and quarantine with GROUP BY queries: no
patient row ever reaches Python, so no identifier can reach the report.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypedDict

from sqlalchemy import Connection, and_, case, func, select

from recruit.letters.select import EARLIER_REFUSALS, REFUSALS
from recruit.query.flow import flow_for_order, practice_histograms, step_costs
from recruit.search_run import SearchRun
from recruit.tables import BATCH, DECISION, EXTRACT, INVITATION, PRACTICE, QUARANTINE, RESULT

from .suppress import Table

ALL = "all"
NO_REASON = "no_reason_given"

# Lines of the flow after the search, in the order the diagram and tables show them.
REVIEW_ITEMS = ("review.screened", "review.awaiting", "review.excluded", "review.approved")
LETTER_ITEMS = ("letters.invited", "letters.drafted", "letters.not_written")
LETTER_TOTALS = ("letters.not_sent",)
REPLY_CATEGORIES = ("interested", "declined", "now_in_work", "other")
REPLY_ITEMS = ("replies.replied", "replies.none", *(f"replies.{c}" for c in REPLY_CATEGORIES))

LABELS = {
    "searched": "Records searched",
    "excluded_by_rules": "Excluded by the search rules",
    "candidates": "Candidates for the GP to review",
    "review.screened": "Screened by the GP",
    "review.awaiting": "Not yet reviewed",
    "review.excluded": "Excluded at GP review",
    "review.approved": "Approved for a letter",
    "letters.invited": "Invited (letter sent)",
    "letters.drafted": "Letter written, not yet sent",
    "letters.not_written": "Approved, no letter written",
    "letters.not_sent": "Approved, not sent a letter",
    "replies.replied": "Replied",
    "replies.none": "No reply yet",
    "replies.interested": "Interested",
    "replies.declined": "Declined (including do not contact again)",
    "replies.now_in_work": "Now in work",
    "replies.other": "Other reply",
    "quarantine.read": "Records read",
    "quarantine.loaded": "Records loaded",
    "quarantine.quarantined": "Records quarantined",
}


# Abbreviations kept in capitals when a stored code is written out: gp_said -> "GP said".
ABBREVIATIONS = {"gp": "GP", "nhs": "NHS", "ods": "ODS", "fhir": "FHIR", "id": "ID", "uk": "UK", "csv": "CSV"}


def words(code: str) -> str:
    """A stored reason code in words: no_valid_address -> No valid address, gp_said_no -> GP said no."""
    parts = code.replace("_", " ").replace("-", " ").split()
    if not parts:
        return code
    parts = [ABBREVIATIONS.get(part.lower(), part) for part in parts]
    parts[0] = parts[0][:1].upper() + parts[0][1:]
    return " ".join(parts)


def review_reason_label(code: str) -> str:
    """A GP's reason for not inviting, in the words of the review sheet the GP chose it from."""
    from recruit.review import REASONS  # here, not at the top: recruit.review is heavy

    return REASONS.get(code) or words(code)


def refusal_label(code: str) -> str:
    """Why a letter was not written, in the words `recruit letters` prints (no identifiers)."""
    text = REFUSALS.get(code) or EARLIER_REFUSALS.get(code)
    return text[:1].upper() + text[1:] if text else words(code)


@dataclass(frozen=True)
class Column:
    key: str  # ALL or a practice's ODS code
    title: str


@dataclass(frozen=True)
class Step:
    index: int
    step_id: str
    kind: str
    reason: str

    @property
    def exclusion(self) -> str:
        """What being excluded here means, in the same words the search results use."""
        return self.reason if self.kind == "exclude" else f"Not met: {self.reason}"


@dataclass
class ExtractFigures:
    extract_id: int
    fingerprint: str
    format: str
    practice: str | None
    extract_date: dt.date | None
    reasons: list[str]


class Provenance(TypedDict):
    """Which search a run's figures come from, as audit.json records it (dates as ISO text)."""

    run_id: int
    rule_set_name: str
    rule_set_version: str
    rule_set_fingerprint: str
    codelist_fingerprints: dict[str, str]
    extract_fingerprints: list[str]
    index_date: str
    practice_ods_code: str | None
    recruit_version: str | None
    started_at: str | None
    finished_at: str | None


@dataclass
class RunFigures:
    """One run's figures (true counts: never published before `protect`) and what they mean."""

    run_id: int
    provenance: Provenance
    rule_set_text: str | None
    steps: list[Step]
    columns: list[Column]
    review_reasons: list[str]
    refusal_reasons: list[str]
    extracts: list[ExtractFigures]
    table: Table = field(default_factory=Table)

    def key(self, column: str, item: str) -> str:
        return f"run{self.run_id}|{column}|{item}"

    def label(self, item: str) -> str:
        if item.startswith("step"):
            index, what = item[4:].split(".", 1)
            step = self.steps[int(index)]
            prefix = f"Step {step.index + 1} ({step.step_id})"
            return f"{prefix}: {step.exclusion}" if what == "excluded" else f"{prefix}, {what}"
        if item.startswith("review.reason."):
            return f"Excluded at review: {review_reason_label(item.removeprefix('review.reason.'))}"
        if item.startswith("letters.refused."):
            return f"Not written to: {refusal_label(item.removeprefix('letters.refused.'))}"
        if item.startswith("quarantine.reason."):
            return f"Quarantined: {words(item.removeprefix('quarantine.reason.'))}"
        return LABELS[item.split("|")[-1]]

    def flow_items(self) -> list[str]:
        """Every per-practice item, in report order."""
        items = ["searched"]
        for step in self.steps:
            items += [f"step{step.index}.excluded", f"step{step.index}.cost"]
        items += ["excluded_by_rules", "candidates", "review.screened", "review.awaiting"]
        items += [f"review.reason.{r}" for r in self.review_reasons]
        items += ["review.excluded", "review.approved", *LETTER_ITEMS, *LETTER_TOTALS, *REPLY_ITEMS]
        return items

    def step_kept(self, column: str, index: int) -> str:
        """The figure for the people left after step `index` (the next step's entering)."""
        last = len(self.steps) - 1
        return self.key(column, "candidates" if index == last else f"step{index}.kept")

    def step_entering(self, column: str, index: int) -> str:
        return self.key(column, "searched") if index == 0 else self.step_kept(column, index - 1)


def gather(conn: Connection, run_id: int) -> RunFigures:
    """Count everything the audit shows for one finished run."""
    run = SearchRun.load(conn, run_id).require_finished()
    steps = [Step(s.index, s.id, s.kind, s.reason) for s in run.steps]
    histograms = practice_histograms(conn, run_id)
    practices = {
        r.id: r
        for r in conn.execute(
            select(PRACTICE.c.id, PRACTICE.c.ods_code, PRACTICE.c.name).where(
                PRACTICE.c.id.in_(list(histograms) or [-1])
            )
        )
    }
    order = sorted(histograms, key=lambda pid: practices[pid].ods_code)
    code = {pid: practices[pid].ods_code for pid in order}
    columns = [Column(ALL, "All practices")] + [
        Column(practices[pid].ods_code, f"{practices[pid].ods_code} {practices[pid].name}") for pid in order
    ]

    review = _review_counts(conn, run_id)
    letters = _letter_counts(conn, run_id)
    refusals: Counter[str] = Counter()
    for (batch_refusals,) in conn.execute(select(BATCH.c.refusals).where(BATCH.c.run_id == run_id)):
        for reason, n in (batch_refusals or {}).items():
            refusals[str(reason)] += int(n)
    counts = {
        code[pid]: PracticeCounts(
            histogram=histograms[pid],
            screened=review.screened.get(pid, 0),
            reasons={reason: n for (p, reason), n in review.reasons.items() if p == pid},
            letters={item: n for (p, item), n in letters.items() if p == pid},
        )
        for pid in order
    }
    figures = RunFigures(
        run_id=run_id,
        provenance=Provenance(
            run_id=run.id,
            rule_set_name=run.rule_set_name,
            rule_set_version=run.rule_set_version,
            rule_set_fingerprint=run.rule_set_fingerprint,
            codelist_fingerprints=dict(sorted(run.codelist_fingerprints.items())),
            extract_fingerprints=list(run.extract_fingerprints),
            index_date=run.index_date.isoformat(),
            practice_ods_code=run.practice_ods_code,
            recruit_version=run.recruit_version,
            started_at=run.started_at.isoformat() if run.started_at else None,
            finished_at=run.finished_at.isoformat() if run.finished_at else None,
        ),
        rule_set_text=run.rule_set_text,
        steps=steps,
        columns=columns,
        review_reasons=[],
        refusal_reasons=[],
        extracts=[],
    )
    fill(figures, counts, refusals, _extracts(conn, list(run.extract_fingerprints)))
    return figures


@dataclass
class PracticeCounts:
    """One practice's true counts: its step-mask histogram, GP review and letters."""

    histogram: dict[int, int]
    screened: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # do-not-invite decisions by reason code
    letters: dict[str, int] = field(default_factory=dict)  # LETTER_ITEMS and REPLY_ITEMS counts


def fill(
    figures: RunFigures,
    practices: dict[str, PracticeCounts],
    refusals: Mapping[str, int] | None = None,
    extracts: list[tuple[ExtractFigures, dict[str, int]]] | None = None,
) -> None:
    """Every figure and relation of the report, from the practices' counts (keyed by ODS code)."""
    refusals = refusals or {}
    figures.review_reasons = sorted({r for c in practices.values() for r, n in c.reasons.items() if n})
    figures.refusal_reasons = sorted(r for r, n in refusals.items() if n)
    figures.extracts = [e for e, _ in extracts or []]
    table = figures.table
    n = len(figures.steps)
    for col, counts in practices.items():
        histogram = counts.histogram
        flow = flow_for_order(histogram, range(n))
        costs = step_costs(histogram, n)
        searched = sum(histogram.values())
        table.add(figures.key(col, "searched"), searched)
        for i, f in enumerate(flow):
            table.add(figures.key(col, f"step{i}.excluded"), f["excluded"])
            table.add(figures.step_kept(col, i), f["kept"])
            table.add(figures.key(col, f"step{i}.cost"), costs[i])
        candidates = flow[-1]["kept"] if flow else searched
        table.add(figures.key(col, "candidates"), candidates)
        table.add(figures.key(col, "excluded_by_rules"), searched - candidates)
        table.add(figures.key(col, "review.screened"), counts.screened)
        table.add(figures.key(col, "review.awaiting"), candidates - counts.screened)
        excluded = 0
        for reason in figures.review_reasons:
            count = counts.reasons.get(reason, 0)
            excluded += count
            table.add(figures.key(col, f"review.reason.{reason}"), count)
        table.add(figures.key(col, "review.excluded"), excluded)
        table.add(figures.key(col, "review.approved"), counts.screened - excluded)
        for item in (*LETTER_ITEMS, *REPLY_ITEMS):
            table.add(figures.key(col, item), counts.letters.get(item, 0))
        table.add(
            figures.key(col, "letters.not_sent"),
            counts.letters.get("letters.drafted", 0) + counts.letters.get("letters.not_written", 0),
        )

    # All practices: each figure the sum of the practices' (true counts, rounded on their own).
    for item in figures.flow_items() + [f"step{i}.kept" for i in range(n - 1)]:
        parts = [figures.key(col, item) for col in practices]
        total = table.add(
            figures.key(ALL, item), sum(table.values[p] for p in parts), headline=item == "searched"
        )
        table.sum_is(total, parts)
    for col in [ALL, *practices]:
        _flow_relations(figures, col)
    for i in range(n - 1):
        parts = [figures.key(col, f"step{i}.cost~slack") for col in practices]
        table.sum_is(figures.key(ALL, f"step{i}.cost~slack"), parts)

    refused = [
        table.add(figures.key(ALL, f"letters.refused.{r}"), refusals[r]) for r in figures.refusal_reasons
    ]
    if (
        refused
        and sum(table.values[k] for k in refused) == table.values[figures.key(ALL, "letters.not_written")]
    ):
        table.sum_is(figures.key(ALL, "letters.not_written"), refused)  # a reader could assume it

    for extract, counts_ in extracts or []:
        _extract_figures(figures, extract, counts_)


def _flow_relations(figures: RunFigures, col: str) -> None:
    """The equalities a reader can see in one column of the flow."""
    table, key, n = figures.table, figures.key, len(figures.steps)
    for i in range(n):
        table.sum_is(
            figures.step_entering(col, i), [figures.step_kept(col, i), key(col, f"step{i}.excluded")]
        )
        if i == n - 1:  # everyone the last step excludes passed every other step: that is its cost
            table.sum_is(key(col, f"step{i}.excluded"), [key(col, f"step{i}.cost")])
        elif col == ALL:
            slack = f"{key(col, f'step{i}.cost')}~slack"
            table.add(
                slack, table.values[key(col, f"step{i}.excluded")] - table.values[key(col, f"step{i}.cost")]
            )
            table.unpublished.add(slack)
            table.sum_is(key(col, f"step{i}.excluded"), [key(col, f"step{i}.cost"), slack])
        else:
            table.at_most(key(col, f"step{i}.cost"), key(col, f"step{i}.excluded"))
    table.sum_is(key(col, "excluded_by_rules"), [key(col, f"step{i}.excluded") for i in range(n)])
    table.sum_is(key(col, "searched"), [key(col, "candidates"), key(col, "excluded_by_rules")])
    table.sum_is(key(col, "candidates"), [key(col, "review.screened"), key(col, "review.awaiting")])
    reasons = [key(col, f"review.reason.{r}") for r in figures.review_reasons]
    table.sum_is(key(col, "review.excluded"), reasons)
    table.sum_is(key(col, "review.screened"), [key(col, "review.approved"), key(col, "review.excluded")])
    table.sum_is(key(col, "review.approved"), [key(col, i) for i in LETTER_ITEMS])
    table.sum_is(key(col, "review.approved"), [key(col, "letters.invited"), key(col, "letters.not_sent")])
    table.sum_is(key(col, "letters.not_sent"), [key(col, "letters.drafted"), key(col, "letters.not_written")])
    table.sum_is(key(col, "letters.invited"), [key(col, "replies.replied"), key(col, "replies.none")])
    table.sum_is(key(col, "replies.replied"), [key(col, f"replies.{c}") for c in REPLY_CATEGORIES])


class _ReviewCounts(NamedTuple):
    screened: Counter[int]  # practice id -> candidates with a GP decision
    reasons: Counter[tuple[int, str]]  # (practice id, reason) -> candidates not to be invited


def _review_counts(conn: Connection, run_id: int) -> _ReviewCounts:
    """Candidates with a GP decision, and those not to be invited by reason, per practice."""
    rows = conn.execute(
        select(RESULT.c.practice_id, DECISION.c.decision, DECISION.c.reason_code, func.count())
        .select_from(RESULT)
        .join(
            DECISION, and_(DECISION.c.run_id == RESULT.c.run_id, DECISION.c.patient_id == RESULT.c.patient_id)
        )
        .where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate")
        .group_by(RESULT.c.practice_id, DECISION.c.decision, DECISION.c.reason_code)
    )
    screened: Counter[int] = Counter()
    reasons: Counter[tuple[int, str]] = Counter()
    for practice_id, decision, reason_code, n in rows:
        screened[practice_id] += n
        if decision != "invite":
            reasons[(practice_id, (reason_code or "").strip() or NO_REASON)] += n
    return _ReviewCounts(screened, reasons)


def _letter_counts(conn: Connection, run_id: int) -> dict[tuple[int, str], int]:
    """Approved candidates by what became of their letter and reply, per practice."""
    inv = INVITATION
    reply = func.lower(func.coalesce(inv.c.reply, ""))
    category = case(
        (inv.c.id.is_(None), "letters.not_written"),
        (inv.c.status == "drafted", "letters.drafted"),
        (reply == "interested", "replies.interested"),
        (reply.in_(["not_interested", "do_not_contact"]), "replies.declined"),
        (reply == "now_in_work", "replies.now_in_work"),
        (reply != "", "replies.other"),
        (inv.c.status.in_(["declined", "do_not_contact"]), "replies.declined"),
        else_="replies.none",
    )
    # Categorised in a subquery: PostgreSQL will not group by a CASE holding bound parameters.
    each = (
        select(RESULT.c.practice_id, category.label("what"))
        .select_from(RESULT)
        .join(
            DECISION, and_(DECISION.c.run_id == RESULT.c.run_id, DECISION.c.patient_id == RESULT.c.patient_id)
        )
        .outerjoin(inv, and_(inv.c.run_id == RESULT.c.run_id, inv.c.patient_id == RESULT.c.patient_id))
        .where(RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate", DECISION.c.decision == "invite")
        .subquery()
    )
    rows = conn.execute(
        select(each.c.practice_id, each.c.what, func.count()).group_by(each.c.practice_id, each.c.what)
    )
    out: Counter[tuple[int, str]] = Counter()
    for practice_id, what, n in rows:
        out[(practice_id, what)] += n
        if what.startswith("replies."):
            out[(practice_id, "letters.invited")] += n
            if what != "replies.none":
                out[(practice_id, "replies.replied")] += n
    return dict(out)


def _extracts(conn: Connection, fingerprints: list[str]) -> list[tuple[ExtractFigures, dict[str, int]]]:
    if not fingerprints:
        return []
    rows = conn.execute(
        select(EXTRACT).where(EXTRACT.c.fingerprint.in_(fingerprints)).order_by(EXTRACT.c.id)
    ).all()
    reasons: dict[int, Counter[str]] = {}
    for extract_id, reason, n in conn.execute(
        select(QUARANTINE.c.extract_id, QUARANTINE.c.reason_code, func.count())
        .where(QUARANTINE.c.extract_id.in_([r.id for r in rows] or [-1]))
        .group_by(QUARANTINE.c.extract_id, QUARANTINE.c.reason_code)
    ):
        reasons.setdefault(extract_id, Counter())[reason] += n
    out = []
    for r in rows:
        counts = reasons.get(r.id, Counter())
        info = ExtractFigures(
            extract_id=r.id,
            fingerprint=r.fingerprint,
            format=r.format,
            practice=r.practice_ods_code,
            extract_date=r.extract_date,
            reasons=sorted(counts),
        )
        out.append((info, {"read": r.records_read, "loaded": r.records_loaded, **counts}))
    return out


def _extract_figures(figures: RunFigures, extract: ExtractFigures, counts: dict[str, int]) -> None:
    table = figures.table
    col = f"extract{extract.extract_id}"
    key = figures.key
    quarantined = sum(counts[r] for r in extract.reasons)
    table.add(key(col, "quarantine.read"), counts["read"])
    table.add(key(col, "quarantine.loaded"), counts["loaded"])
    table.add(key(col, "quarantine.quarantined"), quarantined)
    parts = [table.add(key(col, f"quarantine.reason.{r}"), counts[r]) for r in extract.reasons]
    table.sum_is(key(col, "quarantine.quarantined"), parts)
    if counts["read"] >= counts["loaded"] + quarantined:
        # read = loaded + quarantined + records of kinds recruit does not use
        table.at_most(key(col, "quarantine.loaded"), key(col, "quarantine.read"))
        table.at_most(key(col, "quarantine.quarantined"), key(col, "quarantine.read"))
        if counts["read"] == counts["loaded"] + quarantined:
            table.sum_is(
                key(col, "quarantine.read"),
                [key(col, "quarantine.loaded"), key(col, "quarantine.quarantined")],
            )
