"""The README's first command, from an installed wheel: `pip install .` then `recruit demo`.

The wheel is built from a copy of the source (nothing is written into the checkout), installed
with its dependencies into a fresh virtual environment that cannot see this one's packages, and
the demo runs from an empty folder: so the rules, codelists, study settings and letter templates
must come from the wheel. Both ways of starting recruit are tried, `recruit` on PATH and
`python -m recruit` without it, and the command each prints as advice is run as printed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "recruit", "synthetic_ehr", "rules", "letter_templates", "alembic")
BIN = "Scripts" if os.name == "nt" else "bin"
# Shipped folders: repository folder -> where it sits in the wheel (all but Python scripts).
SHIPPED = {"rules": "recruit/shipped_rules", "letter_templates": "recruit/letter_templates"}

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, path: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RECRUIT_"))}
    env.update(PATH=path, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{shlex.join(args)}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def _advice(stdout: str) -> list[list[str]]:
    """The commands the demo's closing line says to try, as the shell would split them."""
    line = next(line for line in stdout.splitlines() if line.startswith("Try: "))
    return [shlex.split(part) for part in line.removeprefix("Try: ").split(", or ")]


def _demo_made_its_outputs(folder: Path) -> None:
    for name in ("recruit.db", "letters/letters.pdf", "letters/mail-merge.csv", "audit/audit.html"):
        assert (folder / name).is_file(), name
    assert list((folder / "review").glob("review*-decided.xlsx"))


def test_wheel_installs_into_a_fresh_venv_and_the_demo_runs_from_an_empty_folder(tmp_path):
    source = tmp_path / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    system_path = os.environ.get("PATH", os.defpath)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), "."],
        source,
        system_path,
    )
    (wheel,) = (tmp_path / "dist").glob("recruit-*.whl")

    # Every file of rules/ and letter_templates/ is in the wheel (what a new file would miss).
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, inside in SHIPPED.items():
        for path in (ROOT / folder).rglob("*"):
            relative = path.relative_to(ROOT / folder).as_posix()
            if path.is_dir() or "__pycache__" in relative or path.suffix in (".py", ".pyc"):
                continue
            assert f"{inside}/{relative}" in names, f"{folder}/{relative} is not in the wheel"
    for data in ("synthetic_ehr/data/forenames.csv", "recruit/migrations/env.py", "recruit/audit/templates/"):
        assert any(name.startswith(data) for name in names), f"{data} is not in the wheel"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, system_path)  # no system site-packages
    python = str(venv / BIN / "python")
    _run([python, "-m", "pip", "install", "-q", str(wheel)], tmp_path, system_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([python, "-c", "import recruit; print(recruit.__file__)"], elsewhere, system_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), (
        "recruit must come from the wheel, not the source folder"
    )

    # `recruit` on PATH (the venv activated): the advice names plain `recruit`.
    with_venv = os.pathsep.join([str(venv / BIN), system_path])
    small = ["--patients", "60", "--practices", "1"]
    result = _run(["recruit", "demo", *small, "--out", "demo"], elsewhere, with_venv)
    _demo_made_its_outputs(elsewhere / "demo")
    audit, evaluate = _advice(result.stdout)
    assert audit[:2] == ["recruit", "audit"] and evaluate[:2] == ["recruit", "evaluate"]
    _run(audit, elsewhere, with_venv)
    assert (elsewhere / "another-report" / "audit.html").is_file()

    # `python -m recruit` with no recruit on PATH: the advice names this interpreter.
    no_recruit = os.pathsep.join(
        d for d in system_path.split(os.pathsep) if d and not shutil.which("recruit", path=d)
    )
    result = _run([python, "-m", "recruit", "demo", *small, "--out", "demo2"], elsewhere, no_recruit)
    _demo_made_its_outputs(elsewhere / "demo2")
    audit, evaluate = _advice(result.stdout)
    assert audit[:4] == [python, "-m", "recruit", "audit"] and evaluate[:3] == [python, "-m", "recruit"]
    shutil.rmtree(elsewhere / "another-report")
    _run(audit, elsewhere, no_recruit)
    assert (elsewhere / "another-report" / "audit.html").is_file()
    # Nothing was looked up in, or written to, the folder recruit was started from beyond its outputs.
    assert sorted(p.name for p in elsewhere.iterdir()) == ["another-report", "demo", "demo2"]
