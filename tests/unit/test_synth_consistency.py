"""The record never contradicts the hidden truth (death, birth, deregistration, moving away)."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic_ehr import generate
from synthetic_ehr.checks import consistency_problems, read_truth


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_consistency")
    generate(out, practices=3, patients=6000, seed=21, workers=2, formats=("ndjson", "csv"))
    return out


def test_record_consistent_with_truth(run: Path) -> None:
    assert consistency_problems(run) == []


def test_population_has_the_edge_cases(run: Path) -> None:
    truth = read_truth(run)
    rows = list(truth.values())
    assert any(r["alive"] == "false" and r["death_coded"] == "false" for r in rows)  # uncoded death
    assert any(r["deregistration_date"] for r in rows)
    assert any(r["ghost_since"] for r in rows)
    assert any(r["eligible_ips"] == "true" for r in rows)
    assert any(r["chronic_pain"] == "true" and r["pain_coded"] == "false" for r in rows)
    assert any(r["opioid_long_term"] == "true" for r in rows)
    # Coded death implies true death, never the reverse.
    assert all(r["alive"] == "false" for r in rows if r["death_coded"] == "true")


def test_eligible_means_out_of_work_adult_with_pain(run: Path) -> None:
    for r in read_truth(run).values():
        if r["eligible_ips"] == "true":
            assert 18 <= int(r["age_at_extract"]) <= 64
            assert r["chronic_pain"] == "true" and r["alive"] == "true" and r["registered"] == "true"
            assert r["in_work_at_extract"] == "false"
        if r["eligible_ips_strict"] == "true":
            assert r["eligible_ips"] == "true" and not r["research_opt_out"]
