"""The `recruit` command: a thin face over the library, in words practice staff use."""

from __future__ import annotations

import datetime as dt
import functools
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

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
        metavar="FILE|URL",
        help="The database: a file such as recruit.db, or a server address such as "
        "postgresql+psycopg://user@host/dbname. Default: RECRUIT_DATABASE_URL, else recruit.db "
        "in this folder.",
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
    kind = {"sqlite": "SQLite file", "postgresql": "PostgreSQL server", "duckdb": "DuckDB file"}.get(
        backend, backend
    )
    path = sqlite_path(url) if backend in ("sqlite", "duckdb") else None
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
        _clean_leftovers(make_engine(db))
    else:
        out.print(f"Revision: {current}; this recruit expects {head}. Run `recruit db upgrade` to update.")


def _ready_engine(db: str | None, *, create: bool = False, create_flag: str | None = None):
    """An engine on an existing, up-to-date database; otherwise one line saying what to run.

    Only `recruit db upgrade` (or a command's --create) makes a database, and only it upgrades one.
    """
    from recruit.migrate import open_database

    engine = open_database(db, create=create, create_flag=create_flag)
    _clean_leftovers(engine)
    return engine


def _clean_leftovers(engine) -> None:
    """Delete what a killed command left half-written (folders of letters), and say so."""
    from recruit.work_folders import clean_leftovers

    removed = clean_leftovers(engine)
    if removed:
        err.print(
            f"Deleted {removed} unfinished folder(s) left by a letters run that was stopped part-way "
            "(nothing in them was recorded or posted).",
            highlight=False,
        )


def _date_option(value: str | None, option: str) -> dt.date | None:
    """A YYYY-MM-DD option as a date, or one plain line saying what is wrong with it."""
    from recruit.errors import RecruitError

    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RecruitError(f"{option} '{value}' is not a date like 2026-11-01.") from None


