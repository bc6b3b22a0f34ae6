"""Reading a run: its flow table, and the flow for any other step order, from the stored masks.

Each result's step_mask has bit i set when the patient passes step i on its own, so one
GROUP BY step_mask gives a small histogram from which every order's flow, and how many people
each step costs (those it alone keeps out), follow without running the search again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from recruit.search_run import SearchRun
from recruit.tables import RESULT


@dataclass(frozen=True)
class StepFlow:
    index: int
    step_id: str
    kind: str
    reason: str
    entering: int
    kept: int
    excluded: int
    failing_alone: int | None
    cost: int | None = None  # people who would become candidates if this step were dropped


def mask_histogram(conn: Connection, run_id: int) -> dict[int, int]:
    """step_mask -> number of patients, for one run."""
    rows = conn.execute(
        select(RESULT.c.step_mask, func.count()).where(RESULT.c.run_id == run_id).group_by(RESULT.c.step_mask)
    )
    return {int(mask): int(count) for mask, count in rows}


def practice_histograms(conn: Connection, run_id: int) -> dict[int, dict[int, int]]:
    """practice_id -> (step_mask -> number of patients): each practice's flow, from one query."""
    rows = conn.execute(
        select(RESULT.c.practice_id, RESULT.c.step_mask, func.count())
        .where(RESULT.c.run_id == run_id)
        .group_by(RESULT.c.practice_id, RESULT.c.step_mask)
    )
    out: dict[int, dict[int, int]] = {}
    for practice_id, mask, count in rows:
        out.setdefault(int(practice_id), {})[int(mask)] = int(count)
    return out


def flow_for_order(histogram: Mapping[int, int], order: Sequence[int]) -> list[dict[str, int]]:
    """Entering, kept and excluded at each step when the steps run in `order` (step indexes)."""
    out = []
    required = 0
    for step in order:
        entering = sum(n for mask, n in histogram.items() if mask & required == required)
        required |= 1 << step
        kept = sum(n for mask, n in histogram.items() if mask & required == required)
        out.append({"step_index": step, "entering": entering, "kept": kept, "excluded": entering - kept})
    return out


def step_costs(histogram: Mapping[int, int], n_steps: int) -> list[int]:
    """For each step, the people it alone keeps out: they pass every other step."""
    everything = (1 << n_steps) - 1
    return [histogram.get(everything & ~(1 << i), 0) for i in range(n_steps)]


def run_flow(conn: Connection, run_id: int) -> list[StepFlow]:
    """The stored flow table of a run, with each step's cost."""
    return flow_of(conn, SearchRun.load(conn, run_id))


def flow_of(conn: Connection, run: SearchRun) -> list[StepFlow]:
    """The stored flow table of a run already loaded, with each step's cost."""
    rows = run.counts(conn)
    costs = step_costs(mask_histogram(conn, run.id), len(rows))
    return [
        StepFlow(
            index=r.step_index,
            step_id=r.step_id,
            kind=r.kind,
            reason=r.description or "",
            entering=r.entering,
            kept=r.kept,
            excluded=r.excluded,
            failing_alone=r.failing_alone,
            cost=costs[r.step_index],
        )
        for r in rows
    ]
