"""recruit search and recruit codelists check, end to end on a small synthetic practice."""

from __future__ import annotations

from pathlib import Path

import synthetic_ehr
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_search_prints_the_flow_and_codelists_check_reports_usage(tmp_path):
    synthetic_ehr.generate(tmp_path / "x", practices=1, patients=800, seed=2, formats=("ndjson",), workers=1)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert run_cli("load", "--create", str(tmp_path / "x" / "fhir"), "--db", db, cwd=ROOT).returncode == 0
    result = run_cli("search", "--db", db, "--index-date", "2026-11-01", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "likely_in_work" in result.stdout and "Candidates:" in result.stdout
    check = run_cli("codelists", "check", "--db", db, cwd=ROOT)
    assert check.returncode == 0, check.stderr
    assert "chronic_pain:" in check.stdout and "opioids:" in check.stdout


def test_a_broken_rule_file_is_one_line_naming_file_line_and_field(tmp_path):
    rules = tmp_path / "broken.yaml"
    text = (ROOT / "rules" / "instep.yaml").read_text().replace("look_back", "lookback", 1)
    rules.write_text(text)
    db = str(tmp_path / "r.db")
    assert run_cli("db", "upgrade", "--db", db, cwd=ROOT).returncode == 0
    result = run_cli("search", "--rules", str(rules), "--db", db, cwd=ROOT)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "broken.yaml:" in result.stderr and "lookback" in result.stderr
