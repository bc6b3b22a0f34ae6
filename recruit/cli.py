"""The `recruit` command: a thin face over the library, in words practice staff use."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from recruit import __version__
from recruit.db import describe, make_engine, parse_url, resolve_url, sqlite_path
from recruit.errors import RecruitError

app = typer.Typer(
    name="recruit",
    help="Find, screen and invite people for a research study from GP practice records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Create, update and check recruit's database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
quarantine_app = typer.Typer(help="See the records a load could not use, and why.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
codelists_app = typer.Typer(help="Check the codelists the search rules use.", no_args_is_help=True)
app.add_typer(codelists_app, name="codelists")

out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="Database address. Default: RECRUIT_DATABASE_URL, else recruit.db in this folder.",
        show_default=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        out.print(f"recruit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Find, screen and invite people for a research study from GP practice records."""


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Create the database, or bring it up to date with this version of recruit."""
    from recruit.migrate import current_revision, head_revision, upgrade

    engine = make_engine(db, create_folder=True)
    before = current_revision(engine)
    head = head_revision()
    if before == head:
        out.print(f"The database at {describe(engine.url)} is already up to date ({head}).")
        return
    upgrade(engine)
    action = "Created" if before is None else f"Updated from {before}"
    out.print(f"{action}: the database at {describe(engine.url)} is now at revision {head}.")


@db_app.command("status")
def db_status(db: DbOption = None) -> None:
    """Say where the database is and whether it is up to date."""
    from recruit.migrate import current_revision, head_revision

    url = parse_url(resolve_url(db))
    backend = url.get_backend_name()
    kind = {"sqlite": "SQLite file", "postgresql": "PostgreSQL server"}.get(backend, backend)
    path = sqlite_path(url) if backend == "sqlite" else None
    if path is not None and not path.exists():
        out.print(f"Database: {describe(url)} ({kind})")
        out.print("Revision: none yet. Run `recruit db upgrade` to create it.")
        return
    current = current_revision(make_engine(db))
    head = head_revision()
    out.print(f"Database: {describe(url)} ({kind})")
    if current is None:
        out.print("Revision: none (empty). Run `recruit db upgrade` to set it up.")
    elif current == head:
        out.print(f"Revision: {current} (up to date)")
    else:
        out.print(f"Revision: {current}; this recruit expects {head}. Run `recruit db upgrade` to update.")


def _ready_engine(db: str | None):  # type: ignore[no-untyped-def]
    """An engine on an up-to-date database (created if need be), so commands just work."""
    from recruit.migrate import current_revision, head_revision, upgrade

    engine = make_engine(db, create_folder=True)
    if current_revision(engine) != head_revision():
        upgrade(engine)
    return engine


def _date_option(value: str | None, option: str) -> dt.date | None:
    """A YYYY-MM-DD option as a date, or one plain line saying what is wrong with it."""
    from recruit.errors import RecruitError

    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RecruitError(f"{option} '{value}' is not a date like 2026-11-01.") from None


def _bar(description: str, total: int | None):  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task(description, total=total)
    return progress, lambda n: progress.advance(task, n)


@app.command("synth")
def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the made-up extract into.")],
    practices: Annotated[int, typer.Option(help="How many practices.", min=1)] = 1,
    patients: Annotated[int, typer.Option(help="How many patients in all.", min=1)] = 1000,
    seed: Annotated[int, typer.Option(help="Same seed, same output.")] = 0,
    config: Annotated[Path | None, typer.Option(help="YAML or JSON file overriding rates.")] = None,
    formats: Annotated[
        str, typer.Option("--formats", help="Comma-separated: ndjson, bundles, csv.")
    ] = "ndjson,bundles,csv",
) -> None:
    """Make realistic practice records for made-up people, with the hidden truth kept apart."""
    import synthetic_ehr

    progress, advance = _bar("Making patients", patients)
    with progress:
        summary = synthetic_ehr.generate(
            out_dir,
            practices=practices,
            patients=patients,
            seed=seed,
            config=config,
            formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
            progress=advance,
        )
    out.print(f"Made {summary.patients:,} patients in {summary.practices} practice(s) in {out_dir}")
    for kind, n in summary.counts.items():
        out.print(f"  {kind}: {n:,}")
    out.print(f"The hidden truth (never load it as records) is in {out_dir / 'truth'}")


@app.command("load")
def load(
    paths: Annotated[list[Path], typer.Argument(help="Extract files or folders.", show_default=False)],
    format: Annotated[
        str | None, typer.Option("--format", help="fhir or csv (default: worked out from the files).")
    ] = None,
    mapping: Annotated[
        Path | None, typer.Option(help="YAML mapping for a CSV export (see rules/mappings/).")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Also check every FHIR resource fully (slower).")
    ] = False,
    extract_date: Annotated[
        str | None, typer.Option(help="When the extract was taken, YYYY-MM-DD (default: today).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Load a practice extract (FHIR or CSV); records that cannot be used are quarantined."""
    from recruit.load import load_extract

    when = _date_option(extract_date, "--extract-date")
    engine = _ready_engine(db)
    total = sum(
        f.stat().st_size
        for p in paths
        if p.exists()
        for f in ([p] if p.is_file() else p.rglob("*"))
        if f.is_file()
    )
    progress, advance = _bar("Loading", total)
    with progress:
        summary = load_extract(
            engine, paths, format=format, mapping=mapping, extract_date=when, progress=advance, strict=strict
        )
    if summary.already_loaded:
        out.print(f"This extract was loaded before (extract {summary.extract_id}); nothing changed.")
        return
    out.print(
        f"Extract {summary.extract_id} loaded for practice(s) {', '.join(summary.practices) or '(none)'}"
    )
    out.print(f"  records read:        {summary.read:,}")
    out.print(f"  loaded:              {summary.loaded:,}")
    out.print(f"  repaired on the way: {summary.repaired:,} (dates without a time zone, read as UK time)")
    out.print(f"  quarantined:         {summary.quarantined:,}")
    for reason, n in summary.quarantined_by_reason.most_common():
        out.print(f"    {reason}: {n:,}")
    if summary.not_used:
        out.print(f"  not needed by recruit: {sum(summary.not_used.values()):,}")
        for what, n in summary.not_used.most_common():
            out.print(f"    {what}: {n:,}")
    if summary.quarantined:
        out.print("See them with: recruit quarantine list")


