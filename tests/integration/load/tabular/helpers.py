"""Shared by the tabular shape tests: load a folder with a mapping, read back what was stored and
quarantined, and compare a generated population loaded from a shape with its FHIR form."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from recruit.db import make_engine
from recruit.load import load_extract
from recruit.load.loader import LoadSummary
from recruit.migrate import upgrade
from recruit.models import ClinicalEvent, MedicationIssue, Patient, Quarantine, SearchResult, StepCount
from recruit.query.run import load_search, run_rule_set

ROOT = Path(__file__).resolve().parents[4]
MAPPINGS = ROOT / "rules" / "mappings"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_folder(engine: Engine, folder: Path, mapping: str, when: dt.date) -> LoadSummary:
    return load_extract(engine, [folder], format="csv", mapping=MAPPINGS / mapping, extract_date=when)


def quarantined(engine: Engine) -> list[tuple[str, int | None, str | None]]:
    """(file name, line, column) of every quarantined row, sorted."""
    with engine.connect() as conn:
        rows = conn.execute(select(Quarantine.file, Quarantine.line, Quarantine.field)).all()
    return sorted((Path(f).name, line, field) for f, line, field in rows)


def stored_patients(engine: Engine) -> dict[str, Patient]:
    with Session(engine, expire_on_commit=False) as session:
        return {p.source_id: p for p in session.scalars(select(Patient))}


def stored_events(engine: Engine) -> list[tuple[str, str, str, dt.date]]:
    """(patient key, system, code, date) of every coded entry."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Patient.source_id, ClinicalEvent.code_system, ClinicalEvent.code, ClinicalEvent.event_date
            ).join(Patient, Patient.id == ClinicalEvent.patient_id)
        ).all()
    return sorted((k, str(s), c, d) for k, s, c, d in rows)


def stored_issues(engine: Engine) -> list[tuple[str, str, str, dt.date]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Patient.source_id,
                MedicationIssue.code_system,
                MedicationIssue.code,
                MedicationIssue.issue_date,
            ).join(Patient, Patient.id == MedicationIssue.patient_id)
        ).all()
    return sorted((k, str(s), c, d) for k, s, c, d in rows)


def data_rows(folder: Path, pattern: str, encoding: str = "utf-8-sig") -> int:
    """Rows (without headers) in every file the pattern matches: what the loader must account for."""
    total = 0
    for path in sorted(folder.glob(pattern)):
        with path.open(newline="", encoding=encoding) as fh:
            total += sum(1 for _ in csv.reader(fh)) - 1
    return total


def _engine(path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return engine


def _search(engine: Engine, when: dt.date) -> tuple[list[tuple[str, int, int, int]], set[str]]:
    rule_set, codelists, _ = load_search(ROOT / "rules" / "instep.yaml")
    run_id = run_rule_set(engine, rule_set, codelists, when)
    with engine.connect() as conn:
        flow = conn.execute(
            select(StepCount.step_id, StepCount.entering, StepCount.kept, StepCount.excluded)
            .where(StepCount.run_id == run_id)
            .order_by(StepCount.step_index)
        ).all()
        found = conn.execute(
            select(Patient.source_id)
            .join(SearchResult, SearchResult.patient_id == Patient.id)
            .where(SearchResult.run_id == run_id, SearchResult.outcome == "candidate")
        ).scalars()
        return [tuple(r) for r in flow], set(found)  # type: ignore[misc]


def truth_ids(out: Path) -> list[str]:
    """Person ids (FHIR Patient.id) in global index order (Person.index is the row number)."""
    with (out / "truth" / "truth.csv").open(newline="", encoding="utf-8") as fh:
        return [row["patient_id"] for row in csv.DictReader(fh)]


@dataclass
class Compared:
    """Both forms of one population, searched on the extract date."""

    flows: tuple[list[tuple[str, int, int, int]], list[tuple[str, int, int, int]]]
    found: tuple[set[str], set[str]]  # candidates by person id: FHIR form, shape
    untwinned: set[str]  # persons with a legacy code the shape can only carry losing a category

    def assert_same(self) -> None:
        """Same flow and candidates; where a legacy code has no SNOMED CT twin in its codelist
        categories (synthetic_ehr.shapes._crossmap), only those persons may differ."""
        fhir, shape = self.found
        assert fhir, "nobody found: the comparison would mean nothing"
        assert fhir ^ shape <= self.untwinned, sorted(fhir ^ shape)
        if not self.untwinned:
            assert self.flows[0] == self.flows[1]
        else:
            assert [s[0] for s in self.flows[0]] == [s[0] for s in self.flows[1]]
            for a, b in zip(*self.flows, strict=True):
                assert all(abs(x - y) <= len(self.untwinned) for x, y in zip(a[1:], b[1:], strict=True)), (
                    a,
                    b,
                )


def equivalent_to_fhir(
    tmp_path: Path,
    shape: str,
    mapping: str,
    key_of: Callable[[int, str], str],
    converted: tuple[str, ...],
    patients: int = 600,
) -> Compared:
    """Generate a population, load its FHIR form and the shape into two databases and search
    both on the extract date. `converted`: the legacy code systems the shape carries as SNOMED CT."""
    from synthetic_ehr import generate
    from synthetic_ehr.codes import Code
    from synthetic_ehr.shapes._crossmap import exact_twin

    out = tmp_path / "gen"
    generate(out, patients=patients, practices=2, seed=18, formats=("ndjson", shape), workers=1)
    when = dt.date.fromisoformat(
        json.loads((out / "truth" / "params.json").read_text())["params"]["extract_date"]
    )
    fhir = _engine(tmp_path / "fhir.db")
    tab = _engine(tmp_path / f"{shape}.db")
    fhir_summary = load_extract(fhir, [out / "fhir"], extract_date=when)
    tab_summary = load_folder(tab, out / shape, mapping, when)
    # Nothing the generator wrote is quarantined, and every coded entry and issue arrives.
    assert tab_summary.quarantined == 0, tab_summary.quarantined_by_reason
    assert tab_summary.patients == fhir_summary.patients
    assert len(stored_events(tab)) == len(stored_events(fhir))
    assert len(stored_issues(tab)) == len(stored_issues(fhir))
    untwinned = {
        pid
        for pid, system, code, _ in stored_events(fhir)
        if system in converted and not exact_twin(Code(code, system, ""))
    }
    back = {key_of(i, pid): pid for i, pid in enumerate(truth_ids(out))}
    flow_f, found_f = _search(fhir, when)
    flow_t, found_t = _search(tab, when)
    fhir.dispose()
    tab.dispose()
    return Compared((flow_f, flow_t), (found_f, {back[k] for k in found_t}), untwinned)
