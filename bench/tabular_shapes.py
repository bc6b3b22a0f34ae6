"""Tabular shapes (issue 18 closing note): what each fixture loads to, and one synthetic
population searched from every shape beside its FHIR form.

1. Each hand-written fixture folder under tests/integration/load/tabular/fixtures/ (EMIS extract, SystmOne
   SRE, CPRD Aurum with its made-up dictionaries, OpenSAFELY core tables, OMOP CDM 5.4, a practice
   report) is loaded into a fresh SQLite database: per file, rows read, stored, quarantined, not
   used; read = stored + quarantined for every file.
2. A population of --patients is generated in FHIR NDJSON and every shape, each loaded (timed,
   as wall seconds in this one process) and searched with rules/instep.yaml on the extract date:
   the flow step by step beside the FHIR form's, and candidates compared by person.

    python bench/tabular_shapes.py [--patients 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from recruit.db import make_engine
from recruit.load import load_extract
from recruit.migrate import upgrade
from recruit.models import Patient, SearchResult, StepCount
from recruit.query.run import load_search, run_rule_set
from synthetic_ehr import generate
from synthetic_ehr.keys import emis_guid, pseudonym

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "load" / "tabular" / "fixtures"
MAPPINGS = ROOT / "rules" / "mappings"
FIXTURE_DATE = dt.date(2026, 11, 1)

# shape -> (mapping, extra paths beside the folder, the key the shape gives person i / id)
SHAPES = {
    "emis": ("emis_extract.yaml", [], lambda i, pid: emis_guid(pid)),
    "sre": ("tpp_sre.yaml", [], lambda i, pid: str(pseudonym(i))),
    "cprd_aurum": ("cprd_aurum.yaml", ["dictionaries"], lambda i, pid: str(pseudonym(i))),
    "opensafely": ("opensafely_core.yaml", [], lambda i, pid: str(pseudonym(i))),
    "omop": ("omop_cdm54.yaml", [], lambda i, pid: str(pseudonym(i))),
}
FIXTURE_FOLDERS = {
    "emis": ("emis_extract.yaml", []),
    "sre": ("tpp_sre.yaml", []),
    "cprd_aurum": ("cprd_aurum.yaml", [FIXTURES / "cprd_aurum_dictionaries"]),
    "opensafely": ("opensafely_core.yaml", []),
    "omop": ("omop_cdm54.yaml", []),
    "gp_report": ("gp_system_report.yaml", []),
}


def _engine(path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return engine


def fixtures(work: Path) -> None:
    print("Fixtures (hand-written from the published column lists):")
    for shape, (mapping, extra) in FIXTURE_FOLDERS.items():
        folder = FIXTURES / shape
        engine = _engine(work / f"fx-{shape}.db")
        s = load_extract(
            engine, [folder, *extra], format="csv", mapping=MAPPINGS / mapping, extract_date=FIXTURE_DATE
        )
        engine.dispose()
        not_used = sum(s.not_used.values())
        print(
            f"  {shape:<11} files {len(s.by_file):>2}  read {s.read:>3}  stored {s.loaded:>3}  "
            f"quarantined {s.quarantined:>2}  not used {not_used:>2}  "
            f"reasons: {', '.join(f'{k} {n}' for k, n in s.quarantined_by_reason.most_common())}"
        )
        for path, c in s.by_file.items():
            assert c.read == c.stored + c.quarantined, path
        if s.lookups:
            print(f"  {'':<11} lookups: {', '.join(f'{Path(p).name} {n}' for p, n in s.lookups.items())}")


def _search(engine, when: dt.date) -> tuple[list[tuple[str, int]], set[str]]:  # type: ignore[no-untyped-def]
    rule_set, codelists, _ = load_search(ROOT / "rules" / "instep.yaml")
    run_id = run_rule_set(engine, rule_set, codelists, when)
    with engine.connect() as conn:
        flow = conn.execute(
            select(StepCount.step_id, StepCount.kept)
            .where(StepCount.run_id == run_id)
            .order_by(StepCount.step_index)
        ).all()
        found = conn.execute(
            select(Patient.source_id)
            .join(SearchResult, SearchResult.patient_id == Patient.id)
            .where(SearchResult.run_id == run_id, SearchResult.outcome == "candidate")
        ).scalars()
        return [(str(a), int(b)) for a, b in flow], set(found)


def population(work: Path, patients: int, seed: int) -> None:
    out = work / "gen"
    t = time.perf_counter()
    generate(out, patients=patients, practices=3, seed=seed, formats=("ndjson", *SHAPES), workers=1)
    print(f"\nPopulation: {patients:,} patients, seed {seed} (generated in {time.perf_counter() - t:.1f} s)")
    when = dt.date.fromisoformat(
        json.loads((out / "truth" / "params.json").read_text())["params"]["extract_date"]
    )
    with (out / "truth" / "truth.csv").open(newline="", encoding="utf-8") as fh:
        ids = [row["patient_id"] for row in csv.DictReader(fh)]
    fhir = _engine(work / "fhir.db")
    t = time.perf_counter()
    fs = load_extract(fhir, [out / "fhir"], extract_date=when, workers=1)
    print(
        f"  fhir        load {time.perf_counter() - t:6.2f} s  read {fs.read:,}  quarantined {fs.quarantined}"
    )
    flow_f, found_f = _search(fhir, when)
    flows = {"fhir": dict(flow_f)}
    for shape, (mapping, extra, key_of) in SHAPES.items():
        engine = _engine(work / f"{shape}.db")
        paths = [out / shape, *[out / shape / e for e in extra]]
        t = time.perf_counter()
        s = load_extract(engine, paths, format="csv", mapping=MAPPINGS / mapping, extract_date=when)
        took = time.perf_counter() - t
        flow, found = _search(engine, when)
        engine.dispose()
        back = {key_of(i, pid): pid for i, pid in enumerate(ids)}
        people = {back[k] for k in found}
        flows[shape] = dict(flow)
        print(
            f"  {shape:<11} load {took:6.2f} s  read {s.read:,}  quarantined {s.quarantined}  not used "
            f"{sum(s.not_used.values()):,}  candidates {len(people):,} (FHIR {len(found_f):,}; "
            f"only here {len(people - found_f)}, only in FHIR {len(found_f - people)})"
        )
    steps = [step for step, _ in flow_f]
    print("\n  kept after each step:")
    print("  " + f"{'step':<20}" + "".join(f"{name:>11}" for name in flows))
    for step in steps:
        print("  " + f"{step:<20}" + "".join(f"{flows[name].get(step, 0):>11,}" for name in flows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fixtures(work)
        population(work, args.patients, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
