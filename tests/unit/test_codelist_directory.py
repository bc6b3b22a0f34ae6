"""One resolver of a rule set's or a study's codelist folder, and one reader of the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from recruit.codelists import CodelistError, codelist_directory, default_directory, manifest_entry

MANIFEST = "codelists:\n  - name: asthma\n    file: asthma.csv\n    match: prefix\n"


def _rules(root: Path, with_codelists: bool) -> Path:
    (root / "studies").mkdir(parents=True)
    if with_codelists:
        (root / "codelists").mkdir()
        (root / "codelists" / "codelists.yaml").write_text(MANIFEST, encoding="utf-8")
    return root


def test_a_named_folder_is_relative_to_the_file(tmp_path: Path) -> None:
    root = _rules(tmp_path / "rules", with_codelists=True)
    study = root / "studies" / "trial.yaml"
    assert codelist_directory(study, "../lists", root) == (tmp_path / "rules" / "lists").resolve()


def test_codelists_in_the_rules_folder_then_the_usual_folder(tmp_path: Path) -> None:
    root = _rules(tmp_path / "rules", with_codelists=True)
    assert codelist_directory(root / "search.yaml", None, root) == root / "codelists"
    assert codelist_directory(root / "studies" / "trial.yaml", None, root) == root / "codelists"
    bare = _rules(tmp_path / "bare", with_codelists=False)
    assert codelist_directory(bare / "search.yaml", None, bare) == default_directory()


def test_manifest_entry(tmp_path: Path) -> None:
    root = _rules(tmp_path / "rules", with_codelists=True)
    assert manifest_entry("asthma", root / "codelists")["match"] == "prefix"
    assert manifest_entry("copd", root / "codelists") == {}
    with pytest.raises(CodelistError, match="manifest not found"):
        manifest_entry("asthma", tmp_path)
