"""The trial manager's audit report: one HTML page, and the same figures as CSV and JSON.

The page is self-contained (inline CSS and SVG, nothing fetched), so it opens offline and can be
mailed or printed. Only figures that went through `suppress.protect` reach any output; patient
rows never leave the database (see recruit.audit.figures).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import Connection, Engine, select

from recruit import __version__
from recruit.errors import RecruitError
from recruit.models import SearchRun
from recruit.safe_text import spreadsheet_safe
from recruit.tables import BATCH

from .diagram import Diagram, flow_diagram
from .figures import ALL, REPLY_ITEMS, ExtractFigures, RunFigures, gather
from .suppress import Protected, Rule, Shown, protect

CSV_COLUMNS = ("run", "column", "item", "label", "shown", "number", "kind")

# Figures the two-run comparison lines up, after the per-step ones.
COMPARED = (
    "searched",
    "excluded_by_rules",
    "candidates",
    "review.screened",
    "review.excluded",
    "review.approved",
    "letters.invited",
    "replies.replied",
    "replies.interested",
    "replies.declined",
    "replies.now_in_work",
)


class WaveRanking(TypedDict):
    """One letter batch of a run and the weights that ordered it (score item -> weight)."""

    wave: int
    batch: int
    written_on: str
    ranked_by: str
    weights: dict[str, float]


class FlowRow(TypedDict):
    """One figure of the per-practice table: a cell per column, indented by level."""

    label: str
    cells: list[str]
    level: int
    group: str


class StepRow(TypedDict):
    number: int
    id: str
    kind: str
    reason: str
    entering: str
    excluded: str
    kept: str
    cost: str


class ExtractRow(TypedDict):
    extract: ExtractFigures
    read: str
    loaded: str
    quarantined: str
    reasons: list[tuple[str, str]]  # (label, figure as shown)


class ComparisonRow(TypedDict):
    label: str
    a: str
    b: str
    difference: str  # as shown ("+1,234", "0", or empty)
    number: int | None  # the difference as a number, None when either side has none
    step: bool


# One published figure for the CSV and JSON, keyed by CSV_COLUMNS (read by name, so a plain dict).
FigureRecord = dict[str, str | int | None]


@dataclass
class RunReport:
    figures: RunFigures
    protected: Protected
    rules_file: str | None
    # Which weights put each wave of letters in order (issue 19): batch, date, the rule file's or
    # a fitted version, and the score items with their weights. No counts, no identifiers.
    rankings: list[WaveRanking] = field(default_factory=list)

    def shown(self, column: str, item: str) -> Shown:
        return self.protected.shown[self.figures.key(column, item)]

    def text(self, column: str, item: str) -> str:
        return fmt(self.shown(column, item))

    def shown_key(self, key: str) -> str:
        return fmt(self.protected.shown[key])

    def diagram(self, column: str, title: str) -> Diagram:
        f = self.figures
        steps = [(f"step{s.index}.excluded", f"{s.index + 1}. {s.exclusion}") for s in f.steps]
        return flow_diagram(
            title,
            lambda item: self.text(column, item),
            steps,
            [f"review.reason.{r}" for r in f.review_reasons],
        )

    def flow_rows(self) -> list[FlowRow]:
        """The per-practice table: one row per figure, one cell per column."""
        f = self.figures
        rows: list[FlowRow] = []

        def row(label: str, keys: list[str], level: int = 0, group: str = "") -> None:
            rows.append(
                FlowRow(label=label, cells=[self.shown_key(k) for k in keys], level=level, group=group)
            )

        cols = [c.key for c in f.columns]
        row("Records searched", [f.key(c, "searched") for c in cols], group="search")
        for s in f.steps:
            row(
                f"Step {s.index + 1} ({s.step_id}): {s.exclusion}",
                [f.key(c, f"step{s.index}.excluded") for c in cols],
                1,
            )
            row("left after this step", [f.step_kept(c, s.index) for c in cols], 2)
            row(
                "cost: would be candidates without this step alone",
                [f.key(c, f"step{s.index}.cost") for c in cols],
                2,
            )
        for item in ("excluded_by_rules", "candidates", "review.awaiting", "review.screened"):
            row(
                f.label(item),
                [f.key(c, item) for c in cols],
                0 if item == "candidates" else 1,
                group="review",
            )
        for r in f.review_reasons:
            row(f.label(f"review.reason.{r}"), [f.key(c, f"review.reason.{r}") for c in cols], 2)
        for item in ("review.excluded", "review.approved", "letters.not_sent", "letters.drafted"):
            row(
                f.label(item),
                [f.key(c, item) for c in cols],
                1,
                group="letters" if item == "letters.not_sent" else "",
            )
        for item in ("letters.not_written", "letters.invited", *REPLY_ITEMS):
            level = (
                2 if item.startswith("replies.") and item not in ("replies.replied", "replies.none") else 1
            )
            row(
                f.label(item),
                [f.key(c, item) for c in cols],
                level,
                group="replies" if item == "letters.invited" else "",
            )
        return rows

    def step_rows(self) -> list[StepRow]:
        f = self.figures
        return [
            StepRow(
                number=s.index + 1,
                id=s.step_id,
                kind=s.kind,
                reason=s.exclusion,
                entering=self.shown_key(f.step_entering(ALL, s.index)),
                excluded=self.text(ALL, f"step{s.index}.excluded"),
                kept=self.shown_key(f.step_kept(ALL, s.index)),
                cost=self.text(ALL, f"step{s.index}.cost"),
            )
            for s in f.steps
        ]

    def refusal_rows(self) -> list[tuple[str, str]]:
        f = self.figures
        return [
            (f.label(f"letters.refused.{r}"), self.text(ALL, f"letters.refused.{r}"))
            for r in f.refusal_reasons
        ]

    def extract_rows(self) -> list[ExtractRow]:
        f = self.figures
        out = []
        for e in f.extracts:
            col = f"extract{e.extract_id}"
            out.append(
                ExtractRow(
                    extract=e,
                    read=self.text(col, "quarantine.read"),
                    loaded=self.text(col, "quarantine.loaded"),
                    quarantined=self.text(col, "quarantine.quarantined"),
                    reasons=[
                        (f.label(f"quarantine.reason.{r}"), self.text(col, f"quarantine.reason.{r}"))
                        for r in e.reasons
                    ],
                )
            )
        return out

    def reproduce_command(self) -> str:
        p = self.figures.provenance
        command = f"recruit search --rules {self.rules_file or 'RULES.yaml'} --index-date {p['index_date']}"
        if p["practice_ods_code"]:
            command += f" --practice {p['practice_ods_code']}"
        return command

    def records(self) -> list[FigureRecord]:
        """Every published figure, in report order, for CSV and JSON."""
        f = self.figures
        out: list[FigureRecord] = []
        for key, shown in self.protected.shown.items():
            _, column, item = key.split("|", 2)
            out.append(
                {
                    "run": f.run_id,
                    "column": column,
                    "item": item,
                    "label": self.label_for(item),
                    "shown": shown.text,
                    "number": shown.number,
                    "kind": shown.kind,
                }
            )
        return out

    def label_for(self, item: str) -> str:
        if item.startswith("step") and item.endswith(".kept"):
            index = int(item[4:].split(".", 1)[0])
            return f"Left after step {index + 1} ({self.figures.steps[index].step_id})"
        return self.figures.label(item)


@dataclass
class Report:
    runs: list[RunReport]
    rule: Rule
    generated_on: dt.date

    def comparison(self) -> list[ComparisonRow]:
        """Run A against run B, figure by figure, steps matched by id. A difference is taken
        between the figures as shown, so it tells nothing the two columns do not."""
        if len(self.runs) != 2:
            return []
        a, b = self.runs
        rows: list[ComparisonRow] = []

        def line(label: str, shown_a: Shown | None, shown_b: Shown | None, step: bool = False) -> None:
            diff = None
            if shown_a is not None and shown_b is not None:
                number_a, number_b = shown_a.number, shown_b.number
                if number_a is not None and number_b is not None:
                    diff = number_b - number_a
            rows.append(
                ComparisonRow(
                    label=label,
                    a=fmt(shown_a) if shown_a else "not in this run",
                    b=fmt(shown_b) if shown_b else "not in this run",
                    difference="" if diff is None else f"{diff:+,}" if diff else "0",
                    number=diff,
                    step=step,
                )
            )

        line("Records searched", a.shown(ALL, "searched"), b.shown(ALL, "searched"))
        steps_a = {s.step_id: s for s in a.figures.steps}
        steps_b = {s.step_id: s for s in b.figures.steps}
        ids = [s.step_id for s in a.figures.steps] + [i for i in steps_b if i not in steps_a]
        for step_id in ids:
            sa, sb = steps_a.get(step_id), steps_b.get(step_id)
            either = sb or sa
            assert either is not None  # step_id is a step of run A or of run B
            reason = either.exclusion
            for what in ("excluded", "cost"):
                line(
                    f"{step_id}: {reason}" if what == "excluded" else f"{step_id}: cost",
                    a.shown(ALL, f"step{sa.index}.{what}") if sa else None,
                    b.shown(ALL, f"step{sb.index}.{what}") if sb else None,
                    step=True,
                )
        for item in COMPARED[1:]:
            line(a.figures.label(item), a.shown(ALL, item), b.shown(ALL, item))
        return rows

    def data(self) -> dict[str, object]:
        """audit.json's document (written out whole with json.dumps)."""
        return {
            "report": "recruit audit",
            "generated_on": self.generated_on.isoformat(),
            "recruit_version": __version__,
            "suppression": {
                "enabled": self.rule.enabled,
                "threshold": self.rule.threshold,
                "rounding": self.rule.rounding,
                "rule": self.rule.describe(),
            },
            "runs": [
                {
                    "provenance": r.figures.provenance,
                    "rules_file": r.rules_file,
                    "rule_set_text_sha256": _sha(r.figures.rule_set_text),
                    "reproduce": r.reproduce_command(),
                    "steps": [
                        {"number": s.index + 1, "id": s.step_id, "kind": s.kind, "reason": s.reason}
                        for s in r.figures.steps
                    ],
                    "columns": [{"key": c.key, "title": c.title} for c in r.figures.columns],
                    "extracts": [
                        {
                            "extract": e.extract_id,
                            "fingerprint": e.fingerprint,
                            "format": e.format,
                            "practice": e.practice,
                            "extract_date": e.extract_date.isoformat() if e.extract_date else None,
                        }
                        for e in r.figures.extracts
                    ],
                    "figures": r.records(),
                    "wave_rankings": r.rankings,
                }
                for r in self.runs
            ],
            "comparison": [
                {"label": row["label"], "a": row["a"], "b": row["b"], "difference": row["number"]}
                for row in self.comparison()
            ],
        }


