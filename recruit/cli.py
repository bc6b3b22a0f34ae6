"""The `recruit` command: a thin face over the library, in words practice staff use."""

from __future__ import annotations

import sys
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
