"""Folders of identifiable files that a command is still writing, and the leftovers of killed ones.

A letters run writes its PDFs (names and addresses) into a hidden staging folder next to the
output folder, and moves it into place only once the batch is recorded. If the run is killed
(kill -9, a power cut), nothing in that process can clean up; so before the folder is made a row
naming it is committed to WORK_FOLDER, and the running process holds an exclusive flock on a
lock file inside it for as long as it writes. The operating system lets go of that lock when the
process ends, however it ends, so the next command that opens the database (and every letters
run) can tell a folder still being written from one left behind, and deletes the leftovers.

A folder is deleted only if its name has the staging pattern (`.<name>.partial-xxxxxxxx`), so a
damaged or hand-edited row can never delete anything else. A folder whose letters were recorded
just before the process died (purpose "letters-recorded") is not deleted but moved into place,
as the run would have done.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import DBAPIError

from recruit.models import utcnow
from recruit.private_files import private_folder
from recruit.tables import WORK_FOLDER

LOCK_NAME = ".recruit-running"
STAGING_NAME = re.compile(r"^\.(?P<name>.+)\.partial-[0-9a-f]{8}$")
RECORDED = "-recorded"  # suffix of the purpose once the folder's contents are recorded


@dataclass
class WorkFolder:
    """A registered folder this process is writing, and the lock it holds on it."""

    row_id: int
    path: Path
    lock_fd: int


def staging_path(out: Path, tag: str) -> Path:
    """The hidden folder next to `out` in which its files are written before they are moved in."""
    return out.parent / f".{out.name}.partial-{tag}"


def register(engine: Engine, path: str | Path, purpose: str) -> int:
    """Record (and commit, on its own connection) that this process is about to write `path`."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(WORK_FOLDER)
                .values(
                    path=str(Path(path).absolute()),
                    purpose=purpose,
                    host=socket.gethostname()[:200],
                    pid=os.getpid(),
                    created_at=utcnow(),
                )
                .returning(WORK_FOLDER.c.id)
            ).scalar_one()
        )


def release(engine: Engine, row_id: int) -> None:
    """Forget a folder: it was published or cleaned up."""
    with engine.begin() as conn:
        conn.execute(delete(WORK_FOLDER).where(WORK_FOLDER.c.id == row_id))


def mark_recorded(conn: Connection, folder: WorkFolder) -> None:
    """In the transaction that records the folder's contents: from now on it is kept, not deleted."""
    conn.execute(
        update(WORK_FOLDER)
        .where(WORK_FOLDER.c.id == folder.row_id)
        .values(purpose=WORK_FOLDER.c.purpose + RECORDED)
    )


def open_folder(engine: Engine, path: Path, purpose: str) -> WorkFolder:
    """Register, then make the folder (owner only) and lock it for as long as this process runs."""
    row_id = register(engine, path, purpose)
    try:
        private_folder(path)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        release(engine, row_id)
        raise
    return WorkFolder(row_id, path, fd)


def unlock(folder: WorkFolder) -> None:
    """Remove the lock file (it must not be published) and let go of the lock."""
    with contextlib.suppress(FileNotFoundError):
        (folder.path / LOCK_NAME).unlink()
    with contextlib.suppress(OSError):
        os.close(folder.lock_fd)


def discard(engine: Engine, folder: WorkFolder) -> None:
    """A run that did not finish: delete its folder, then its row."""
    unlock(folder)
    _remove(folder.path)
    if not folder.path.exists():
        release(engine, folder.row_id)


def clean_leftovers(engine: Engine) -> int:
    """Delete the folders left by commands that were killed while writing them; how many.

    A folder whose lock can be taken (its writer has ended, however it ended), or which is gone,
    is deleted with its row; a folder still locked belongs to a running command and is left."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(WORK_FOLDER)).all()
    except DBAPIError:
        return 0  # a database from before this table existed has no leftovers to know of
    removed = 0
    for row in rows:
        path = Path(row.path)
        fd = _lock_if_abandoned(path, row.host, row.pid)
        if fd is None:
            continue
        try:
            if path.is_dir():
                if row.purpose.endswith(RECORDED):
                    if not _finish_publishing(path):
                        continue  # cannot move it into place: keep the row, so it is kept too
                elif STAGING_NAME.match(path.name):
                    _remove(path)
                    if path.exists():
                        continue
        finally:
            if fd >= 0:
                os.close(fd)
        with contextlib.suppress(DBAPIError):
            release(engine, row.id)
            removed += 1
    return removed


def _lock_if_abandoned(path: Path, host: str | None, pid: int | None) -> int | None:
    """A held lock on the folder (-1 when there is nothing to lock) if nobody is writing it; None
    if its writer may still be running."""
    ours = host == socket.gethostname()[:200]
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        # No lock file: the folder is gone, or was being made. Only the writer's own machine can
        # tell whether it is alive; a folder of another machine's is left to that machine.
        if not ours:
            return None
        return None if _alive(pid) else -1
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    """Delete a folder; tried again if a process still ending wrote into it meanwhile."""
    for _ in range(5):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return


def _finish_publishing(path: Path) -> bool:
    """A recorded batch whose process died before moving it into place: move it now."""
    match = STAGING_NAME.match(path.name)
    if match is None:
        return False
    target = path.parent / match["name"]
    try:
        if target.exists():
            target.rmdir()  # only an empty folder, as the run itself allows
        with contextlib.suppress(FileNotFoundError):
            (path / LOCK_NAME).unlink()
        path.rename(target)
    except OSError:
        return False
    return True
