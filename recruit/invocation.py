"""How to type recruit again, where it was just run, so advice printed after a command works.

`recruit` is not on PATH when recruit was run as `python -m recruit`, or as `.venv/bin/recruit`
without the virtual environment activated; advice naming plain `recruit ...` would then fail.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

SCRIPT = "recruit"


def quote(words: Sequence[str]) -> str:
    """Words joined into one command line the user's shell reads back as the same words."""
    if os.name == "nt":
        return subprocess.list2cmdline(list(words))
    return shlex.join(words)


def recruit_command(
    argv0: str | None = None,
    executable: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> list[str]:
    """The words that start recruit here: ["recruit"], the script's path, or [python, "-m", "recruit"].

    argv0 and executable default to this process's (sys.argv[0], sys.executable)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = executable or sys.executable
    script = Path(argv0)
    if script.stem.lower() == SCRIPT and script.suffix.lower() in ("", ".exe"):
        on_path = which(SCRIPT)
        if on_path and _same_file(on_path, argv0):
            return [SCRIPT]
        return [argv0]
    # `python -m recruit` (argv0 is recruit/__main__.py), or recruit called from Python.
    return [executable, "-m", SCRIPT]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
