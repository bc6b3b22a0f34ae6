"""How the CLI shows results in the terminal: the library returns data, this turns it into text.

A search run's flow table (recruit.query.flow's StepFlow rows), an evaluation against the
made-up truth (recruit.evaluation's Evaluation), the load, review and replies summaries, and the
fitted weights that order a run's waves (recruit.waves). Counts carry thousands separators
(10,000), as practice staff read numbers.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rich.table import Table
from rich.text import Text

from recruit.load.coverage import system_words

if TYPE_CHECKING:  # `recruit search` need not import the evaluation (nor synthetic_ehr)
    from recruit.evaluation.judge import Evaluation
    from recruit.load.loader import LoadSummary
    from recruit.query.flow import StepFlow
    from recruit.replies import RepliesSummary
    from recruit.review import ImportSummary
    from recruit.waves import FittedWeights, ItemWeight, RunWeights


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


# --- load, review and replies summaries ----------------------------------------------------


def registration_lines(summary: LoadSummary) -> list[str]:
    """What the load says about registration, in words for practice staff (no identifiers)."""
    unknown, unnamed = summary.registration_start_unknown, summary.registration_practice_unnamed
    if not unknown:
        return []
    lines = [
        f"registration: {unknown:,} of {summary.patients:,} patient(s) have no registration start date "
        "in the extract; they count as registered from an unknown date only where a rule says "
        "'unknown_start: counts'"
    ]
    if unnamed:
        lines.append(
            f"  of them, {unnamed:,} name no practice at all and are filed under the extract's only practice"
        )
    return lines


def patient_lines(summary: LoadSummary) -> list[str]:
    """What the load says about the patients it stored, in words for practice staff."""
    lines = registration_lines(summary)
    if summary.same_person:
        lines.append(
            f"the same person: {summary.same_person:,} Patient record(s) repeat a person already sent in "
            "another Bundle (same NHS number and birth date) and were joined to them; where the copies "
            "disagree on name, address or registration, that person is held back from letters"
        )
    if summary.pseudonymised:
        lines.append(
            "pseudonymised extract: the data provider removed NHS numbers, names and addresses; its "
            f"{summary.patients:,} patient(s) are counted and searched (the provider checked who they are "
            "first), but no letter can ever be written to them"
        )
    elif summary.no_nhs_number:
        lines.append(
            f"no verified NHS number: {summary.no_nhs_number:,} patient(s) (missing, failing its check "
            "digit, or not verified by trace); they are stored with their records and counted, but "
            "searches leave them out and no letter can be written to them"
        )
    return lines


FILE_LINES = 12  # at most this many per-file lines for a FHIR extract (the rest summed up)


def file_lines(summary: LoadSummary) -> list[str]:
    """Per-file counts, when some kind of record came in more than one file (a table split over
    events_001.csv and events_002.csv, Observation split over several NDJSON files): read =
    stored + quarantined for each. A CSV export lists every file; a FHIR extract only the files
    of the kinds that were split, and at most FILE_LINES of them."""
    files = summary.by_file
    by_kind: dict[str, list[str]] = {}
    for path, f in files.items():
        by_kind.setdefault(f.kinds[0] if f.kinds else "", []).append(path)
    split = {kind for kind, paths in by_kind.items() if kind and len(paths) > 1}
    if not split:
        return []
    csv_only = all(Path(path).suffix.lower() == ".csv" for path in files)
    shown = [path for path, f in files.items() if csv_only or (f.kinds and f.kinds[0] in split)]
    names = [Path(path).name for path in shown]
    if len(set(names)) < len(names):  # the same name in two folders: say which
        names = shown
    lines = ["by file (read = stored + quarantined):"]
    width = min(max(len(name) for name in names), 40)
    limit = len(shown) if csv_only else FILE_LINES
    for path, name in list(zip(shown, names, strict=True))[:limit]:
        f = files[path]
        unused = f", not used {f.not_used:,}" if f.not_used else ""
        lines.append(
            f"  {name:<{width}}  read {f.read:,}, stored {f.stored:,}, quarantined {f.quarantined:,}{unused}"
        )
    if len(shown) > limit:
        rest = [files[path] for path in shown[limit:]]
        lines.append(
            f"  and {len(rest):,} more file(s): read {sum(f.read for f in rest):,}, stored "
            f"{sum(f.stored for f in rest):,}, quarantined {sum(f.quarantined for f in rest):,}"
        )
    return lines


def code_system_lines(
    coded: dict[str, int], prescribed: dict[str, int], uncovered: list[str], rule_set: str
) -> list[str]:
    """What the load says about code systems, in words for practice staff."""
    lines = []
    for what, counts in (("coded entries", coded), ("prescriptions", prescribed)):
        if counts:
            parts = ", ".join(
                f"{system_words(s)} {n:,}" for s, n in sorted(counts.items(), key=lambda x: -x[1])
            )
            lines.append(f"{what} by code system: {parts}")
    for system in uncovered:
        name = system_words(system)
        n = coded.get(system, 0) + prescribed.get(system, 0)
        what = " and ".join(
            w for w, counts in (("coded entries", coded), ("prescriptions", prescribed)) if counts.get(system)
        )
        lines.append(
            f"{n:,} {what} are {name} codes; no codelist of {rule_set or 'the rule set'} has {name} codes, "
            "so searches cannot find them"
        )
    return lines


def format_import_summary(s: ImportSummary, source: str) -> str:
    """What the import did and where the run's review stands, in words for practice staff."""
    from recruit.review import MAX_LISTED  # here: recruit.review is heavy, `recruit search` needs none of it

    lines = [
        f"Recorded the GP review from {source} for search run {s.run_id}: "
        f"{s.recorded} new decision(s), {s.changed} changed, {s.unchanged} unchanged.",
    ]
    if s.blank_kept_earlier:
        lines.append(
            f"{s.blank_kept_earlier} row(s) were empty here but decided before: the earlier decision stands."
        )
    if s.not_in_sheet:
        whose = f"of practice {s.practice} " if s.practice else ""
        lines.append(f"{s.not_in_sheet} candidate(s) {whose}in the run were not in this sheet.")
    if s.refused_rows:
        lines += ["", f"{len(s.refused_rows)} row(s) were NOT recorded (the other rows were):"]
        lines += [f"  row {n}: {why}." for n, why in s.refused_rows[:MAX_LISTED]]
        if len(s.refused_rows) > MAX_LISTED:
            lines.append(f"  ... and {len(s.refused_rows) - MAX_LISTED} more")
    lines += [
        "",
        f"Search run {s.run_id} now ({s.candidates} candidates):",
        f"  invite:           {s.invite}",
        f"  do not invite:    {sum(s.not_invited.values())}",
    ]
    lines += [f"    {label}: {n}" for label, n in s.not_invited.items()]
    lines.append(f"  not yet reviewed: {s.not_reviewed} (nobody is written to until a GP chooses Invite)")
    return "\n".join(lines)