def fmt(shown: Shown) -> str:
    """A figure for people: thousands separated; "<8" and "[c]" as they are."""
    return f"{shown.number:,}" if shown.number is not None else shown.text


def _sha(text: str | None) -> str | None:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None


def latest_run(engine: Engine) -> int:
    run = SearchRun.__table__
    with engine.connect() as conn:
        found = conn.execute(
            select(run.c.id).where(run.c.status == "finished").order_by(run.c.id.desc()).limit(1)
        ).scalar()
    if found is None:
        raise RecruitError("There are no finished search runs yet. Run `recruit search` first.")
    return int(found)


def build_report(engine: Engine, run_ids: Sequence[int], rule: Rule, today: dt.date | None = None) -> Report:
    """Count, suppress and lay out the figures for one run, or two to compare."""
    if not 1 <= len(run_ids) <= 2:
        raise RecruitError("Give one search run, or two to compare side by side.")
    runs = []
    with engine.connect() as conn:
        for run_id in run_ids:
            figures = gather(conn, run_id)
            rules_file = f"run-{run_id}-rules.yaml" if figures.rule_set_text is not None else None
            runs.append(
                RunReport(figures, protect(figures.table, rule), rules_file, wave_rankings(conn, run_id))
            )
    return Report(runs, rule, today or dt.date.today())


