"""Parameters: every one documented with a source; overrides from YAML/JSON deep-merge."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from synthetic_ehr.params import Params, iter_param_docs, load_params


def test_every_parameter_has_a_source() -> None:
    rows = iter_param_docs()
    assert len(rows) > 60
    for name, _default, desc in rows:
        assert "Source:" in desc, name


def test_yaml_override_deep_merges(tmp_path: Path) -> None:
    cfg = tmp_path / "synth.yaml"
    cfg.write_text(
        "extract_date: 2025-04-01\n"
        "pain:\n  prevalence_by_age_sex:\n    16-34: {male: 0.2}\n"
        "opioids:\n  drug_mix: {fentanyl: 4.0}\n",
        encoding="utf-8",
    )
    p = load_params(cfg)
    base = Params()
    assert str(p.extract_date) == "2025-04-01"
    assert p.pain.prevalence_by_age_sex["16-34"] == {"male": 0.2, "female": 0.18}
    assert p.pain.prevalence_by_age_sex["75-99"] == base.pain.prevalence_by_age_sex["75-99"]
    assert p.opioids.drug_mix["fentanyl"] == 4.0
    assert p.opioids.drug_mix["co-codamol"] == base.opioids.drug_mix["co-codamol"]


def test_json_override(tmp_path: Path) -> None:
    cfg = tmp_path / "synth.json"
    cfg.write_text(json.dumps({"other": {"research_opt_out": 0.1}}), encoding="utf-8")
    assert load_params(cfg).other.research_opt_out == 0.1


def test_unknown_key_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("pain:\n  prevalance: 0.5\n", encoding="utf-8")
    with pytest.raises(pydantic.ValidationError):
        load_params(cfg)


def test_keyword_overrides() -> None:
    assert load_params(chunk_size=7).chunk_size == 7


def test_readme_documents_every_parameter() -> None:
    readme = (Path(__file__).resolve().parents[2] / "synthetic_ehr" / "README.md").read_text()
    for name, _default, _desc in iter_param_docs():
        assert f"`{name}`" in readme, f"{name} missing from synthetic_ehr/README.md"
