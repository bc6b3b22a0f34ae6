"""Schema migrations with Alembic, run from the installed package or from a source checkout."""

from __future__ import annotations

import shlex
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

import recruit.duckdb_support  # noqa: F401  (registers Alembic's DuckDB translations)
from recruit.db import database_file, describe, make_engine, parse_url, resolve_url, unavailable
from recruit.errors import RecruitError


def migrations_dir() -> Path:
    """alembic/ at the repository root ships inside the wheel as recruit/migrations."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RecruitError("recruit's database migrations are missing from this installation; reinstall it.")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    script = ScriptDirectory(str(migrations_dir()))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise unavailable(engine, exc) from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    try:
        command.upgrade(alembic_config(engine), revision)
    except SQLAlchemyError as exc:
        raise unavailable(engine, exc) from None


def downgrade(engine: Engine, revision: str = "base") -> None:
    try:
        command.downgrade(alembic_config(engine), revision)
    except SQLAlchemyError as exc:
        raise unavailable(engine, exc) from None


def upgrade_hint(db: str | None) -> str:
    """The command that creates or updates the database the user named (or the default one)."""
    return "recruit db upgrade" + (f" --db {shlex.quote(db)}" if db else "")


def open_database(db: str | None, *, create: bool = False, create_flag: str | None = None) -> Engine:
    """An engine on recruit's database, which must exist and be up to date.

    Nothing is created or upgraded behind the user's back: a mistyped path would otherwise become
    a new empty database, and an upgrade is a change the practice should choose (and back up for).
    Only `recruit db upgrade`, or create=True (a --create flag), creates a database; only
    `recruit db upgrade` updates one. create_flag names that flag in the advice, if the command has one.
    """
    url = parse_url(resolve_url(db))
    where = describe(url)
    hint = upgrade_hint(db)
    file = database_file(url)
    if file is not None and not file.exists() and not create:
        also = f", or add {create_flag} to this command" if create_flag else ""
        raise RecruitError(
            f"There is no database at {where}. Check the name and folder; to start a new database "
            f"there, run: {hint}{also}"
        )
    engine = make_engine(db, create_folder=create)
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return engine
    if current is None:
        if create:
            upgrade(engine)
            return engine
        also = f" (or add {create_flag} to this command)" if create_flag else ""
        raise RecruitError(
            f"The database at {where} has not been set up for recruit (it has no recruit tables). "
            f"Set it up with: {hint}{also}"
        )
    known = {rev.revision for rev in ScriptDirectory(str(migrations_dir())).walk_revisions()}
    if current not in known:
        raise RecruitError(
            f"The database at {where} was made by a newer version of recruit (revision {current}); "
            "update recruit to use it."
        )
    raise RecruitError(
        f"The database at {where} is out of date (revision {current}; this version of recruit needs "
        f"{head}). Back it up, then update it with: {hint}"
    )
