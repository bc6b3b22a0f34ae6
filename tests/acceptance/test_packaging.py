"""Every Python package in the source tree ships in the wheel (pyproject lists them by hand)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for top in ("recruit", "synthetic_ehr"):
        for init in (ROOT / top).rglob("*.py"):
            folder = init.parent.relative_to(ROOT)
            if "__pycache__" in folder.parts:
                continue
            assert ".".join(folder.parts) in listed, f"{folder} is not in pyproject's packages"
    mapped = config["package-dir"]
    assert (ROOT / mapped["recruit.migrations"] / "env.py").is_file()
