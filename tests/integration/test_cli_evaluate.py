"""recruit evaluate, end to end: synth, load, search, then the run checked against its truth."""

from __future__ import annotations

import json
from pathlib import Path

import synthetic_ehr
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_evaluate_prints_the_figures_and_writes_json(tmp_path):
    synthetic_ehr.generate(tmp_path / "x", practices=1, patients=800, seed=3, formats=("ndjson",), workers=1)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert run_cli("load", "--create", str(tmp_path / "x" / "fhir"), "--db", db, cwd=ROOT).returncode == 0
    search = run_cli("search", "--db", db, "--index-date", "2026-11-01", cwd=ROOT)
    assert search.returncode == 0, search.stderr
    report = tmp_path / "evaluate.json"
    result = run_cli(
        "evaluate", "1", "--truth", str(tmp_path / "x" / "truth"), "--json", str(report), "--db", db, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "people would be invited" in result.stdout and "in paid work" in result.stdout
    assert "top 10%" in result.stdout and "likely_in_work" in result.stdout
    data = json.loads(report.read_text())
    assert data["run"]["id"] == 1 and data["truth"]["eligibility_column"] == "eligible_ips"
    assert data["invited"]["in_work"] + data["invited"]["not_in_work"] == data["invited"]["total"]
    assert data["waves"][-1]["invited"] == data["invited"]["total"]
    strict = run_cli(
        "evaluate", "1", "--truth", str(tmp_path / "x" / "truth"), "--strict", "--db", db, cwd=ROOT
    )
    assert strict.returncode == 0 and "eligible_ips_strict" in strict.stdout

    missing = run_cli("evaluate", "7", "--truth", str(tmp_path / "x" / "truth"), "--db", db, cwd=ROOT)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "There is no search run 7" in missing.stderr
