"""Issue 17: help reads as words (no <bool>, no <list[Path]>) and the search table's counts carry
thousands separators."""

from __future__ import annotations

import re

import pytest

from recruit.cli_render import flow_table
from recruit.query.flow import StepFlow
from tests.helpers import run_cli

PYTHON_TYPES = re.compile(r"<(bool|str|int|path|list\[[^\]]*\])>")


@pytest.mark.parametrize(
    "command",
    [(), ("load",), ("audit",), ("letters", "write"), ("db", "copy"), ("search",), ("review", "import")],
)
def test_help_shows_words_not_python_types(tmp_path, command):
    result = run_cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not PYTHON_TYPES.search(result.stdout), result.stdout
    assert "--help" in result.stdout


def test_load_help_names_its_value_types_and_leaves_flags_bare(tmp_path):
    text = run_cli("load", "--help", cwd=tmp_path).stdout
    assert re.search(r"--db\s+FILE\|URL", text)
    assert re.search(r"--mapping\s+PATH", text)
    strict = next(line for line in text.splitlines() if "--strict" in line)
    assert re.search(r"--strict\s+Also check", strict)


def test_the_step_table_prints_thousands_separators():
    flows = [
        StepFlow(0, "registered", "include", "", 123_456, 10_000, 113_456, 2_500, 1_234),
        StepFlow(1, "age", "include", "aged 18 to 65", 10_000, 999, 9_001, None, None),
    ]
    lines = flow_table(flows)
    assert "123,456" in lines[1] and "10,000" in lines[1] and "113,456" in lines[1]
    assert "2,500" in lines[1] and "1,234" in lines[1]
    assert "9,001" in lines[2] and lines[2].endswith("aged 18 to 65")
    assert lines[1].index("10,000") < lines[2].index("999")  # "kept" is right-aligned under its header
