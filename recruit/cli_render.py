"""How the CLI shows results in the terminal: the library returns data, this turns it into text.

A search run's flow table (recruit.query.flow's StepFlow rows). Counts carry thousands
separators (10,000), as practice staff read numbers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
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
