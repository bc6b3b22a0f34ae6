"""Small helpers shared by tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, obey_permissions: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `recruit` as a user would, in a fresh process (so the real entry point is exercised)."""
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    full_env.pop("RECRUIT_DATABASE_URL", None)
    full_env.update(env or {})
    prefix: list[str] = []
    if obey_permissions and os.geteuid() == 0:
        # root ignores file permissions; without these capabilities it must obey them.
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "recruit", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
