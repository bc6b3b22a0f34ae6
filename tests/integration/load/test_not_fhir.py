"""Issue 17: a folder holding no FHIR (the truth folder of a made-up extract, CSV exports loaded as
FHIR) is refused, naming what it found, and nothing is loaded."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

import synthetic_ehr
from recruit.db import make_engine
from recruit.errors import RecruitError
from recruit.load import load_extract
from recruit.migrate import upgrade
from recruit.models import Extract
from tests.helpers import run_cli
from tests.integration.load import fhir_samples as fx


@pytest.fixture(scope="module")
def made_up(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "x"
    synthetic_ehr.generate(out, practices=1, patients=40, seed=3, formats=("ndjson",), workers=1)
    return out


def test_loading_the_truth_folder_says_it_holds_no_fhir_and_exits_non_zero(made_up, tmp_path):
    result = run_cli("load", "--create", str(made_up / "truth"), "--db", "r.db", cwd=tmp_path)
    assert result.returncode == 1
    assert "holds no FHIR records" in result.stderr
    assert "truth.csv" in result.stderr and "params.json" in result.stderr
    assert "load the extract's fhir folder instead" in result.stderr
    assert "Traceback" not in result.stderr
    # even with a date given (which used to load one quarantined "record" and exit 0)
    dated = run_cli(
        "load",
        "--create",
        str(made_up / "truth"),
        "--db",
        "r.db",
        "--extract-date",
        "2026-11-01",
        cwd=tmp_path,
    )
    assert dated.returncode == 1 and "holds no FHIR records" in dated.stderr
    engine = make_engine(str(tmp_path / "r.db"))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Extract)).scalar_one() == 0
    engine.dispose()


def test_a_json_file_that_is_not_fhir_beside_csv_files_names_the_csv_way(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "patients.csv").write_text("Name,NHS\nA,B\n")
    (folder / "settings.json").write_text('{"practice": "ZZ9001"}')
    engine = make_engine(str(tmp_path / "r.db"))
    upgrade(engine)
    with pytest.raises(
        RecruitError, match=r"holds no FHIR records \(found patients.csv, settings.json\)"
    ) as e:
        load_extract(engine, [folder])
    assert "--format csv" in str(e.value)
    engine.dispose()


def test_a_folder_with_some_fhir_still_loads(tmp_path):
    folder = tmp_path / "in"
    fx.base_extract(folder)
    (folder / "notes.json").write_text('{"not": "fhir"}')
    engine = make_engine(str(tmp_path / "r.db"))
    upgrade(engine)
    summary = load_extract(engine, [folder], extract_date=dt.date(2026, 11, 1))
    assert summary.loaded >= 3
    engine.dispose()
