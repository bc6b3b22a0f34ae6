"""A stored search run: one typed object, loaded once, for review, letters, audit, waves and flow.

Each of those used to fetch the search_run row itself and say "no such run" in its own words;
here the row is read in one place, its JSON columns typed, its stored rule file parsed once,
and a missing run is one error with one message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import Connection, select, true

from recruit.codelists import Code, Codelist, CodeSystem
from recruit.errors import RecruitError
from recruit.query.model import RuleSet
from recruit.tables import CODELIST, CODES, RESULT, RUN, STEP_COUNT


class NoSuchRun(RecruitError):
    """The search run asked for is not in this database."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        super().__init__(f"There is no search run {run_id}. `recruit search` prints the number of each run.")


@dataclass(frozen=True)
class RunStep:
    """One step of the run's rules as stored with the run: bit `index` of search_result.step_mask."""

    index: int
    id: str
    kind: str
    reason: str


@dataclass(frozen=True)
class StepTally:
    """One step's stored counts (a step_count row)."""

    step_index: int
    step_id: str
    kind: str
    description: str | None
    entering: int
    kept: int
    excluded: int
    failing_alone: int | None


@dataclass(frozen=True)
class PatientOutcome:
    """One patient's result in the run (a search_result row): candidate or excluded, at which
    step and why, with the record that decided it, the step mask, score and rank."""

    patient_id: int
    practice_id: int
    outcome: str
    excluding_step: str | None
    reason: str | None
    evidence: Mapping[str, Any] | None
    step_mask: int
    score: float | None
    rank: int | None


@dataclass(frozen=True)
class Explanation:
    """Why one candidate is on the list, in the review sheet's words."""

    why: tuple[str, ...]
    work: str
    score_parts: tuple[str, ...]
    check_first: tuple[str, ...]