def wave_rankings(conn: Connection, run_id: int) -> list[WaveRanking]:
    """Each letter batch of the run, oldest first, with the weights that ordered it."""
    rows = conn.execute(
        select(BATCH.c.id, BATCH.c.created_at, BATCH.c.ranking)
        .where(BATCH.c.run_id == run_id)
        .order_by(BATCH.c.id)
    ).all()
    waves: list[WaveRanking] = []
    for number, row in enumerate(rows, start=1):
        ranking = row.ranking or {"by": "rule file (recorded before recruit kept the ranking)", "weights": {}}
        created = row.created_at
        by = ranking.get("by", "rule file")
        if by == "fitted":
            by = f"weights fitted to replies, version {ranking.get('version')}"
        waves.append(
            WaveRanking(
                wave=number,
                batch=row.id,
                written_on=(created if isinstance(created, str) else created.isoformat())[:10],
                ranked_by=by,
                weights=dict(ranking.get("weights", {})),
            )
        )
    return waves


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("recruit.audit", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: Report) -> str:
    return _environment().get_template("report.html.j2").render(report=report, ALL=ALL)


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """audit.html, audit.csv, audit.json (and each run's rule file as run), in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    html = out_dir / "audit.html"
    html.write_text(render_html(report), encoding="utf-8")
    written.append(html)
    data = report.data()
    js = out_dir / "audit.json"
    js.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written.append(js)
    table = out_dir / "audit.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in report.runs:
            for record in r.records():
                writer.writerow([spreadsheet_safe(record[c]) for c in CSV_COLUMNS])
    written.append(table)
    if len(report.runs) == 2:
        comparison = out_dir / "audit-comparison.csv"
        a, b = (r.figures.run_id for r in report.runs)
        with comparison.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["figure", f"run {a}", f"run {b}", "difference"])
            for row in report.comparison():
                values = (row["label"], row["a"], row["b"], "" if row["number"] is None else row["number"])
                writer.writerow([spreadsheet_safe(v) for v in values])
        written.append(comparison)
    for r in report.runs:
        if r.rules_file and r.figures.rule_set_text is not None:
            path = out_dir / r.rules_file
            path.write_text(r.figures.rule_set_text, encoding="utf-8")
            written.append(path)
    return written


def audit(engine: Engine, run_ids: Sequence[int], out_dir: Path, rule: Rule) -> tuple[Report, list[Path]]:
    """The whole `recruit audit`: the latest finished run when none is given."""
    report = build_report(engine, list(run_ids) or [latest_run(engine)], rule)
    return report, write_report(report, out_dir)
