"""Realised rates on a 100,000-patient population match the configured targets."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from synthetic_ehr import generate
from synthetic_ehr.checks import realised_rates
from synthetic_ehr.generate import FHIR_TYPES


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_100k")
    generate(out, practices=5, patients=100_000, seed=2026, workers=2, formats=("ndjson", "csv"))
    return out


@pytest.mark.slow
def test_realised_rates_within_tolerance(big: Path) -> None:
    rates = realised_rates(big)
    print()
    for r in rates:
        print(r)
    off = [str(r) for r in rates if not r.ok]
    assert not off, "\n".join(off)


@pytest.mark.slow
def test_sample_of_large_population_validates(big: Path) -> None:
    for rtype in FHIR_TYPES:
        model = get_fhir_model_class(rtype)
        with (big / "fhir" / f"{rtype}.ndjson").open("rb") as fh:
            for line in itertools.islice(fh, 0, None, 997):  # every 997th resource
                model.model_validate(orjson.loads(line))
