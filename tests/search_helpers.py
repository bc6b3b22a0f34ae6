"""Helpers for the search tests: tiny codelists, plain-data populations, loading them into a database."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text

from recruit.codelists import Code, Codelist, CodeSystem
from recruit.db import make_engine
from recruit.migrate import upgrade
from recruit.models import (
    ClinicalEvent,
    CodelistCode,
    Invitation,
    MedicationIssue,
    Patient,
    Practice,
    SearchResult,
    SearchRun,
    StepCount,
    Study,
)
from recruit.models import Codelist as CodelistRow
from recruit.query.model import RuleSet
from recruit.query.reference import Data, ReferenceRun, run_reference
from recruit.query.run import run_rule_set

INDEX = dt.date(2025, 6, 30)


def make_codelist(name: str, rows: Iterable[Sequence[str]], version: str = "test") -> Codelist:
    """rows: (system, code[, category[, match]]) tuples; the term is made from the code."""
    codes = []
    for row in rows:
        system, code = row[0], row[1]
        attrs = {"source": "test"}
        if len(row) > 2 and row[2]:
            attrs["category"] = row[2]
        if len(row) > 3 and row[3]:
            attrs["match"] = row[3]
        codes.append(Code(CodeSystem(system), code, f"term {code}", MappingProxyType(attrs)))
    digest = hashlib.sha256(
        repr((name, [(c.system, c.code, sorted(c.attrs.items())) for c in codes])).encode()
    )
    return Codelist(name, tuple(codes), version, ("test",), digest.hexdigest())


@dataclass
class Population:
    """Plain rows, in the shape of the tables (and of what the reference evaluator reads)."""

    practices: list[dict[str, Any]] = field(default_factory=list)
    patients: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    medications: list[dict[str, Any]] = field(default_factory=list)
    studies: list[dict[str, Any]] = field(default_factory=list)
    invitations: list[dict[str, Any]] = field(default_factory=list)

    def add_patient(self, pid: int, **values: Any) -> dict[str, Any]:
        if not self.practices:
            self.practices.append({"id": 1, "ods_code": "A00001", "name": "Test practice"})
        row = {
            "id": pid,
            "practice_id": 1,
            "source_id": f"p{pid}",
            "nhs_number": None,
            "date_of_birth": dt.date(1980, 1, 1),
            "date_of_birth_latest": None,
            "sex": "unknown",
            "registration_start": dt.date(2000, 1, 1),
            "registration_end": None,
            "date_of_death": None,
            "pseudonymised": False,
        }
        row.update(values)
        self.patients.append(row)
        return row

    def add_event(
        self,
        pid: int,
        day: dt.date,
        system: str,
        code: str,
        term: str | None = None,
        status: str | None = None,
    ) -> None:
        self.events.append(
            {
                "id": max((e["id"] for e in self.events), default=0) + 1,
                "patient_id": pid,
                "practice_id": self._practice(pid),
                "event_date": day,
                "code_system": system,
                "code": code,
                "term": term if term is not None else f"term {code}",
                "status": status,
            }
        )

    def add_issue(
        self,
        pid: int,
        day: dt.date,
        code: str,
        course: str = "repeat",
        system: str = "dmd",
        status: str | None = None,
    ) -> None:
        self.medications.append(
            {
                "id": max((m["id"] for m in self.medications), default=0) + 1,
                "patient_id": pid,
                "practice_id": self._practice(pid),
                "issue_date": day,
                "code_system": system,
                "code": code,
                "term": f"drug {code}",
                "course": course,
                "status": status,
            }
        )

    def add_invitation(
        self, pid: int, study_code: str, status: str = "sent", reply: str | None = None
    ) -> None:
        study = next((s for s in self.studies if s["code"] == study_code), None)
        if study is None:
            study = {"id": len(self.studies) + 1, "code": study_code, "title": study_code}
            self.studies.append(study)
        patient = next(p for p in self.patients if p["id"] == pid)
        self.invitations.append(
            {
                "id": len(self.invitations) + 1,
                "study_id": study["id"],
                "patient_id": pid,
                "nhs_number": patient["nhs_number"] or f"9{pid:09d}",
                "study_number": f"S{len(self.invitations) + 1}",
                "status": status,
                "reply": reply,
            }
        )

    def _practice(self, pid: int) -> int:
        return next(p["practice_id"] for p in self.patients if p["id"] == pid)


def fresh_engine(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    return engine


RECORD_TABLES = [
    SearchResult,
    StepCount,
    Invitation,
    SearchRun,
    CodelistCode,
    CodelistRow,
    Study,
    ClinicalEvent,
    MedicationIssue,
    Patient,
    Practice,
]


def clear(conn: Connection) -> None:
    """Empty every table the search tests write, so one schema serves many examples."""
    for model in RECORD_TABLES:
        conn.execute(text(f"DELETE FROM {model.__tablename__}"))


def load_population(conn: Connection, population: Population) -> None:
    for model, rows in (
        (Practice, population.practices),
        (Patient, population.patients),
        (ClinicalEvent, population.events),
        (MedicationIssue, population.medications),
        (Study, population.studies),
        (Invitation, population.invitations),
    ):
        if rows:
            conn.execute(insert(model.__table__), rows)


# --- running a search and checking it against the reference ------------------------------------


def rule_set(steps: list[dict[str, Any]], **top: Any) -> RuleSet:
    """A RuleSet from plain data, for tests: steps as dicts with id, kind, reason, criterion."""
    data = {"name": "test", "version": "1", "study": "instep", **top, "steps": steps}
    return RuleSet.model_validate(data)


def one_step(criterion: dict[str, Any], kind: str = "include", **top: Any) -> RuleSet:
    return rule_set([{"id": "only", "kind": kind, "reason": "the step", "criterion": criterion}], **top)


@dataclass
class EngineRun:
    run_id: int
    results: dict[int, dict[str, Any]]
    counts: list[dict[str, Any]]

    def candidates(self) -> set[int]:
        return {pid for pid, r in self.results.items() if r["outcome"] == "candidate"}


def run_engine(
    engine: Engine,
    population: Population,
    rules: RuleSet,
    codelists: Mapping[str, Codelist],
    index: dt.date = INDEX,
    practice: str | None = None,
    reload: bool = True,
) -> EngineRun:
    if reload:
        with engine.begin() as conn:
            clear(conn)
            load_population(conn, population)
    run_id = run_rule_set(engine, rules, codelists, index, practice)
    with engine.connect() as conn:
        rows = conn.execute(select(SearchResult.__table__).where(SearchResult.run_id == run_id)).mappings()
        results = {r["patient_id"]: dict(r) for r in rows}
        counts = [
            dict(r)
            for r in conn.execute(
                select(StepCount.__table__).where(StepCount.run_id == run_id).order_by(StepCount.step_index)
            ).mappings()
        ]
    return EngineRun(run_id, results, counts)


def reference_run(
    population: Population, rules: RuleSet, codelists: Mapping[str, Codelist], index: dt.date = INDEX
) -> ReferenceRun:
    return run_reference(rules, codelists, reference_data(population), index)


def reference_data(population: Population) -> Data:
    """The population as the reference evaluator reads it."""
    return Data(
        population.patients,
        population.events,
        population.medications,
        population.invitations,
        population.studies,
    )


def assert_agrees(engine_run: EngineRun, reference: ReferenceRun) -> None:
    """Patient by patient and count by count."""
    assert set(engine_run.results) == set(reference.results)
    for pid, expected in reference.results.items():
        got = engine_run.results[pid]
        assert (got["outcome"], got["excluding_step"], got["step_mask"]) == (
            expected.outcome,
            expected.excluding_step,
            expected.step_mask,
        ), f"patient {pid}"
        assert got["evidence"] == expected.evidence, f"patient {pid}"
        assert got["score"] == expected.score, f"patient {pid}"
        assert got["rank"] == expected.rank, f"patient {pid}"
    got_counts = [
        {k: c[k] for k in ("step_id", "entering", "kept", "excluded", "failing_alone")}
        for c in engine_run.counts
    ]
    assert got_counts == reference.counts


def check(
    engine: Engine,
    population: Population,
    rules: RuleSet,
    codelists: Mapping[str, Codelist],
    index: dt.date = INDEX,
) -> EngineRun:
    """Run on the engine, insist it agrees with the reference, and return the engine's run."""
    got = run_engine(engine, population, rules, codelists, index)
    assert_agrees(got, reference_run(population, rules, codelists, index))
    return got


# --- DuckDB ------------------------------------------------------------------------------------


def duckdb_available() -> bool:
    try:
        import duckdb_engine  # noqa: F401
    except ImportError:
        return False
    return True
