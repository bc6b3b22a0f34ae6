"""Where the database is and how to open it.

SQLite (a file in the working folder) is the default so a practice needs no server; PostgreSQL
serves multi-practice work. Failures are turned into one plain sentence (DatabaseUnavailable)
because practice staff, not programmers, read them.

A database file holds patient identifiers, so it is made readable by its owner only whatever
the umask: SQLite and DuckDB create the file when first opened, which happens under
owner_only(); SQLite gives its journal and WAL the file's own mode, but DuckDB makes its WAL with
the process umask at each write, so umask 077 is held while a DuckDB connection is in use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from recruit.errors import DatabaseUnavailable
from recruit.private_files import hold_private_umask, owner_only, private_folder, release_private_umask

ENV_VAR = "RECRUIT_DATABASE_URL"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
DEFAULT_FILENAME = "recruit.db"


def resolve_url(db: str | None = None) -> str:
    """The --db option wins, then RECRUIT_DATABASE_URL, then recruit.db in the working folder.

    Either may be a plain file path (recruit.db, ~/study/practice.db): practice staff type paths,
    not URLs. A path ending .duckdb is a DuckDB file, any other a SQLite file.
    """
    if db:
        return path_to_url(db)
    if os.environ.get(ENV_VAR):
        return path_to_url(os.environ[ENV_VAR])
    return f"sqlite:///{Path.cwd() / DEFAULT_FILENAME}"


def path_to_url(value: str) -> str:
    """A database address as given, or a plain file path turned into one.

    Anything starting like an address (a scheme of two or more letters and a colon, as in
    sqlite:/x, a slip for sqlite:///x) is left for parse_url to accept or explain; C:\\ is a path.
    """
    if "://" in value or _SCHEME.match(value):
        return value
    path = Path(value).expanduser().resolve()
    scheme = "duckdb" if path.suffix.lower() == ".duckdb" else "sqlite"
    return f"{scheme}:///{path}"


def database_file(url: str | URL) -> Path | None:
    """The file of a SQLite or DuckDB address (None for a server or an in-memory database)."""
    u = parse_url(url) if isinstance(url, str) else url
    if u.get_backend_name() not in ("sqlite", "duckdb"):
        return None
    return sqlite_path(u)


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable(
            f"'{url}' is not a database address. Give a file such as recruit.db "
            "or a server such as postgresql+psycopg://user@host:5432/dbname."
        ) from None


def describe(url: str | URL) -> str:
    """A printable form of the address: the SQLite file path, or the server URL without password."""
    u = parse_url(url) if isinstance(url, str) else url
    if u.get_backend_name() == "sqlite":
        return str(sqlite_path(u) or "an in-memory SQLite database")
    if u.get_backend_name() == "duckdb":
        return str(sqlite_path(u) or "an in-memory DuckDB database")
    return u.render_as_string(hide_password=True)


def sqlite_path(u: URL) -> Path | None:
    """The database file of a SQLite (or DuckDB) address, None for an in-memory database."""
    if not u.database or u.database == ":memory:" or u.database.startswith("file:"):
        return None
    return Path(u.database).resolve()


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Foreign keys are off by default in SQLite; WAL lets a reader run beside a load.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _duckdb_settings(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Any: duckdb_engine's connection wrapper, untyped; execute() on it (not on a cursor, which in
    # DuckDB is a second connection) sets the option for this connection.
    # DuckDB draws a progress bar on the terminal for long queries, over recruit's own output.
    dbapi_connection.execute("SET enable_progress_bar = false")


def make_engine(url: str | None = None, *, create_folder: bool = False) -> Engine:
    """Open (lazily) the database at url; checks that can be made before connecting are made here."""
    u = parse_url(resolve_url(url))
    backend = u.get_backend_name()
    if backend in ("sqlite", "duckdb"):
        path = sqlite_path(u)
        if path is not None:
            _check_sqlite_folder(path, create_folder=create_folder)
    try:
        engine = create_engine(u, future=True)
    except NoSuchModuleError:
        if backend == "duckdb":
            raise DatabaseUnavailable(
                "DuckDB support is not installed. Install recruit with: pip install 'recruit[duckdb]'"
            ) from None
        raise DatabaseUnavailable(
            f"recruit does not know the database kind '{u.drivername}' in '{describe(u)}'. "
            "Use sqlite:///FILE, postgresql+psycopg://… or duckdb:///FILE"
        ) from None
    except (ImportError, ModuleNotFoundError) as exc:
        raise DatabaseUnavailable(
            f"The driver for '{u.drivername}' is not installed ({exc.name}). "
            "For PostgreSQL install recruit with: pip install 'recruit[postgres]'; "
            "for DuckDB: pip install 'recruit[duckdb]'"
        ) from None
    except ArgumentError as exc:
        raise DatabaseUnavailable(f"The database address '{describe(u)}' is not valid: {exc}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif backend == "duckdb":
        event.listen(engine, "connect", _duckdb_settings)
    if backend in ("sqlite", "duckdb") and sqlite_path(u) is not None:
        event.listen(engine, "do_connect", _connect_owner_only)
        if backend == "duckdb":
            event.listen(engine, "checkout", _hold_umask)
            event.listen(engine, "checkin", _release_umask)
    return engine


def _connect_owner_only(
    dialect: Dialect, _record: ConnectionPoolEntry, cargs: list[object], cparams: dict[str, object]
) -> DBAPIConnection:
    """Open the database file under umask 077, so a new file is created 0600."""
    with owner_only():
        return dialect.connect(*cargs, **cparams)


def _hold_umask(*_args: object) -> None:
    hold_private_umask()


def _release_umask(*_args: object) -> None:
    release_private_umask()


def _check_sqlite_folder(path: Path, *, create_folder: bool) -> None:
    folder = path.parent
    if not folder.exists():
        if not create_folder:
            raise DatabaseUnavailable(f"The folder {folder} does not exist, so {path.name} cannot be opened.")
        try:
            private_folder(folder, parents=True)
        except OSError as exc:
            raise DatabaseUnavailable(f"Cannot create the folder {folder}: {exc.strerror}.") from None
    if path.exists():
        if not os.access(path, os.R_OK):
            raise DatabaseUnavailable(f"The database file {path} cannot be read (permission denied).")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseUnavailable(
            f"Cannot create the database {path}: the folder {folder} is read-only. "
            "Run recruit from a folder you can write to, or give --db."
        )


def check_connection(engine: Engine) -> None:
    """Connect once, turning driver errors into one sentence."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise unavailable(engine, exc) from None


def unavailable(engine: Engine, exc: BaseException) -> DatabaseUnavailable:
    """Explain a database failure without a traceback and without any password."""
    where = describe(engine.url)
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc) else ""
    low = detail.lower()
    if "readonly" in low or "read-only" in low or "read only" in low:
        return DatabaseUnavailable(f"The database {where} is read-only, so recruit cannot write to it.")
    if "could not set lock on file" in low:
        return DatabaseUnavailable(
            f"The database {where} is open in another program (a DuckDB file can be used by one at a time)."
        )
    if "unable to open database file" in low:
        return DatabaseUnavailable(f"Cannot open the database file {where}.")
    if "connection refused" in low or "could not connect" in low or "connection failed" in low:
        return DatabaseUnavailable(
            f"Cannot reach the database server at {where}: is it running, and is the address right?"
        )
    if "does not exist" in low and "database" in low:
        return DatabaseUnavailable(f"The database named in {where} does not exist on that server.")
    if "authentication" in low or "password" in low:
        return DatabaseUnavailable(f"The database server at {where} refused the user name or password.")
    return DatabaseUnavailable(f"Database problem with {where}: {detail}")
