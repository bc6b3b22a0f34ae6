"""Every resource of a small population validates against the fhir.resources R4B models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from synthetic_ehr import generate
from synthetic_ehr.generate import FHIR_TYPES


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_small")
    generate(out, practices=2, patients=300, seed=7, workers=1)
    return out


def _validate_file(path: Path, expected_type: str | None = None) -> int:
    n = 0
    with path.open("rb") as fh:
        for line in fh:
            data = orjson.loads(line)
            rtype = data["resourceType"]
            if expected_type:
                assert rtype == expected_type
            # R4B models forbid unknown fields by default, so extras fail here too.
            get_fhir_model_class(rtype).model_validate(data)
            n += 1
    return n


@pytest.mark.parametrize("rtype", FHIR_TYPES)
def test_ndjson_validates(small: Path, rtype: str) -> None:
    n = _validate_file(small / "fhir" / f"{rtype}.ndjson", rtype)
    manifest = json.loads((small / "fhir/manifest.json").read_text())
    counts = {o["type"]: o["count"] for o in manifest["output"]}
    assert counts[rtype] == n
    if rtype in {"Patient", "Organization", "Practitioner", "Condition", "MedicationRequest"}:
        assert n > 0


def test_bundles_validate(small: Path) -> None:
    assert _validate_file(small / "bundles/bundles.ndjson", "Bundle") == 300


def test_manifest_shape(small: Path) -> None:
    m = json.loads((small / "fhir/manifest.json").read_text())
    assert m["transactionTime"].startswith("2026-11-01")
    assert m["requiresAccessToken"] is False
    assert {o["type"] for o in m["output"]} == set(FHIR_TYPES)
    for o in m["output"]:
        assert (small / "fhir" / o["url"]).is_file()


def test_uk_idioms(small: Path) -> None:
    pat = orjson.loads((small / "fhir/Patient.ndjson").read_bytes().splitlines()[0])
    assert pat["identifier"][0]["system"] == "https://fhir.nhs.uk/Id/nhs-number"
    org = orjson.loads((small / "fhir/Organization.ndjson").read_bytes().splitlines()[0])
    assert org["identifier"][0]["system"] == "https://fhir.nhs.uk/Id/ods-organization-code"
    systems = set()
    for line in (small / "fhir/Condition.ndjson").read_bytes().splitlines():
        systems.add(orjson.loads(line)["code"]["coding"][0]["system"])
    assert "http://snomed.info/sct" in systems
    assert systems & {"http://read.info/readv2", "http://read.info/ctv3"}
    courses = set()
    for line in (small / "fhir/MedicationRequest.ndjson").read_bytes().splitlines():
        courses.add(orjson.loads(line)["courseOfTherapyType"]["coding"][0]["code"])
    assert courses == {"acute", "continuous"}


def test_layout_keeps_truth_apart(small: Path) -> None:
    assert {p.name for p in small.iterdir()} == {"fhir", "bundles", "csv", "truth"}
    for folder in ("fhir", "bundles", "csv"):
        for f in (small / folder).iterdir():
            assert "truth" not in f.name
            assert b"eligible_ips" not in f.read_bytes()
    with (small / "csv/patients.csv").open(newline="") as fh:
        header = next(csv.reader(fh))
    assert {"NHS Number", "Surname", "Forename", "Date of Birth", "Postcode"} <= set(header)
