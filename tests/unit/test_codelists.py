"""The shipped codelists load, validate and agree with their manifest."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import pytest
import yaml

from recruit.codelists import (
    Code,
    CodelistError,
    CodeSystem,
    available_codelists,
    default_directory,
    load_codelist,
)

CODELIST_DIR = Path(__file__).resolve().parents[2] / "rules" / "codelists"
MANIFEST = yaml.safe_load((CODELIST_DIR / "codelists.yaml").read_text(encoding="utf-8"))
ENTRIES = {e["name"]: e for e in MANIFEST["codelists"]}

EXPECTED = {
    "chronic_pain",
    "opioids",
    "opioid_dependence",
    "employment_status",
    "fit_note",
    "benefits",
    "palliative_care",
    "dementia",
    "cancer",
    "research_opt_out",
    "accessible_information",
}

# category values each list must use (the contract other modules rely on)
ALLOWED_CATEGORIES = {
    "employment_status": {
        "employed_full_time",
        "employed_part_time",
        "employed",
        "self_employed",
        "unemployed",
        "long_term_sick",
        "retired",
        "student",
        "carer_or_home",
        "other",
    },
    "benefits": {"out_of_work_benefit", "disability_benefit", "other"},
    "accessible_information": {"large_print", "easy_read", "braille", "interpreter", "other"},
}
OPIOID_DRUGS = {
    "codeine",
    "co-codamol",
    "dihydrocodeine",
    "co-dydramol",
    "tramadol",
    "morphine",
    "oxycodone",
    "buprenorphine",
    "fentanyl",
    "tapentadol",
    "other",
}


def test_manifest_lists_every_required_codelist() -> None:
    assert set(available_codelists(CODELIST_DIR)) == EXPECTED
    for entry in ENTRIES.values():
        for key in ("name", "file", "description", "version", "sources", "derived", "match"):
            assert entry.get(key), f"{entry['name']}: manifest field {key} is empty"
        assert entry["match"] == "exact"
        assert (CODELIST_DIR / entry["file"]).is_file()


def test_every_csv_in_directory_is_in_manifest() -> None:
    files = {p.name for p in CODELIST_DIR.glob("*.csv")}
    assert files == {e["file"] for e in ENTRIES.values()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_codelist_loads_and_matches_manifest(name: str) -> None:
    cl = load_codelist(name, CODELIST_DIR)
    entry = ENTRIES[name]
    assert len(cl) > 0
    assert cl.version == entry["version"]
    assert cl.sources and all(cl.sources)
    raw = (CODELIST_DIR / entry["file"]).read_bytes()
    assert cl.fingerprint == hashlib.sha256(raw).hexdigest()
    counts = Counter(c.system.value for c in cl.codes)
    assert dict(counts) == entry["row_counts"], f"{name}: manifest row_counts out of date"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_header_and_rows(name: str) -> None:
    path = CODELIST_DIR / ENTRIES[name]["file"]
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        rows = list(reader)
    assert header[:3] == ["code", "system", "term"]
    assert header[-1] == "source"
    assert header == ENTRIES[name]["columns"]
    keys = [(r["code"], r["system"]) for r in rows]
    assert len(keys) == len(set(keys)), f"{name}: duplicate (code, system)"
    for r in rows:
        assert r["source"].strip(), f"{name}: {r['code']} has no source"
        assert r["term"].strip(), f"{name}: {r['code']} has no term"
        if "category" in header:
            assert r["category"].strip(), f"{name}: {r['code']} has no category"


@pytest.mark.parametrize("name", sorted(ALLOWED_CATEGORIES))
def test_categories_use_the_contract_vocabulary(name: str) -> None:
    cl = load_codelist(name, CODELIST_DIR)
    used = {c.category for c in cl.codes}
    assert used <= ALLOWED_CATEGORIES[name], used - ALLOWED_CATEGORIES[name]


def test_employment_status_has_a_few_codes_per_category() -> None:
    cl = load_codelist("employment_status", CODELIST_DIR)
    per_cat = Counter(c.category for c in cl.codes)
    for category in ALLOWED_CATEGORIES["employment_status"]:
        assert per_cat[category] >= 1, f"no codes for {category}"
    for category in ("employed", "unemployed", "long_term_sick", "carer_or_home"):
        assert per_cat[category] >= 3, f"too few codes for {category}: {per_cat[category]}"
    assert (CodeSystem.SNOMEDCT, "73438004") in cl
    assert "13J7." in cl.codes_for("readv2")


def test_chronic_pain_is_narrow_and_categorised() -> None:
    cl = load_codelist("chronic_pain", CODELIST_DIR)
    assert len(cl) < 200  # the shared broad list has 3,897 rows
    cats = {c.category for c in cl.codes}
    assert {"chronic_pain_explicit", "fibromyalgia", "neuropathic", "crps"} <= cats
    terms = " ".join(c.term.lower() for c in cl.codes)
    assert "acute" not in terms
    assert (CodeSystem.READV2, "1M52.") in cl
    assert (CodeSystem.SNOMEDCT, "82423001") in cl


def test_opioids_columns_and_exclusions() -> None:
    cl = load_codelist("opioids", CODELIST_DIR)
    assert {c.system for c in cl.codes} == {CodeSystem.DMD}
    for c in cl.codes:
        assert c.attrs["drug"] in OPIOID_DRUGS
        assert c.attrs["patch"] in {"true", "false"}
        assert (c.attrs["patch"] == "true") == (c.attrs["form"] == "patch")
        term = c.term.lower()
        assert "injection" not in term and "linctus" not in term
        assert not any(b in term for b in ("espranor", "buvidal", "subutex", "suboxone"))


def test_fit_note_and_opt_out_categories() -> None:
    fit = {c.category for c in load_codelist("fit_note", CODELIST_DIR).codes}
    assert {"not_fit_for_work", "may_be_fit_for_work", "fit_note_issued"} <= fit
    opt = load_codelist("research_opt_out", CODELIST_DIR)
    assert (CodeSystem.READV2, "9Nu0.") in opt and (CodeSystem.CTV3, "XaZ89") in opt


def test_default_directory_finds_repository_copy() -> None:
    assert default_directory().resolve() == CODELIST_DIR.resolve()
    assert load_codelist("benefits").name == "benefits"


def test_code_is_frozen() -> None:
    code = Code(CodeSystem.READV2, "1M52.", "Chronic pain", {"category": "x"})
    with pytest.raises(AttributeError):
        code.code = "other"  # type: ignore[misc]


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "codelists.yaml").write_text(
        "codelists:\n  - {name: t, file: t.csv, version: v1, sources: [s]}\n", encoding="utf-8"
    )
    (tmp_path / "t.csv").write_text(body, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("code,system,term,source\n1M52,readv2,Chronic pain,s\n", "t.csv:2: field 'code'"),
        ("code,system,term,source\n82423001,icd10,Chronic pain,s\n", "t.csv:2: field 'system'"),
        ("code,system,term,source\n12AB,snomedct,Chronic pain,s\n", "t.csv:2: field 'code'"),
        ("code,system,term,source\nXSGKA,ctv3,Chronic pain,\n", "t.csv:2: field 'source'"),
        (
            "code,system,term,source\nXSGKA,ctv3,Chronic pain,s\nXSGKA,ctv3,Chronic pain,s\n",
            "t.csv:3: field 'code': duplicate",
        ),
        ("system,code,term,source\n", "header must start"),
    ],
)
def test_bad_rows_raise_clear_errors(tmp_path: Path, body: str, fragment: str) -> None:
    directory = _write(tmp_path, body)
    with pytest.raises(CodelistError, match=None) as info:
        load_codelist("t", directory)
    assert fragment in str(info.value)


def test_unknown_codelist_name(tmp_path: Path) -> None:
    directory = _write(tmp_path, "code,system,term,source\nXSGKA,ctv3,Chronic pain,s\n")
    with pytest.raises(CodelistError, match="no codelist named 'nope'"):
        load_codelist("nope", directory)
    assert load_codelist("t", directory).codes[0].source == "s"