def _bar(description: str, total: int | None):
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
        str,
        typer.Option(
            "--formats",
            help=(
                "Comma-separated: ndjson, bundles, csv, or a tabular shape "
                "(emis, sre, cprd_aurum, opensafely, omop)."
            ),
        ),
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
        str | None,
        typer.Option(
            help="When the extract was taken, YYYY-MM-DD (default: from its manifest, Bundle "
            "timestamps, the records' meta.lastUpdated, or the CSV mapping's date file)."
        ),
    ] = None,
    practice: Annotated[
        str | None,
        typer.Option(
            help="The practice's ODS code, for an extract whose records do not name their practice "
            "(made-up data such as Synthea, a Bulk export without Organizations)."
        ),
    ] = None,
    create: Annotated[
        bool,
        typer.Option(
            "--create",
            help="Start a new database if there is none yet (otherwise a missing one is an error).",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Load a practice extract (FHIR or CSV); records that cannot be used are quarantined."""
    from recruit.cli_render import code_system_lines, file_lines, patient_lines
    from recruit.load import load_extract
    from recruit.load.files import DELETED_PATIENT

    when = _date_option(extract_date, "--extract-date")
    engine = _ready_engine(db, create=create, create_flag="--create")
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
            engine,
            paths,
            format=format,
            mapping=mapping,
            extract_date=when,
            progress=advance,
            strict=strict,
            practice=practice,
        )
    if summary.already_loaded:
        out.print(f"This extract was loaded before (extract {summary.extract_id}); nothing changed.")
        return
    out.print(
        f"Extract {summary.extract_id} loaded for practice(s) {', '.join(summary.practices) or '(none)'}"
    )
    if summary.extract_date is not None:
        out.print(f"  taken on:            {summary.extract_date} (from {summary.date_source})")
    out.print(f"  records read:        {summary.read:,}")
    out.print(f"  loaded:              {summary.loaded:,}")
    out.print(
        f"  repaired on the way: {summary.repaired:,} (such as dates without a time zone, read as UK "
        "time, or quantities written as text, read as numbers)"
    )
    out.print(f"  quarantined:         {summary.quarantined:,}")
    for reason, n in summary.quarantined_by_reason.most_common():
        out.print(f"    {reason}: {n:,}")
    if summary.by_kind:
        out.print("  by kind of record (read = stored + quarantined):")
        width = max(len(kind) for kind in summary.by_kind)
        for kind, k in summary.by_kind.items():
            top = ", ".join(f"{code} {n:,}" for code, n in k.reasons[:3])
            more = f" (top reasons: {top})" if top else ""
            counts = f"read {k.read:,}, stored {k.stored:,}, quarantined {k.quarantined:,}"
            out.print(f"    {kind:<{width}}  {counts}{more}", highlight=False)
    for line in file_lines(summary):
        out.print(f"  {line}", highlight=False)
    if summary.lookups:
        out.print("  lookup tables (translations of codes and ids, not records):")
        for path, n in summary.lookups.items():
            out.print(f"    {Path(path).name}: {n:,} entries", highlight=False)
    if summary.not_used:
        out.print(f"  not needed by recruit: {sum(summary.not_used.values()):,}")
        for what, n in summary.not_used.most_common():
            out.print(f"    {what}: {n:,}")
    if summary.stu3_records:
        out.print(f"  GP Connect (FHIR STU3) records: {summary.stu3_records:,}")
    if summary.empty_bundles:
        files = summary.empty_bundle_files
        others = f" and {len(files) - 1:,} other file(s)" if len(files) > 1 else ""
        out.print(
            f"  Bundles with no entries: {summary.empty_bundles:,} (in {files[0]}{others}); "
            "they held nothing to load",
            highlight=False,
        )
    if deleted := summary.not_used.get(DELETED_PATIENT):
        out.print(
            f"  {deleted:,} Bundle entry(ies) asked to delete a patient record: recruit deletes "
            "nothing on a load; the people they name are held back from letters",
            highlight=False,
        )
    if summary.holds:
        out.print(
            f"  held back from letters: {summary.holds:,} quarantined record(s) still name a person and "
            "say they died or left, or carry a code (such as an opt-out); to be safe, nobody they name "
            "will be written to"
        )
    for line in patient_lines(summary):
        out.print(f"  {line}")
    for line in code_system_lines(
        summary.coded_by_system, summary.prescribed_by_system, summary.uncovered_systems, summary.rule_set
    ):
        out.print(f"  {line}", highlight=False)
    if summary.retired:
        out.print(
            f"  {summary.retired:,} patient id(s) now name a different person (another NHS number or "
            "birth date): each is a new patient; the earlier person's GP review is not passed on"
        )
    for ods, kinds in summary.kept_earlier.items():
        out.print(
            f"  Practice {ods}: this extract has no {', '.join(kinds)} records; the earlier ones were kept."
        )
    if summary.quarantined:
        out.print("See them with: recruit quarantine list")


ReasonOption = Annotated[
    str | None,
    typer.Option("--reason", help="Only records quarantined for this reason (e.g. date_in_future)."),
]
FileOption = Annotated[
    str | None, typer.Option("--file", help="Only records from this file (its name or part of its path).")
]


def _nothing_quarantined(engine, only) -> str:
    """No records match: say so, and which reasons there are when a reason was asked for."""
    from recruit.load.quarantine import quarantine_reasons

    if not (only.extract_id is not None or only.reason or only.file):
        return "No records are quarantined."
    message = "No quarantined records match."
    reasons = quarantine_reasons(engine)
    if only.reason and reasons:
        message += f" The reasons recorded are: {', '.join(reasons)}."
    return message


@quarantine_app.command("list")
def quarantine_list(
    extract: Annotated[int | None, typer.Option(help="Only this extract.")] = None,
    reason: ReasonOption = None,
    file: FileOption = None,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 50,
    db: DbOption = None,
) -> None:
    """Show quarantined records: where each one is and what is wrong with it."""
    from rich.table import Table

    from recruit.load.quarantine import Only, quarantine_counts, quarantine_rows

    engine = _ready_engine(db)
    only = Only(extract, reason, file)
    counts = quarantine_counts(engine, only)
    if not counts:
        out.print(_nothing_quarantined(engine, only))
        return
    for extract_id, reason, n in counts:
        out.print(f"extract {extract_id}: {reason}: {n:,}")
    # Grouped by file, each file's full path on a line of its own (never cut short or wrapped).
    table = None
    current = None
    for row in quarantine_rows(engine, only, limit):  # identifiers masked there
        if row["file"] != current:
            if table is not None:
                out.print(table)
            current = row["file"]
            out.print(f"In {current}:", soft_wrap=True, highlight=False)
            table = Table("where", "record", "field", "what is wrong")
        record = " ".join(str(v) for v in (row["resource_type"], row["resource_id"]) if v)
        assert table is not None
        table.add_row(_where(row["line"], row["entry"]), record, row["field"] or "", row["reason"])
    if table is not None:
        out.print(table)


def _where(line: int | None, entry: int | None) -> str:
    """Where in its file a record was: its line, and its place in its Bundle (Bundle.entry[0]
    is the first, as FHIR paths count)."""
    parts = [f"line {line}"] if line is not None else []
    if entry is not None:
        parts.append(f"entry[{entry}]")
    return ", ".join(parts)


@quarantine_app.command("export")
def quarantine_export(
    out_file: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
    extract: Annotated[int | None, typer.Option(help="Only this extract.")] = None,
    reason: ReasonOption = None,
    file: FileOption = None,
    db: DbOption = None,
) -> None:
    """Write every quarantined record (where and why, no record contents) to a CSV file."""
    from recruit.load.quarantine import Only, export_quarantine

    n = export_quarantine(_ready_engine(db), out_file, Only(extract, reason, file))
    out.print(f"Wrote {n:,} quarantined records to {out_file} (readable by you only: it may name patients)")


@app.command("search")
def search(
    rules: Annotated[
        Path | None,
        typer.Option(
            help="The rule set (default: rules/instep.yaml in this folder, else the one recruit comes with).",
            show_default=False,
        ),
    ] = None,
    index_date: Annotated[
        str | None,
        typer.Option(
            metavar="YYYY-MM-DD",
            help="Search as on this date (default: the date the newest extract of the practices "
            "searched was taken).",
        ),
    ] = None,
    practice: Annotated[str | None, typer.Option(help="Only this practice (ODS code).")] = None,
    db: DbOption = None,
) -> None:
    """Run a rule set over the loaded records, store the run and print how many each step kept."""
    from recruit.cli_render import format_flow
    from recruit.query.absent import search_warnings
    from recruit.query.flow import flow_of
    from recruit.query.run import IndexDate, default_index_date, run_search
    from recruit.resources import default_rules
    from recruit.search_run import SearchRun

    when = _date_option(index_date, "--index-date")
    engine = _ready_engine(db)
    chosen = IndexDate(when, "given with --index-date") if when else default_index_date(engine, practice)
    run_id = run_search(engine, rules or default_rules(), index_date=chosen.date, practice=practice)
    out.print(f"Index date: {chosen.date} ({chosen.reason}).", highlight=False, soft_wrap=True)
    if when is None:
        out.print("To search as on another date, give --index-date YYYY-MM-DD.", highlight=False)
    with engine.connect() as conn:
        run = SearchRun.load(conn, run_id)
        out.print(format_flow(run, flow_of(conn, run)), highlight=False, soft_wrap=True)
        for warning in search_warnings(conn, run_id):
            out.print(f"Warning: {warning}", highlight=False, soft_wrap=True)


@codelists_app.command("check")
def codelists_check(
    rules: Annotated[
        Path | None,
        typer.Option(
            help="The rule set whose codelists to check (default: rules/instep.yaml in this folder, "
            "else the one recruit comes with).",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Check every codelist a rule set uses loads cleanly, and say which never match the records."""
    from recruit.query.run import load_search
    from recruit.query.usage import codelist_usage
    from recruit.resources import default_rules

    # A code it cannot recognise fails here, naming file and line.
    _, codelists, _ = load_search(rules or default_rules())
    usage = codelist_usage(_ready_engine(db), codelists)
    for u in usage:
        flag = "  <- never matched in the loaded records" if u.never_matched else ""
        out.print(
            f"{u.name}: {u.codes:,} codes, {u.codes_matched:,} seen; "
            f"{u.records:,} records of {u.patients:,} patients{flag}",
            highlight=False,
        )


# --- GP review and replies (recruit review export/import, recruit replies import) ------------

review_app = typer.Typer(
    help="GP screening: the candidates out to a spreadsheet, and the GP's decisions back in.",
    no_args_is_help=True,
)
app.add_typer(review_app, name="review")
replies_app = typer.Typer(help="Record the reply slips people send back.", no_args_is_help=True)
app.add_typer(replies_app, name="replies")


@review_app.command("export")
def review_export(
    run: Annotated[int, typer.Argument(help="The search run number (recruit search prints it).")],
    out_file: Annotated[
        Path,
        typer.Option(
            "--out",
            help="The workbook to write, e.g. review.xlsx; with several practices, one each: "
            "review-A81001.xlsx, review-B82002.xlsx, ...",
        ),
    ],
    practice: Annotated[
        str | None,
        typer.Option(help="Only this practice's candidates (its ODS code, e.g. A81001).", show_default=False),
    ] = None,
    db: DbOption = None,
) -> None:
    """Write a search run's candidates to a workbook per practice for its GPs to screen."""
    from recruit.review import export_review, export_review_by_practice

    engine = _ready_engine(db)
    bar, _ = _bar("Writing the review workbook", None)
    task = bar.task_ids[0]

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        if practice is None:
            summaries = export_review_by_practice(engine, run, out_file, progress=progress)
        else:
            summaries = [export_review(engine, run, out_file, practice=practice, progress=progress)]
    for summary in summaries:
        where = f" of practice {summary.practice}" if summary.practice else ""
        out.print(
            f"Wrote {summary.rows:,} candidates{where} from search run {run} to {summary.path} "
            "for GP screening.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if len(summaries) > 1:
        out.print(
            "Give each practice only its own workbook: each lists only that practice's patients.",
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        "Each workbook identifies patients (names, dates of birth, NHS numbers, addresses) and can be "
        "opened only by you on this computer. Keep it inside the practice, do not email it outside "
        "the NHS, and delete spare copies once the decisions are imported.",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f'When the GP has filled it in: recruit review import {summaries[0].path} --reviewer "Dr Name"',
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@review_app.command("import")
def review_import(
    sheet: Annotated[Path, typer.Argument(help="The filled-in review workbook (.xlsx).")],
    reviewer: Annotated[str, typer.Option(help="The GP who made the decisions.")],
    run: Annotated[
        int | None, typer.Option(help="Check the workbook is for this search run.", show_default=False)
    ] = None,
    db: DbOption = None,
) -> None:
    """Record the GP's decisions from a review workbook.

    A sheet that does not match its search is refused whole; a row that no longer shows its person,
    is of another practice or is older than a newer decision is left out and listed (exit status 1).
    """
    from recruit.cli_render import format_import_summary
    from recruit.review import import_review

    summary = import_review(_ready_engine(db), sheet, reviewer, run_id=run)
    out.print(format_import_summary(summary, sheet.name), highlight=False, markup=False, soft_wrap=True)
    if summary.refused_rows:
        err.print(
            f"{len(summary.refused_rows)} row(s) of {sheet.name} were not recorded (listed above); "
            "the other rows were. Check those rows with the GP, then import again or export a new sheet.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


@replies_app.command("import")
def replies_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV or .xlsx with columns: study number, reply, date (and, if asked, in paid work)."
        ),
    ],
    db: DbOption = None,
) -> None:
    """Record reply slips: interested, not interested, do not contact, now in paid work."""
    from recruit.cli_render import format_replies_summary
    from recruit.replies import import_replies

    summary = import_replies(_ready_engine(db), file)
    out.print(format_replies_summary(summary, file.name), highlight=False, markup=False, soft_wrap=True)


# --- waves that learn (recruit waves fit/show) -----------------------------------------------------

waves_app = typer.Typer(
    help="Learn the out-of-work evidence weights from the replies, to order the next wave of letters.",
    no_args_is_help=True,
)
app.add_typer(waves_app, name="waves")


@waves_app.command("fit")
def waves_fit(
    run: Annotated[int, typer.Argument(help="The search run whose replies to learn from.")],
    by: Annotated[str | None, typer.Option("--by", help="Who is fitting (default: your login name).")] = None,
    db: DbOption = None,
) -> None:
    """Fit the evidence weights to the replies (in paid work or not) and order the next wave by them.
    Never changes who may be written to; refuses when there are too few replies."""
    from recruit.cli_render import format_fit
    from recruit.waves import fit_weights

    before, new = fit_weights(_ready_engine(db), run, fitted_by=by)
    out.print(format_fit(before, new), highlight=False, markup=False, soft_wrap=True)


@waves_app.command("show")
def waves_show(
    run: Annotated[int, typer.Argument(help="The search run.")],
    db: DbOption = None,
) -> None:
    """Show the weights that will order the run's next wave of letters."""
    from recruit.cli_render import format_weights
    from recruit.waves import run_weights

    with _ready_engine(db).connect() as conn:
        weights = run_weights(conn, run)
    out.print(format_weights(weights), highlight=False, markup=False, soft_wrap=True)


# --- recruit audit ------------------------------------------------------------------------------


@app.command("audit")
def audit_command(
    runs: Annotated[
        list[int] | None,
        typer.Argument(
            help="Search run number(s): one, or two to compare (default: the latest).", show_default=False
        ),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the report into.")] = Path("audit"),
    no_suppression: Annotated[
        bool,
        typer.Option("--no-suppression", help="Show exact small numbers (only for use inside the practice)."),
    ] = False,
    threshold: Annotated[int, typer.Option(help="Counts below this are shown as '<N'.")] = 8,
    rounding: Annotated[int, typer.Option(help="Round other counts to the nearest this.")] = 5,
    db: DbOption = None,
) -> None:
    """Write the trial manager's audit report: the recruitment flow as counts, no patient details."""
    from recruit.audit import Rule, audit

    rule = Rule(threshold=threshold, rounding=rounding, enabled=not no_suppression)
    report, paths = audit(_ready_engine(db), runs or [], out_dir, rule)
    numbers = " and ".join(str(r.figures.run_id) for r in report.runs)
    out.print(f"Audit report for search run {numbers} written to {out_dir}:", highlight=False)
    for path in paths:
        out.print(f"  {path.name}", highlight=False)
    out.print(
        f"Open {out_dir / 'audit.html'} in a web browser; it works offline and prints.", highlight=False
    )
    if no_suppression:
        out.print("Small numbers are NOT hidden in this report: do not send it outside the practice.")
    hidden = sum(len(r.protected.secondary) for r in report.runs)
    if hidden:
        out.print(f"{hidden} further figure(s) hidden as [c] so that small numbers cannot be worked out.")


# --- end recruit audit --------------------------------------------------------------------------


# --- recruit evaluate ----------------------------------------------------------------------------


@app.command("evaluate")
def evaluate(
    run: Annotated[int, typer.Argument(help="The search run to check (its number).", show_default=False)],
    truth: Annotated[
        Path, typer.Option(help="The truth.csv `recruit synth` wrote (or its folder).", show_default=False)
    ],
    json_out: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Also write the figures as JSON here.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Count as eligible only those meeting the trial's full criteria (eligible_ips_strict).",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Check a search on made-up records against their hidden truth: letters to people in work,
    eligible people missed, per step and per wave."""
    from recruit.cli_render import render_evaluation
    from recruit.evaluation import evaluate_run, write_json

    evaluation = evaluate_run(
        _ready_engine(db), run, truth, eligibility="eligible_ips_strict" if strict else "eligible_ips"
    )
    for part in render_evaluation(evaluation):
        out.print(part, highlight=False)
    if json_out is not None:
        write_json(evaluation, json_out)
        out.print(f"Wrote the figures to {json_out}")


# --- letters: printing GP-approved invitations (issue 6) ----------------------------------------


class _LettersGroup(TyperGroup):
    """`recruit letters RUN --out DIR` writes letters; `recruit letters check` checks templates."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["write", *args]
        return super().parse_args(ctx, args)


letters_app = typer.Typer(
    cls=_LettersGroup,
    help="Print GP-approved invitation letters (recruit letters RUN --out DIR), or check the templates.",
    no_args_is_help=True,
)
app.add_typer(letters_app, name="letters")

TemplatesOption = Annotated[
    Path | None,
    typer.Option("--templates", help="A folder of letter templates (default: the ones recruit comes with)."),
]


@letters_app.command("write")
def letters_write(
    run: Annotated[int, typer.Argument(help="The search run whose GP-approved patients to write to.")],
    out_dir: Annotated[Path, typer.Option("--out", help="A new folder for this batch of letters.")],
    limit: Annotated[
        int | None,
        typer.Option(help="Only the next K: the highest-ranked approved patients not yet invited."),
    ] = None,
    study: Annotated[
        Path | None,
        typer.Option(
            help="Study settings file (default: rules/studies/<study>.yaml in this folder, else the one "
            "recruit comes with)."
        ),
    ] = None,
    templates: TemplatesOption = None,
    letter_date: Annotated[
        str | None, typer.Option("--date", help="Date printed on the letters, YYYY-MM-DD (default: today).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Write letters to a run's GP-approved patients (also: recruit letters RUN --out DIR)."""
    from recruit.letters.batch import COULD_NOT_PRINT_REASONS, NEEDS, write_letters
    from recruit.letters.select import COULD_NOT_PRINT, REFUSALS

    when = _date_option(letter_date, "--date")
    engine = _ready_engine(db)
    progress, advance = _bar("Printing letters", None)
    with progress:
        summary = write_letters(
            engine,
            run,
            out_dir,
            limit=limit,
            study_file=study,
            templates_dir=templates,
            letter_date=when,
            progress=advance,
        )
    written = f"{summary.letters_written:,} letters ({summary.pages:,} pages)"
    out.print(f"Batch {summary.batch_id}: {written} in {out_dir}")
    for fmt, n in sorted(summary.formats.items()):
        out.print(f"  {fmt.replace('_', ' ')}: {n:,}")
    if summary.practice_contact:
        listed = sum(summary.practice_contact.values())
        out.print(f"For the practice to contact another way (contact-another-way.csv): {listed:,}")
        for need, n in sorted(summary.practice_contact.items()):
            out.print(f"  {NEEDS.get(need, need).split(':')[0]}: {n:,}")
    refusals = {k: n for k, n in summary.refusals.items() if k not in COULD_NOT_PRINT}
    if refusals:
        out.print(f"Not written to: {sum(refusals.values()):,}")
        for reason, n in sorted(refusals.items(), key=lambda item: -item[1]):
            out.print(f"  {REFUSALS.get(reason, reason)}: {n:,}")
    if summary.could_not_print:
        failed = sum(summary.could_not_print.values())
        out.print(
            f"Could not print: {failed:,} (listed in could-not-print.csv; put the records right and "
            "run recruit letters again to print them)",
            highlight=False,
        )
        for reason, n in sorted(summary.could_not_print.items(), key=lambda item: -item[1]):
            out.print(
                f"  {COULD_NOT_PRINT_REASONS.get(reason, reason).split(':')[0]}: {n:,}", highlight=False
            )
    if summary.left_for_later:
        out.print(f"Approved and left for a later wave: {summary.left_for_later:,}")
    if summary.letters_written and not summary.draft:
        out.print(
            f"Once they are posted: recruit letters posted {summary.batch_id} (the audit counts "
            "people as invited from then); if they are destroyed: "
            f"recruit letters not-posted {summary.batch_id}",
            highlight=False,
            soft_wrap=True,
        )
    if summary.draft:
        err.print(
            "[bold]These letters are marked DRAFT[/]: the study settings say the wording is not yet "
            "approved. Do not post them."
        )


BatchArgument = Annotated[
    int, typer.Argument(help='The batch number (recruit letters prints it: "Batch N").', show_default=False)
]


@letters_app.command("posted")
def letters_posted(
    batch: BatchArgument,
    posted_date: Annotated[
        str | None,
        typer.Option("--date", metavar="YYYY-MM-DD", help="The day the batch was posted (default: today)."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Record that a batch of letters was posted: the audit then counts its people as invited."""
    from recruit.letters.posted import record_posted

    summary = record_posted(_ready_engine(db), batch, _date_option(posted_date, "--date"))
    if summary.already:
        out.print(f"Batch {batch} was already recorded as posted on {summary.posted_on}; nothing changed.")
        return
    out.print(f"Batch {batch}: {summary.letters:,} letter(s) recorded as posted on {summary.posted_on}.")


@letters_app.command("not-posted")
def letters_not_posted(batch: BatchArgument, db: DbOption = None) -> None:
    """Record that a batch was never posted (destroyed): its letters did not go, nobody in it counts
    as invited, and they can be written to in a later batch."""
    from recruit.letters.posted import record_not_posted

    summary = record_not_posted(_ready_engine(db), batch)
    if summary.already:
        out.print(f"Batch {batch} was already recorded as not posted; nothing changed.")
        return
    out.print(
        f"Batch {batch} recorded as not posted: its {summary.letters_removed:,} letter(s) never went, "
        "and the people in it can be written to in a later batch (each keeps their study number).",
        highlight=False,
        soft_wrap=True,
    )
    if summary.output_dir:
        out.print(
            f"Destroy any printed copies, and delete the folder {summary.output_dir}.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@letters_app.command("check")
def letters_check(templates: TemplatesOption = None) -> None:
    """Check every letter template has every element a letter must have (fails if one is missing)."""
    from recruit.letters.check import find_problems
    from recruit.letters.render import LetterTemplates

    folder = LetterTemplates(templates)
    problems = find_problems(folder)
    if problems:
        for problem in problems:
            err.print(f"[bold red]Missing:[/] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print(f"The letter templates in {folder.directory} have every required element.")


# --- recruit demo -------------------------------------------------------------------------------


@app.command("demo")
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for everything the demo makes.")] = Path(
        "recruit-demo"
    ),
    patients: Annotated[int, typer.Option(help="Made-up patients across the practices.")] = 3000,
    practices: Annotated[int, typer.Option(help="Number of made-up practices.")] = 3,
    seed: Annotated[int, typer.Option(help="Same seed, same made-up people.")] = 1,
) -> None:
    """Try the whole flow on made-up patients: search, GP review, letters, replies and audit."""
    from recruit.demo import closing_advice, run_demo

    out.print("recruit demo: every step on made-up patients (no real data is used).", highlight=False)
    result = run_demo(
        out_dir,
        practices=practices,
        patients=patients,
        seed=seed,
        say=lambda line: out.print(line, highlight=False, markup=False, soft_wrap=True),
    )
    out.print("\nWhere to look:", highlight=False)
    for what, path in result.outputs.items():
        out.print(f"  {what}: {path}", highlight=False, markup=False, soft_wrap=True)
    out.print(closing_advice(result), highlight=False, markup=False, soft_wrap=True)


# --- copying a database (DuckDB for region-wide searches) -------------------------------------


@db_app.command("copy")
def db_copy(
    to: Annotated[
        str,
        typer.Option("--to", metavar="URL", help="Database to copy into, e.g. duckdb:///region.duckdb."),
    ],
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Overwrite the records already in the --to database. Refused if it holds GP "
            "decisions, letters or replies that this database does not have.",
        ),
    ] = False,
    delete_history: Annotated[
        bool,
        typer.Option(
            "--delete-history",
            help="With --replace: also delete the --to database's GP decisions, review sheets, "
            "letters written, replies and study numbers that this database does not have. The "
            "next search there could then write to those people again.",
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Copy everything in the database into another one (SQLite, PostgreSQL or DuckDB).

    For a region-wide search, load the practices' extracts as usual, copy them into a DuckDB file
    and search that: recruit search --db duckdb:///region.duckdb
    """
    from recruit.dbcopy import HISTORY_KINDS, copy_database
    from recruit.migrate import open_database

    if delete_history and not replace:
        raise RecruitError("--delete-history only has a meaning with --replace.")
    source = open_database(db)  # never creates: a mistyped source would copy nothing
    target = make_engine(to, create_folder=True)
    progress, advance = _bar("Copying", None)
    with progress:
        summary = copy_database(
            source,
            target,
            replace=replace,
            delete_history=delete_history,
            progress=lambda _table, n: advance(n),
        )
    if summary.history_deleted:
        out.print(f"Deleted from {describe(target.url)}, as --delete-history asked:", highlight=False)
        for kind, n in summary.history_deleted.items():
            out.print(f"  {HISTORY_KINDS[kind]}: {n:,}", highlight=False)
    out.print(f"Copied {summary.total:,} rows from {describe(source.url)} to {describe(target.url)}:")
    for name, n in summary.rows.items():
        if n:
            out.print(f"  {name}: {n:,}")


# Typer (0.29) prints each parameter's Python type in help: <bool> beside a flag, which takes no
# value, and <list[Path]> beside an argument. Practice staff read words: a flag shows nothing, an
# argument its name, and an option's value a word (each option's metavar, where it sets one, wins).
_TYPE_WORDS = {"<str>": "TEXT", "<int>": "NUMBER", "<path>": "PATH", "<float>": "NUMBER"}


def readable_help(command: Any) -> Any:
    """The Click command tree Typer builds, with its help reading as words rather than Python types."""

    def show(param: Any, ctx: Any) -> str | None:
        if getattr(param, "is_flag", False) or param.param_type_name == "argument":
            return None
        if param.metavar is not None:
            return str(param.metavar)
        shown = param.display_type(ctx)
        return _TYPE_WORDS.get(shown, shown.strip("<>").upper())

    ctx = command.context_class(command)
    params = list(command.params)
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        params.append(help_option)
    for param in params:
        param.display_type_rich = functools.partial(show, param)
    for sub in getattr(command, "commands", {}).values():
        readable_help(sub)
    return command


def main() -> None:
    """Console entry point: user errors become one plain line on stderr, never a traceback."""
    try:
        readable_help(typer.main.get_command(app))()
    except RecruitError as exc:
        err.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("Stopped. Anything not finished was not saved.")
        sys.exit(130)
