"""Files with patient identifiers are made readable by their owner only (0600, folders 0700).

Whatever the user's umask, the SQLite database, review workbooks, letters, mail-merge and contact
lists and quarantine exports must not be readable by other users of the machine. Libraries that
write files themselves (openpyxl, WeasyPrint, pypdf, SQLite, DuckDB) create them with the
process umask, so the writing happens under `owner_only()`, which sets umask 077 for its
duration; folders and files recruit makes itself are also chmod-ed, so a folder that existed
already, or a file made before, ends up private too. Outputs for trial managers that carry no
identifiers (the audit report) need none of this.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
FOLDER_MODE = 0o700
PRIVATE_UMASK = 0o077

_lock = threading.RLock()  # nested uses (a private folder made inside) are fine
_holds_lock = threading.Lock()
_holds = 0
_umask_before = 0


def hold_private_umask() -> None:
    """umask 077 until the matching release_private_umask(). Holds are counted, so they may end
    in any order (an open DuckDB connection holds one; owner_only() another): the umask is put
    back only when the last one ends."""
    global _holds, _umask_before
    with _holds_lock:
        before = os.umask(PRIVATE_UMASK)
        if _holds == 0:
            _umask_before = before
        _holds += 1


def release_private_umask() -> None:
    global _holds
    with _holds_lock:
        if _holds == 0:
            return
        _holds -= 1
        if _holds == 0:
            os.umask(_umask_before)


@contextlib.contextmanager
def owner_only() -> Iterator[None]:
    """Files and folders created inside are private to their owner (umask 077), then the umask is
    put back. Child processes started inside inherit it."""
    with _lock:
        hold_private_umask()
        try:
            yield
        finally:
            release_private_umask()


def make_private(path: str | Path) -> None:
    """chmod 0600 (file) or 0700 (folder); quietly nothing when the path is gone."""
    p = Path(path)
    with contextlib.suppress(FileNotFoundError):
        os.chmod(p, FOLDER_MODE if p.is_dir() else FILE_MODE)


def private_folder(path: str | Path, *, parents: bool = False) -> Path:
    """Make (or take over) a folder that only its owner can open."""
    p = Path(path)
    with owner_only():
        p.mkdir(parents=parents, exist_ok=True)
    make_private(p)
    return p


def make_private_tree(path: str | Path) -> None:
    """Every folder and file under path (and path itself) private."""
    root = Path(path)
    if root.is_dir():
        for folder, dirs, files in os.walk(root):
            for name in dirs:
                make_private(Path(folder) / name)
            for name in files:
                make_private(Path(folder) / name)
    make_private(root)


def open_private(path: str | Path, mode: str = "w", **kwargs: Any) -> IO[Any]:
    """open() for a new or truncated file, created 0600 (and made 0600 if it existed)."""
    p = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(p, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise
