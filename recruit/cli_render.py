"""How the CLI shows results in the terminal: the library returns data, this turns it into text.

A search run's flow table (recruit.query.flow's StepFlow rows) and an evaluation against the
made-up truth (recruit.evaluation's Evaluation). Counts carry thousands separators (10,000), as
practice staff read numbers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # `recruit search` need not import the evaluation (nor synthetic_ehr)
    from recruit.evaluation.judge import Evaluation
    from recruit.query.flow import StepFlow


class RunHeading(Protocol):
    """What the flow table's heading names about a stored run (a search_run row will do)."""

    @property
    def id(self) -> int: ...
    @property
    def rule_set_name(self) -> str: ...
    @property
    def rule_set_version(self) -> str: ...
    @property
    def index_date(self) -> dt.date: ...
    @property
    def practice_ods_code(self) -> str | None: ...


# --- recruit search: the flow table ----------------------------------------------------------------


def format_flow(run: RunHeading, flows: Sequence[StepFlow]) -> str:
    """The flow table as plain text: one line per step, then the number of candidates.

    Counts carry thousands separators (10,000), as practice staff read numbers."""
    where = f" at practice {run.practice_ods_code}" if run.practice_ods_code else ""
    lines = [
        f"Search run {run.id}: {run.rule_set_name} {run.rule_set_version}, "
        f"index date {run.index_date}{where}",
        "",
    ]
    lines += flow_table(flows)
    candidates = flows[-1].kept if flows else 0
    lines += ["", f"Candidates: {candidates:,}"]
    lines.append(
        "fail alone: patients failing the step whatever the order; "
        "cost: patients who would be candidates if the step were dropped."
    )
    return "\n".join(lines)


def flow_table(flows: Sequence[StepFlow]) -> list[str]:
    """The steps as aligned text lines, counts right-aligned with thousands separators (10,000)."""
    header = ("#", "step", "kind", "entering", "kept", "excluded", "fail alone", "cost", "reason")
    table = [header] + [
        (
            str(f.index + 1),
            f.step_id,
            f.kind,
            f"{f.entering:,}",
            f"{f.kept:,}",
            f"{f.excluded:,}",
            "" if f.failing_alone is None else f"{f.failing_alone:,}",
            "" if f.cost is None else f"{f.cost:,}",
            f.reason,
        )
        for f in flows
    ]
    widths = [max(len(row[c]) for row in table) for c in range(len(header) - 1)]
    lines = []
    for row in table:
        cells = [
            cell.rjust(w) if c >= 3 or c == 0 else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


# --- recruit evaluate: a run against the made-up truth ----------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def evaluation_summary(ev: Evaluation) -> list[str]:
    """The figures in sentences a trial manager can read without the tables."""
    from recruit.evaluation.judge import NOT_IN_RECORDS

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


def render_evaluation(ev: Evaluation) -> list[Any]:
    """Rich renderables: the summary, then a table per step and a table per wave."""
    out: list[Any] = [Text("\n".join(evaluation_summary(ev)))]
    steps = Table(title="Each step against the truth (in the run's order)", title_justify="left")
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
    waves = Table(title="Letters in waves, strongest out-of-work evidence first", title_justify="left")
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