@dataclass(frozen=True)
class SearchRun:
    """A search_run row, typed. Empty JSON columns read as empty (not None), so callers need no
    `or {}`: a run made before a column was filled has nothing in it either way."""

    id: int
    study_id: int | None
    rule_set_name: str
    rule_set_version: str
    rule_set_fingerprint: str
    rule_set_text: str | None
    codelist_fingerprints: Mapping[str, str] = field(hash=False)
    extract_fingerprints: tuple[str, ...]
    steps: tuple[RunStep, ...]
    practice_ods_code: str | None
    index_date: dt.date
    recruit_version: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    status: str
    error: str | None

    @classmethod
    def load(cls, conn: Connection, run_id: int) -> SearchRun:
        """The run numbered `run_id`; NoSuchRun if this database has none."""
        row = conn.execute(select(RUN).where(RUN.c.id == run_id)).one_or_none()
        if row is None:
            raise NoSuchRun(run_id)
        return cls.from_row(row)

    @classmethod
    def from_row(cls, row: Any) -> SearchRun:
        """A run from a search_run row already read (all its columns)."""
        return cls(
            id=row.id,
            study_id=row.study_id,
            rule_set_name=row.rule_set_name,
            rule_set_version=row.rule_set_version,
            rule_set_fingerprint=row.rule_set_fingerprint,
            rule_set_text=row.rule_set_text,
            codelist_fingerprints=MappingProxyType(dict(row.codelist_fingerprints or {})),
            extract_fingerprints=tuple(row.extract_fingerprints or ()),
            steps=tuple(RunStep(s["index"], s["id"], s["kind"], s["reason"]) for s in row.steps or ()),
            practice_ods_code=row.practice_ods_code,
            index_date=row.index_date,
            recruit_version=row.recruit_version,
            started_at=row.started_at,
            finished_at=row.finished_at,
            status=row.status,
            error=row.error,
        )

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def require_finished(self, lacking: str | None = None) -> SearchRun:
        """This run if it finished; else an error saying to run the search again (and, when
        given, what an unfinished run lacks, e.g. "no list to review")."""
        if self.finished:
            return self
        if lacking is None:
            raise RecruitError(f"Search run {self.id} did not finish ({self.status}); run the search again.")
        what = "failed" if self.status == "failed" else "has not finished"
        raise RecruitError(f"Search run {self.id} {what}, so it has {lacking}. Run the search again.")

    @cached_property
    def rule_set(self) -> RuleSet | None:
        """The rule set stored with the run, or None if it kept none (or it no longer reads).
        It was checked when the run was made, so the fast YAML reader will do, not
        parse_rule_set's line-by-line error reporting."""
        if not self.rule_set_text:
            return None
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            return RuleSet.model_validate(yaml.load(self.rule_set_text, Loader=loader))
        except (yaml.YAMLError, ValidationError):
            return None

    def codelists(self, conn: Connection) -> tuple[dict[str, Codelist], dict[str, int]] | None:
        """The codelists exactly as the run used them (stored with it): their ids, which the SQL
        joins on, and the rows matched by prefix, the only ones the compiler needs to see in
        Python. None if one is no longer stored (a run older than stored codelists)."""
        codelists: dict[str, Codelist] = {}
        ids: dict[str, int] = {}
        for name, fingerprint in self.codelist_fingerprints.items():
            row = conn.execute(
                select(CODELIST.c.id, CODELIST.c.version).where(
                    CODELIST.c.name == name, CODELIST.c.fingerprint == fingerprint
                )
            ).first()
            if row is None:
                return None
            prefixed = conn.execute(
                select(CODES).where(CODES.c.codelist_id == row.id, CODES.c.match_prefix == true())
            )
            codes = tuple(
                Code(
                    CodeSystem(c.code_system),
                    c.code,
                    c.term or "",
                    MappingProxyType({"match": "prefix", **({"category": c.category} if c.category else {})}),
                )
                for c in prefixed
            )
            codelists[name] = Codelist(name, codes, row.version or "", (), fingerprint)
            ids[name] = row.id
        return codelists, ids

    @property
    def step_ids(self) -> tuple[str, ...]:
        """The steps' ids in order: bit i of search_result.step_mask is step i."""
        return tuple(s.id for s in self.steps)

    def counts(self, conn: Connection) -> list[StepTally]:
        """How many each step kept and excluded, in step order, as the search stored them."""
        rows = conn.execute(
            select(STEP_COUNT).where(STEP_COUNT.c.run_id == self.id).order_by(STEP_COUNT.c.step_index)
        )
        return [
            StepTally(
                step_index=r.step_index,
                step_id=r.step_id,
                kind=r.kind,
                description=r.description,
                entering=r.entering,
                kept=r.kept,
                excluded=r.excluded,
                failing_alone=r.failing_alone,
            )
            for r in rows
        ]

    def results(
        self, conn: Connection, outcome: str | None = None, practice_id: int | None = None
    ) -> list[PatientOutcome]:
        """Every patient's result (only candidates with outcome="candidate"; one practice's with
        practice_id), candidates by rank, then by patient."""
        query = select(RESULT).where(RESULT.c.run_id == self.id)
        if outcome is not None:
            query = query.where(RESULT.c.outcome == outcome)
        if practice_id is not None:
            query = query.where(RESULT.c.practice_id == practice_id)
        rows = conn.execute(query.order_by(RESULT.c.rank.is_(None), RESULT.c.rank, RESULT.c.patient_id))
        return [
            PatientOutcome(
                patient_id=r.patient_id,
                practice_id=r.practice_id,
                outcome=r.outcome,
                excluding_step=r.excluding_step,
                reason=r.reason,
                evidence=r.evidence,
                step_mask=r.step_mask,
                score=r.score,
                rank=r.rank,
            )
            for r in rows
        ]

    def explain(self, conn: Connection, patient_id: int) -> Explanation:
        """What made one candidate a candidate, worked out as the review sheet does (from the
        rules and codelists stored with the run, over the candidates of that person's practice).
        Call it inside a transaction: the explanation uses temporary tables."""
        from recruit.explain import explain_candidates

        practice_id = conn.execute(
            select(RESULT.c.practice_id).where(
                RESULT.c.run_id == self.id,
                RESULT.c.patient_id == patient_id,
                RESULT.c.outcome == "candidate",
            )
        ).scalar()
        if practice_id is None:
            raise RecruitError(f"Patient {patient_id} is not a candidate in search run {self.id}.")
        explained = explain_candidates(conn, self, practice_id)
        why = explained.why.get(patient_id) or ([explained.missing] if explained.missing else [])
        return Explanation(
            why=tuple(why),
            work=explained.work.get(patient_id, explained.no_work),
            score_parts=tuple(explained.score_parts.get(patient_id, ())),
            check_first=tuple(explained.check_first.get(patient_id, ())),
        )