@quarantine_app.command("list")
def quarantine_list(
    extract: Annotated[int | None, typer.Option(help="Only this extract.")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 50,
    db: DbOption = None,
) -> None:
    """Show quarantined records: where each one is and what is wrong with it."""
    from rich.table import Table

    from recruit.load.quarantine import quarantine_counts, quarantine_rows

    engine = _ready_engine(db)
    counts = quarantine_counts(engine, extract)
    if not counts:
        out.print("No records are quarantined.")
        return
    for extract_id, reason, n in counts:
        out.print(f"extract {extract_id}: {reason}: {n:,}")
    table = Table("file", "line", "record", "field", "what is wrong")
    for row in quarantine_rows(engine, extract, limit):
        record = " ".join(str(v) for v in (row["resource_type"], row["resource_id"]) if v)
        table.add_row(
            Path(row["file"]).name, str(row["line"] or ""), record, row["field"] or "", row["reason"]
        )
    out.print(table)


@quarantine_app.command("export")
def quarantine_export(
    out_file: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
    extract: Annotated[int | None, typer.Option(help="Only this extract.")] = None,
    db: DbOption = None,
) -> None:
    """Write every quarantined record (where and why, no record contents) to a CSV file."""
    from recruit.load.quarantine import export_quarantine

    n = export_quarantine(_ready_engine(db), out_file, extract)
    out.print(f"Wrote {n:,} quarantined records to {out_file}")


@app.command("search")
def search(
    rules: Annotated[Path, typer.Option(help="The rule set, e.g. rules/instep.yaml.")] = Path(
        "rules/instep.yaml"
    ),
    index_date: Annotated[
        str | None, typer.Option(help="Search as on this date, YYYY-MM-DD (default: today).")
    ] = None,
    practice: Annotated[str | None, typer.Option(help="Only this practice (ODS code).")] = None,
    db: DbOption = None,
) -> None:
    """Run a rule set over the loaded records, store the run and print how many each step kept."""
    from recruit.query.flow import format_flow
    from recruit.query.run import run_search

    when = _date_option(index_date, "--index-date")
    engine = _ready_engine(db)
    run_id = run_search(engine, rules, index_date=when, practice=practice)
    with engine.connect() as conn:
        out.print(format_flow(conn, run_id), highlight=False, soft_wrap=True)


@codelists_app.command("check")
def codelists_check(
    rules: Annotated[Path, typer.Option(help="The rule set whose codelists to check.")] = Path(
        "rules/instep.yaml"
    ),
    db: DbOption = None,
) -> None:
    """Check every codelist a rule set uses loads cleanly, and say which never match the records."""
    from recruit.query.run import load_search
    from recruit.query.usage import codelist_usage

    _, codelists, _ = load_search(rules)  # a code it cannot recognise fails here, naming file and line
    usage = codelist_usage(_ready_engine(db), codelists)
    for u in usage:
        flag = "  <- never matched in the loaded records" if u.never_matched else ""
        out.print(
            f"{u.name}: {u.codes:,} codes, {u.codes_matched:,} seen; "
            f"{u.records:,} records of {u.patients:,} patients{flag}",
            highlight=False,
        )


def main() -> None:
    """Console entry point: user errors become one plain line on stderr, never a traceback."""
    try:
        app()
    except RecruitError as exc:
        err.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("Stopped. Anything not finished was not saved.")
        sys.exit(130)
