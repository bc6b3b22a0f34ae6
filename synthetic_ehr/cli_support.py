"""Glue for `recruit synth`: a rich progress bar around `generate` and a printable summary.

The lead's CLI can call `run_with_progress(...)` with the parsed options; `python -m
synthetic_ehr` uses the same function so the two behave alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .generate import ALL_FORMATS, GenerationSummary, generate

PROGRESS_THRESHOLD = 20_000  # below this a bar is just noise


def run_with_progress(
    out: Path,
    *,
    practices: int = 1,
    patients: int = 1000,
    seed: int = 0,
    config: Path | None = None,
    formats: Sequence[str] = ALL_FORMATS,
    workers: int | None = None,
    console: Console | None = None,
    show_progress: bool | None = None,
) -> GenerationSummary:
    """Generate with a progress bar on long runs (or when show_progress is True)."""
    console = console or Console(stderr=True)
    if show_progress is None:
        show_progress = patients >= PROGRESS_THRESHOLD and console.is_terminal
    if not show_progress:
        return generate(
            out,
            practices=practices,
            patients=patients,
            seed=seed,
            config=config,
            formats=formats,
            workers=workers,
        )
    with Progress(
        TextColumn("[bold]synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("patients", total=patients)
        return generate(
            out,
            practices=practices,
            patients=patients,
            seed=seed,
            config=config,
            formats=formats,
            workers=workers,
            progress=lambda n: bar.advance(task, n),
        )


def summary_lines(summary: GenerationSummary) -> list[str]:
    """Human-readable lines describing what was written."""
    lines = [
        f"Wrote {summary.patients:,} patients in {summary.practices} practices (seed {summary.seed})"
        f" to {summary.out}",
    ]
    for rtype, n in summary.counts.items():
        if rtype != "patients":
            lines.append(f"  {rtype:<18} {n:>12,}")
    lines.append(f"  ground truth: {summary.out / 'truth'} (keep it away from the extract)")
    if summary.nhs_numbers_outside_reserved_range:
        lines.append(
            "  note: more patients than the 999 test range holds; overflow NHS numbers use the "
            "unissued 990-998 prefixes"
        )
    return lines