def format_replies_summary(s: RepliesSummary, source: str) -> str:
    """What was recorded, in words for practice staff and the trial team."""
    from recruit.replies import REPLIES

    lines = [f"Read {s.rows} reply(ies) from {source}."]
    if s.recorded:
        lines.append(f"Recorded {sum(s.recorded.values())} (of which {s.changed} replaced an earlier reply):")
        lines += [f"  {REPLIES[code]}: {n}" for code, n in sorted(s.recorded.items())]
    if s.in_work_answers:
        lines.append(
            f"'In paid work' answers recorded: {s.in_work_answers[True]} yes, {s.in_work_answers[False]} no."
        )
    if s.in_work_set_aside:
        lines.append(
            f"{s.in_work_set_aside} earlier 'in paid work' answer(s) removed: "
            "the person asked not to be contacted."
        )
    if s.unchanged:
        lines.append(f"{s.unchanged} were already recorded; nothing changed for them.")
    lines.append(
        "Nobody who has been invited is invited again. People who said 'do not contact' are also "
        "left out of every other study's searches."
    )
    return "\n".join(lines)


# --- recruit waves: the fitted weights ---------------------------------------------------------


def _interval_words(w: ItemWeight, replies: int) -> str:
    from recruit.waves import MIN_ITEM  # (waves imports numpy; `recruit search` need not)

    if not w.learned:
        how_many = (
            f"only {w.replies_with} of the {replies} replies had this item"
            if w.replies_with < MIN_ITEM
            else f"all but {replies - w.replies_with} of the {replies} replies had this item"
        )
        return f"not learned ({how_many}): the rule file's weight, on the new scale"
    assert w.low is not None and w.high is not None
    span = f"{w.low:+.2f} to {w.high:+.2f}"
    if w.low > 0:
        return f"{span}: with it, people were more often out of work (odds x{math.exp(w.weight):.1f})"
    if w.high < 0:
        return f"{span}: with it, people were more often in paid work (odds x{math.exp(w.weight):.1f})"
    return f"{span}: these replies cannot tell whether it matters"


def format_fit(before: FittedWeights | None, new: FittedWeights) -> str:
    """Old and new weights, with 95% intervals, in words for the trial manager."""
    when = new.fitted_at.strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Weights for search run {new.run_id}, version {new.version} "
        f"(fitted by {new.fitted_by or 'unknown'}, {when}).",
        f"Learned from {new.replies_used} replies that said whether the person is in paid work: "
        f"{new.out_of_work} not in paid work, {new.in_work} in paid work. Replies from anyone who asked "
        "not to be contacted are never used.",
        "The new weights are log odds of being out of work, on another scale from the rule file's "
        "points; only their order and relative size matter. The 95% interval is how far the weight "
        "could be from this estimate given these replies.",
        "",
    ]
    old_title = f"version {before.version}" if before else "rule file"
    width = max(len(w.item) for w in new.items) + 2
    lines.append(f"{'Evidence item'.ljust(width)}{old_title:>12}{'new':>8}   95% interval")
    old = {w.item: w.weight for w in before.items} if before else {}
    for w in new.items:
        was = old.get(w.item, w.rule_weight)
        words = _interval_words(w, new.replies_used)
        lines.append(f"{w.item.replace('_', ' ').ljust(width)}{was:>12.2f}{w.weight:>8.2f}   {words}")
    lines += [
        "",
        "The next `recruit letters` wave for this run is put in this new order. Who may be written to "
        "does not change: the same people, in another order; nobody who declined, asked not to be "
        "contacted or was already invited is written to.",
    ]
    return "\n".join(lines)


def format_weights(weights: RunWeights) -> str:
    """`recruit waves show RUN`: the weights that will rank the run's next wave."""
    if weights.fitted is None:
        lines = [f"Search run {weights.run_id} is ranked by the rule file's weights (no fit yet):"]
        lines += [f"  {item.replace('_', ' ')}: {weight:g}" for item, weight in weights.rule_weights]
        return "\n".join(lines)
    return format_fit(weights.earlier, weights.fitted)
