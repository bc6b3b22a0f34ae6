"""Shared checks for the pseudonymised tabular shapes (CPRD Aurum, OpenSAFELY, OMOP CDM).

Two kinds of test use these: a hand-written fixture loaded and checked file by file (every row
read is stored, quarantined with its file, line and column, or skipped with a reason), and the
same synthetic population loaded from its FHIR form and from the shape, searched with InSTEP and
compared person by person.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select

from recruit.db import make_engine
from recruit.load import load_extract
from recruit.load.loader import LoadSummary
from recruit.migrate import upgrade
from recruit.models import (
    ClinicalEvent,
    MedicationIssue,
    Patient,
    Practice,
    Quarantine,
    SearchResult,
    StepCount,
)
from recruit.query.run import run_search
from synthetic_ehr import generate
from synthetic_ehr.keys import pseudonym

ROOT = Path(__file__).resolve().parents[4]
MAPPINGS = ROOT / "rules" / "mappings"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RULES = ROOT / "rules" / "instep.yaml"


def load(
    engine: Engine, paths: Iterable[Path], mapping: str, extract_date: dt.date | None = None
) -> LoadSummary:
    return load_extract(
        engine, list(paths), format="csv", mapping=MAPPINGS / mapping, extract_date=extract_date
    )


@dataclass(frozen=True)
class Stored:
    practice: str
    nhs_number: str | None
    sex: str
    birth: tuple[dt.date, dt.date | None]
    registration: tuple[dt.date | None, dt.date | None]
    death: dt.date | None


def patients(engine: Engine) -> dict[str, Stored]:
    q = select(
        Patient.source_id,
        Practice.ods_code,
        Patient.nhs_number,
        Patient.sex,
        Patient.date_of_birth,
        Patient.date_of_birth_latest,
        Patient.registration_start,
        Patient.registration_end,
        Patient.date_of_death,
    ).join(Practice, Practice.id == Patient.practice_id)
    with engine.connect() as conn:
        return {r[0]: Stored(r[1], r[2], r[3], (r[4], r[5]), (r[6], r[7]), r[8]) for r in conn.execute(q)}


def events(engine: Engine) -> set[tuple[str, dt.date, str, str]]:
    e = ClinicalEvent
    q = select(Patient.source_id, e.event_date, e.code_system, e.code)
    q = q.join(Patient, Patient.id == e.patient_id)
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(q)}  # type: ignore[misc]


def medications(engine: Engine) -> set[tuple[str, dt.date, str, str]]:
    m = MedicationIssue
    q = select(Patient.source_id, m.issue_date, m.code_system, m.code)
    q = q.join(Patient, Patient.id == m.patient_id)
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(q)}  # type: ignore[misc]


def quarantined(engine: Engine) -> set[tuple[str, int | None, str | None]]:
    """(file name, line, column) of every quarantined row."""
    with engine.connect() as conn:
        rows = conn.execute(select(Quarantine.file, Quarantine.line, Quarantine.field)).all()
    return {(Path(f).name, line, field) for f, line, field in rows}


def data_rows(path: Path, delimiter: str = ",") -> int:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return sum(1 for _ in csv.reader(fh, delimiter=delimiter)) - 1


def assert_every_row_accounted(
    engine: Engine,
    summary: LoadSummary,
    folder: Path,
    stored_rows: dict[str, int],
    delimiter: str = ",",
    not_used: dict[str, int] | None = None,
) -> None:
    """Per file: the rows in it = stored + quarantined + read but not used (an earlier
    registration), as the fixture says and as the load summary counts them file by file; every
    quarantined row names its file, line and column."""
    not_used = not_used or {}
    q = quarantined(engine)
    for name, line, field in q:
        assert name and field and line is not None and line >= 2, (name, line, field)
    per_file = Counter(name for name, _, _ in q)
    assert set(per_file) <= set(stored_rows), "a quarantined row names a file the test does not know"
    counted = {Path(path).name: c for path, c in summary.by_file.items()}
    for name, stored in stored_rows.items():
        rows = data_rows(folder / name, delimiter)
        unused = not_used.get(name, 0)
        assert rows == stored + per_file[name] + unused, (name, rows, stored, per_file[name])
        c = counted[name]
        assert (c.stored, c.quarantined, c.not_used) == (stored, per_file[name], unused), (name, c)
        assert c.read == c.stored + c.quarantined
    assert summary.read == summary.loaded + summary.quarantined
    assert summary.quarantined == len(q)
    assert sum(summary.not_used.values()) == sum(not_used.values())


# --- the same population from FHIR and from a shape ------------------------------------------


def _outcomes(engine: Engine, run_id: int) -> dict[str, str]:
    """Patient source id -> the step that left them out, or 'included'."""
    q = (
        select(Patient.source_id, SearchResult.outcome, SearchResult.excluding_step)
        .join(Patient, Patient.id == SearchResult.patient_id)
        .where(SearchResult.run_id == run_id)
    )
    with engine.connect() as conn:
        return {sid: (step or f"({outcome})") for sid, outcome, step in conn.execute(q)}


def _flow(engine: Engine, run_id: int) -> list[tuple[str, int, int, int]]:
    q = (
        select(StepCount.step_id, StepCount.entering, StepCount.kept, StepCount.excluded)
        .where(StepCount.run_id == run_id)
        .order_by(StepCount.step_index)
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(q)]  # type: ignore[misc]


def _flow_of(outcomes: dict[str, str], steps: list[str]) -> list[tuple[str, int, int, int]]:
    """The step counts that these per-person outcomes make (each person leaves at one step)."""
    left = Counter(outcomes.values())
    entering = len(outcomes)
    out = []
    for step in steps:
        excluded = left[step]
        out.append((step, entering, entering - excluded, excluded))
        entering -= excluded
    return out


def _age(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _month_range(birth: dt.date) -> tuple[dt.date, dt.date]:
    first = birth.replace(day=1)
    nxt = (first + dt.timedelta(days=32)).replace(day=1)
    return first, nxt - dt.timedelta(days=1)


def birth_range(precision: str, birth: dt.date, extract: dt.date) -> tuple[dt.date, dt.date]:
    """What a shape can say of a birth date: exact, its month, or its year (CPRD: the month too
    for children under 16)."""
    if precision == "day":
        return birth, birth
    if precision == "month" or (precision == "cprd" and _age(birth, extract) < 16):
        return _month_range(birth)
    return dt.date(birth.year, 1, 1), dt.date(birth.year, 12, 31)


def _keys(out: Path) -> dict[str, str]:
    """FHIR Patient.id -> the pseudonymised shapes' key, from truth.csv (checked against keys.py:
    truth.csv lists people in index order)."""
    with (out / "truth" / "truth.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert all(row["pseudonym"] == str(pseudonym(i)) for i, row in enumerate(rows))
    return {row["patient_id"]: row["pseudonym"] for row in rows}


def equivalence(
    out: Path,
    shape: str,
    mapping: str,
    precision: str,
    size: int = 400,
    seed: int = 18,
    extra: Iterable[str] = (),
) -> dict[str, int]:
    """Load one synthetic population from FHIR and from the shape, search both with InSTEP and
    check they differ only where the shape cannot know: people whose age on the index date the
    shape's birth-date precision cannot tell are left out at the age step (a pseudonymised patient
    passes the NHS number step). Returns counts for the record."""
    summary = generate(out, patients=size, practices=2, seed=seed, formats=("ndjson", shape), workers=1)
    manifest = json.loads((out / "fhir" / "manifest.json").read_text())
    extract = dt.date.fromisoformat(manifest["transactionTime"][:10])
    fhir_db = make_engine(f"sqlite:///{out / 'fhir.db'}")
    shape_db = make_engine(f"sqlite:///{out / f'{shape}.db'}")
    upgrade(fhir_db)
    upgrade(shape_db)
    load_extract(fhir_db, [out / "fhir"], extract_date=extract)
    loaded = load(shape_db, [out / shape, *(out / shape / e for e in extra)], mapping, extract_date=extract)
    assert loaded.quarantined == 0 and loaded.loaded == loaded.read

    key_of = _keys(out)  # FHIR Patient.id is person.id
    assert len(key_of) == summary.patients
    births = {sid: s.birth[0] for sid, s in patients(fhir_db).items()}
    fhir_run = run_search(fhir_db, RULES, index_date=extract)
    shape_run = run_search(shape_db, RULES, index_date=extract)
    fhir_flow = _flow(fhir_db, fhir_run)
    steps = [s for s, *_ in fhir_flow]
    fhir_by_person = _outcomes(fhir_db, fhir_run)
    assert _flow_of(fhir_by_person, steps) == fhir_flow  # the per-person reading is right
    shape_by_key = _outcomes(shape_db, shape_run)
    assert set(shape_by_key) == set(key_of.values()), "every person loaded from the shape, by key"

    order = {s: i for i, s in enumerate(steps)}
    expected: dict[str, str] = {}
    for pid, step in fhir_by_person.items():
        got = step
        if order.get(step, len(steps)) > order["working_age"]:  # passed the age step (or every step)
            lo, hi = birth_range(precision, births[pid], extract)
            if not (_age(hi, extract) >= 18 and _age(lo, extract) <= 64):
                got = "working_age"
        expected[key_of[pid]] = got
    differs = {k for k in expected if expected[k] != shape_by_key[k]}
    assert not differs, sorted((k, expected[k], shape_by_key[k]) for k in differs)[:10]
    assert _flow(shape_db, shape_run) == _flow_of(expected, steps)
    moved = sum(1 for pid, step in fhir_by_person.items() if expected[key_of[pid]] != step)
    if precision == "day":
        assert moved == 0
    fhir_db.dispose()
    shape_db.dispose()
    candidates = sum(1 for step in fhir_by_person.values() if step not in order)
    return {"candidates": candidates, "age_unknown": moved}


# --- what the writers wrote, read back without recruit's reader ------------------------------

_SYSTEMS = {
    "http://snomed.info/sct": "snomedct",
    "http://read.info/readv2": "readv2",
    "http://read.info/ctv3": "ctv3",
}


@dataclass
class Person:
    """One person as the FHIR form shows them (dates as ISO text)."""

    sex: str
    birth: dt.date
    registration: tuple[str, str | None]
    death: str | None
    events: Counter[tuple[str, str, str]]  # (date, system, code)
    medications: Counter[tuple[str, str]]  # (date, dm+d code)


def fhir_people(out: Path) -> dict[str, Person]:
    """The FHIR form's people, keyed by the pseudonymised shapes' key (keys.pseudonym)."""
    key_of = _keys(out)

    def ndjson(kind: str) -> list[dict]:
        path = out / "fhir" / f"{kind}.ndjson"
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    people: dict[str, Person] = {}
    for res in ndjson("Patient"):
        period = res["extension"][0]["extension"][0]["valuePeriod"]
        people[key_of[res["id"]]] = Person(
            res["gender"],
            dt.date.fromisoformat(res["birthDate"]),
            (period["start"], period.get("end")),
            res.get("deceasedDateTime"),
            Counter(),
            Counter(),
        )
    for kind, when in (("Condition", "onsetDateTime"), ("Observation", "effectiveDateTime")):
        for res in ndjson(kind):
            coding = res["code"]["coding"][0]
            who = key_of[res["subject"]["reference"].split("/", 1)[1]]
            people[who].events[(res[when], _SYSTEMS[coding["system"]], coding["code"])] += 1
    for res in ndjson("MedicationRequest"):
        who = key_of[res["subject"]["reference"].split("/", 1)[1]]
        code = res["medicationCodeableConcept"]["coding"][0]["code"]
        people[who].medications[(res["authoredOn"], code)] += 1
    return people


def read_table(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))
