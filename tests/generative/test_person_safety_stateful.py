"""Issue 14's acceptance test: over ANY sequence of extracts, no letter reaches anyone the GP did
not screen, who is dead, registered elsewhere, opted out, who declined or was invited before, or
at a name or address that is not their current one.

A hypothesis state machine builds a history for 2-3 practices sharing a few people: newer,
older and partial Bulk FHIR extracts, moves between practices (the old practice may be slow to
notice), a Patient.id reused for someone else, duplicate records, deaths and opt-outs and their
withdrawal (some with unreadable dates or values), changes of name and address, searches, GP
review, letters and replies. After every letters run each new invitation is checked against the
plain-Python model in extract_world.py; loads may refuse (RecruitError) but never crash, and
never touch invitations.

Settings profiles (RECRUIT_HYPOTHESIS_PROFILE): "person-safety" (default: small and repeatable,
for CI) and "person-safety-long" (a long run by hand).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import Engine, and_, insert, select, text

from recruit.errors import RecruitError
from recruit.letters.batch import write_letters
from recruit.letters.study import load_study_settings, store_study
from recruit.load import load_extract
from recruit.models import Invitation, Patient, Practice, ReviewDecision, SearchResult, Study
from recruit.query.run import run_search
from recruit.replies import import_replies
from tests.conftest import postgres_schema_url
from tests.generative.conftest import clear_database
from tests.generative.extract_world import (
    DATE_STYLES,
    DEATH_STYLES,
    PRACTICES,
    ExtractView,
    Model,
    Options,
    World,
    describe,
    letter_matches,
    mail_merge,
    practice_snapshot,
    write_extract,
)
from tests.search_helpers import fresh_engine

ROOT = Path(__file__).resolve().parents[2]
RULES = Path(__file__).resolve().parent / "person_safety" / "rules.yaml"
STUDY_FILE = ROOT / "rules" / "studies" / "instep.yaml"
SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

# The default (CI) profile does not shrink: a failing history is printed whole, in words, and
# shrinking one takes minutes (each step loads extracts or prints letters). The long profile
# shrinks.
settings.register_profile(
    "person-safety",
    max_examples=15,
    stateful_step_count=8,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=SUPPRESS,
    print_blob=True,
)
settings.register_profile(
    "person-safety-long",
    max_examples=400,
    stateful_step_count=30,
    deadline=None,
    derandomize=False,
    suppress_health_check=SUPPRESS,
    print_blob=True,
)
PROFILE = os.environ.get("RECRUIT_HYPOTHESIS_PROFILE", "person-safety")
# A survey by hand: RECRUIT_PERSON_SAFETY_SURVEY=FILE records every violation (one JSON line
# each, with its history) instead of failing at the first, to see every kind found in one run.
SURVEY = os.environ.get("RECRUIT_PERSON_SAFETY_SURVEY")
# RECRUIT_PERSON_SAFETY_ONLY=WORDS fails only on violations whose reason holds WORDS (to shrink
# one kind of violation at a time).
ONLY = os.environ.get("RECRUIT_PERSON_SAFETY_ONLY")
# RECRUIT_PERSON_SAFETY_EXAMPLES=N: run N histories of the chosen profile (a long run that ends).
EXAMPLES = os.environ.get("RECRUIT_PERSON_SAFETY_EXAMPLES")
# Examples and steps actually run, per database (reported by the tests, for the closing note).
STATS: dict[str, Any] = {}


pytestmark = pytest.mark.usefixtures("templates_checked_once")


class Scenario:
    """One history: the world, the database and the model, with the operations the state machine
    (and the plain liveness test) run. Every step is logged in words for the failure report."""

    def __init__(self, engine: Engine, folder: Path, practices: int = 3) -> None:
        self.engine = engine
        self.folder = folder
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        clear_database(engine)
        with engine.begin() as conn:
            self.study_id = store_study(conn, load_study_settings(STUDY_FILE))
            self.other_study = conn.execute(
                insert(Study).values(code="other", title="Another study").returning(Study.id)
            ).scalar_one()
        self.world = World(list(PRACTICES[:practices]))
        self.model = Model()
        self.history: list[str] = []
        self.runs: list[int] = []
        self.extracts = 0
        self.letters = 0
        self.invitations: dict[int, tuple[int, str, str]] = {}
        self.violations: list[str] = []

    # --- the world ------------------------------------------------------------------------------

    def log(self, step: str) -> None:
        self.history.append(f"[{self.world.today}] {step}")

    def advance(self, days: int) -> None:
        self.world.today += dt.timedelta(days=days)

    def join(self, practice: str, *, age: int = 40, birth_format: str = "full", shift: int = 0) -> int:
        person = self.world.new_person(practice, age_years=age, birth_format=birth_format, birth_shift=shift)
        self.model.birth[person.nhs] = person.birth
        self.world.add_event(person, "pain")
        self.world.add_event(person, "med")
        self.log(
            f"person {person.index} (born {person.birth}, written {person.birth_text()!r}) registers "
            f"at {practice} as {person.registrations[-1].source_id}, chronic pain coded"
        )
        return person.index

    def registered(self) -> list[int]:
        today = self.world.today
        return [
            p.index for p in self.world.people if p.death is None and p.registration_on(today) is not None
        ]

    # --- extracts -------------------------------------------------------------------------------

    def load(self, practice: str, day: dt.date, opt: Options, label: str) -> str:
        """Write the practice's extract as of `day` and load it; the model learns it only when the
        library accepts it. Returns what happened, in words."""
        files, view = practice_snapshot(self.world, practice, day, opt)
        view.label = label
        self.extracts += 1
        folder = write_extract(self.folder / f"extract-{self.extracts}", files, day, opt)
        try:
            summary = load_extract(self.engine, [folder], workers=1)
        except RecruitError as exc:
            outcome = f"refused: {' '.join(str(exc).split())[:160]}"
        except Exception as exc:  # a crash is a finding: report it with the history
            self.log(f"load {label} of {practice} dated {day} ({describe_options(opt)})")
            if SURVEY:
                self.violations.append(f"load crashed: {type(exc).__name__}: {str(exc)[:300]}")
                return "crashed"
            raise AssertionError(
                f"The load crashed with {type(exc).__name__}: {exc}\nHistory:\n{describe(self.history)}"
            ) from exc
        else:
            if summary.already_loaded:
                outcome = "already loaded (same files)"
            else:
                self.model.loaded.append(view)
                outcome = f"loaded {summary.loaded}, quarantined {dict(summary.quarantined_by_reason)}"
        self.log(f"load {label} of {practice} dated {day} ({describe_options(opt)}): {outcome}")
        return outcome

    def loaded_dates(self, practice: str) -> list[dt.date]:
        return sorted(v.date for v in self.model.loaded if v.practice == practice)

    # --- the workflow ---------------------------------------------------------------------------

    def search(self) -> int | None:
        try:
            run_id = run_search(self.engine, RULES, index_date=self.world.today)
        except RecruitError as exc:
            self.log(f"search refused: {' '.join(str(exc).split())[:160]}")
            return None
        self.runs.append(run_id)
        self.model.index_dates[run_id] = self.world.today
        with self.engine.connect() as conn:
            n = conn.execute(
                select(SearchResult.patient_id).where(
                    SearchResult.run_id == run_id, SearchResult.outcome == "candidate"
                )
            ).all()
        self.log(f"search run {run_id} on {self.world.today}: {len(n)} candidate(s)")
        return run_id

    def candidates(self, run_id: int) -> list[tuple[int, str, str]]:
        """(patient id, NHS number, practice ODS) of the run's candidates not yet reviewed."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Patient.id, Patient.nhs_number, Practice.ods_code)
                .select_from(SearchResult)
                .join(Patient, Patient.id == SearchResult.patient_id)
                .join(Practice, Practice.id == Patient.practice_id)
                .outerjoin(
                    ReviewDecision,
                    and_(ReviewDecision.run_id == run_id, ReviewDecision.patient_id == Patient.id),
                )
                .where(
                    SearchResult.run_id == run_id,
                    SearchResult.outcome == "candidate",
                    ReviewDecision.id.is_(None),
                )
                .order_by(Patient.id)
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def review(self, run_id: int, decisions: list[bool]) -> None:
        """The GP screens each candidate shown (as the database shows them now)."""
        rows = self.candidates(run_id)
        if not rows:
            return
        values, said = [], []
        for (pid, nhs, ods), invite in zip(rows, decisions + [True] * len(rows), strict=False):
            values.append(
                {
                    "run_id": run_id,
                    "patient_id": pid,
                    "decision": "invite" if invite else "do_not_invite",
                    "reviewer": "Dr Reviewer",
                }
            )
            if invite:
                self.model.approvals[(run_id, pid)] = (nhs, ods)
            else:
                self.model.refused.add((run_id, pid))
            said.append(f"{'invite' if invite else 'do not invite'} patient {pid} ({nhs} at {ods})")
        with self.engine.begin() as conn:
            conn.execute(insert(ReviewDecision), values)
        self.log(f"GP review of run {run_id}: " + "; ".join(said))

    def write(self, run_id: int) -> int:
        """A letters run; every new invitation is checked against the model as it stands."""
        self.letters += 1
        out = self.folder / f"letters-{self.letters}"
        try:
            summary = write_letters(
                self.engine, run_id, out, study_file=STUDY_FILE, letter_date=self.world.today, workers=1
            )
        except RecruitError as exc:
            self.log(f"letters for run {run_id} refused: {' '.join(str(exc).split())[:160]}")
            return 0
        with self.engine.connect() as conn:
            new = conn.execute(
                select(Invitation.id, Invitation.patient_id, Invitation.nhs_number, Invitation.study_number)
                .where(Invitation.batch_id == summary.batch_id)
                .order_by(Invitation.id)
            ).all()
            practice_of = dict(
                conn.execute(
                    select(Patient.id, Practice.ods_code).join(Practice, Practice.id == Patient.practice_id)
                ).all()
            )
        merge = mail_merge(out)
        written = []
        for inv in new:
            ods = practice_of[inv.patient_id]
            verdict = self.model.verdict(run_id, inv.patient_id, inv.nhs_number, ods, self.world.today)
            who = f"patient {inv.patient_id} ({inv.nhs_number}) from {ods}"
            written.append(who)
            if not verdict.ok:
                self.violations.append(
                    f"letters run {self.letters} (search run {run_id}) wrote to {who}: {verdict.why}"
                )
                continue
            row = merge.get(inv.study_number)
            wrong = letter_matches(row, verdict) if row is not None else None
            if wrong:
                self.violations.append(
                    f"letters run {self.letters} (search run {run_id}) wrote to {who}: {wrong}"
                )
        for inv in new:
            self.invitations[inv.id] = (inv.patient_id, inv.nhs_number, inv.study_number)
            self.model.invited.add(inv.nhs_number)
        self.log(
            f"letters for run {run_id}: {len(new)} written ({', '.join(written) or 'nobody'}); "
            f"refused {summary.refusals}"
        )
        return len(new)

    def reply(self, pick: int, reply: str) -> None:
        with self.engine.connect() as conn:
            open_ = conn.execute(
                select(Invitation.study_number, Invitation.nhs_number)
                .where(Invitation.study_id == self.study_id, Invitation.reply.is_(None))
                .order_by(Invitation.id)
            ).all()
        if not open_:
            return
        number, nhs = open_[pick % len(open_)]
        path = self.folder / f"replies-{len(self.history)}.csv"
        path.write_text(f"study number,reply,date\n{number},{reply.replace('_', ' ')},{dt.date.today()}\n")
        import_replies(self.engine, path, today=dt.date.today())
        if reply == "do_not_contact":
            self.model.do_not_contact.add(nhs)
        self.log(f"reply from {nhs}: {reply}")

    def do_not_contact_elsewhere(self, person: int) -> None:
        """The person asked another study not to contact them about research (any record of theirs)."""
        nhs = self.world.people[person].nhs
        if nhs in self.model.do_not_contact:
            return
        with self.engine.begin() as conn:
            pid = conn.execute(
                select(Patient.id).where(Patient.nhs_number == nhs).order_by(Patient.id)
            ).scalar()
            if pid is None:
                return
            conn.execute(
                insert(Invitation).values(
                    study_id=self.other_study,
                    patient_id=pid,
                    nhs_number=nhs,
                    study_number=f"OTHER-{person}",
                    status="do_not_contact",
                    reply="do_not_contact",
                )
            )
        self.model.do_not_contact.add(nhs)
        self.log(f"person {person} ({nhs}) asks another study not to contact them (on patient {pid})")

    # --- checks ---------------------------------------------------------------------------------

    def check(self) -> None:
        if SURVEY and self.violations:
            with open(SURVEY, "a", encoding="utf-8") as handle:
                for v in self.violations:
                    handle.write(json.dumps({"violation": v, "history": self.history}) + "\n")
            self.violations = []
        if ONLY:
            self.violations = [v for v in self.violations if ONLY in v]
        if self.violations:
            raise AssertionError(
                "Letters reached people the model does not allow:\n"
                + "\n".join(f"- {v}" for v in self.violations)
                + f"\nHistory:\n{describe(self.history)}"
            )
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    Invitation.id, Invitation.patient_id, Invitation.nhs_number, Invitation.study_number
                ).where(Invitation.study_id == self.study_id)
            ).all()
            numbers = [r.nhs_number for r in rows]
        now = {r.id: (r.patient_id, r.nhs_number, r.study_number) for r in rows}
        assert now == self.invitations, (
            f"Invitations changed outside a letters run.\nHistory:\n{describe(self.history)}"
        )
        assert len(numbers) == len(set(numbers)), (
            f"Someone holds two invitations to the study.\nHistory:\n{describe(self.history)}"
        )


def describe_options(opt: Options) -> str:
    parts = []
    if opt.leave_out:
        parts.append(
            f"no {opt.leave_out}.ndjson "
            f"({'manifest still lists it' if opt.manifest_lists_missing else 'nor in manifest'})"
        )
    if opt.drop_left:
        parts.append("leavers not listed")
    if opt.other_org:
        parts.append(f"also carries {opt.other_org}'s Organization")
    if opt.old_address_style == "ended":
        parts.append("old addresses as home with ended period")
    if not opt.current_address_use:
        parts.append("current address without use")
    parts.append(f"name order {opt.name_order}, address order {opt.address_order}")
    return "; ".join(parts)


# --- the state machine ------------------------------------------------------------------------------

OPTIONS = st.builds(
    Options,
    leave_out=st.none(),
    manifest_lists_missing=st.booleans(),
    drop_left=st.booleans(),
    other_org=st.none(),
    name_order=st.integers(0, 2),
    address_order=st.integers(0, 2),
    old_address_style=st.sampled_from(["old", "ended"]),
    current_address_use=st.booleans(),
    maiden_style=st.sampled_from(["maiden", "old"]),
)
DAYS = st.integers(1, 20)


class PersonSafety(RuleBasedStateMachine):
    """Extract histories for a few practices sharing people, checked after every step."""

    engine: Engine
    folder: Path

    def __init__(self) -> None:
        super().__init__()
        self.s: Scenario | None = None

    @property
    def sc(self) -> Scenario:
        assert self.s is not None
        return self.s

    @initialize(
        practices=st.integers(2, 3),
        homes=st.lists(st.integers(0, 2), min_size=2, max_size=4),
        young=st.sampled_from([None, "full", "month", "year"]),
        shift=st.integers(-150, 150),
    )
    def start(self, practices: int, homes: list[int], young: str | None, shift: int) -> None:
        STATS["examples"] = STATS.get("examples", 0) + 1
        self.s = Scenario(self.engine, self.folder / "history", practices)
        odss = [ods for ods, _ in PRACTICES[:practices]]
        for i, home in enumerate(homes):
            self.sc.join(odss[home % practices], age=30 + 7 * i)
        if young is not None:
            # Turns 18 around now: a partial birth date must not let a 17-year-old be written to.
            self.sc.join(odss[0], age=18, birth_format=young, shift=shift)
        self.sc.advance(5)
        for ods in odss:  # every practice starts with a clean, full extract
            self.sc.load(ods, self.sc.world.today, Options(), "first extract")

    def _count(self) -> None:
        STATS["steps"] = STATS.get("steps", 0) + 1

    def _practice(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from([ods for ods, _ in self.sc.world.practices]), label="practice")

    def _person(self, data: st.DataObject, alive_registered: bool = True) -> int | None:
        pool = self.sc.registered() if alive_registered else [p.index for p in self.sc.world.people]
        if not pool:
            return None
        return data.draw(st.sampled_from(pool), label="person")

    def _after(self, data: st.DataObject, who: int | None) -> None:
        """Often a change is followed at once by newer extracts of the practices the person has
        been registered at (each perhaps), and sometimes by a search, review and letters."""
        if who is None:
            return
        then = data.draw(st.sampled_from(["nothing", "load", "load", "load_and_round"]), label="then")
        if then == "nothing":
            return
        person = self.sc.world.people[who]
        practices = sorted({r.practice for r in person.registrations})
        for practice in practices:
            if len(practices) == 1 or data.draw(st.booleans(), label=f"load {practice}"):
                self.sc.advance(1)
                self.sc.load(
                    practice, self.sc.world.today, data.draw(OPTIONS, label="options"), "newer extract"
                )
        if then == "load_and_round":
            self.search_review_and_write([], 0)

    # --- extracts -----------------------------------------------------------------------------

    @rule(
        data=st.data(),
        days=DAYS,
        opt=OPTIONS,
        partial=st.sampled_from([None, None, "Observation", "Condition", "MedicationRequest"]),
        other=st.booleans(),
    )
    def newer_extract(
        self, data: st.DataObject, days: int, opt: Options, partial: str | None, other: bool
    ) -> None:
        self._count()
        self.sc.advance(days)
        practice = self._practice(data)
        others = [ods for ods, _ in self.sc.world.practices if ods != practice]
        opt = Options(
            **{
                **opt.__dict__,
                "leave_out": partial,
                "other_org": others[0] if other and partial is None else None,
            }
        )
        self.sc.load(practice, self.sc.world.today, opt, "partial extract" if partial else "newer extract")

    @precondition(lambda self: self.s is not None and bool(self.s.model.loaded))
    @rule(data=st.data(), back=st.integers(1, 60), opt=OPTIONS)
    def older_extract(self, data: st.DataObject, back: int, opt: Options) -> None:
        """An extract dated before the newest one loaded for the practice."""
        self._count()
        view: ExtractView = data.draw(st.sampled_from(self.sc.model.loaded), label="after extract")
        day = view.date - dt.timedelta(days=back)
        if day in self.sc.loaded_dates(view.practice):
            return
        self.sc.load(view.practice, day, opt, "OLDER extract")

    # --- what happens to people ------------------------------------------------------------------

    @rule(data=st.data(), days=DAYS, age=st.integers(20, 60))
    def someone_joins(self, data: st.DataObject, days: int, age: int) -> None:
        self._count()
        if len(self.sc.world.people) >= 7:
            return
        self.sc.advance(days)
        self._after(data, self.sc.join(self._practice(data), age=age))

    @rule(data=st.data(), days=DAYS, lag=st.sampled_from([0, 10, 400]), gp2gp=st.booleans())
    def moves_practice(self, data: st.DataObject, days: int, lag: int, gp2gp: bool) -> None:
        self._count()
        who = self._person(data)
        if who is None:
            return
        self.sc.advance(days)
        to = self._practice(data)
        person = self.sc.world.people[who]
        reg = self.sc.world.move_practice(person, to, lag, gp2gp)
        if reg is not None:
            self.sc.log(
                f"person {who} moves to {to} as {reg.source_id} (old practice's system shows it after "
                f"{lag} days; record {'transferred' if gp2gp else 'kept at the old practice too'})"
            )
        self._after(data, who)

    @rule(data=st.data(), days=DAYS, style=st.sampled_from(DEATH_STYLES))
    def dies(self, data: st.DataObject, days: int, style: str) -> None:
        self._count()
        who = self._person(data)
        if who is None:
            return
        self.sc.advance(days)
        person = self.sc.world.people[who]
        if style == "on_duplicate" and self.sc.world.add_duplicate(person) is None:
            reg = person.registration_on(self.sc.world.today)
            if reg is None or reg.duplicate_id is None:
                style = "datetime"
        person.death, person.death_style = self.sc.world.today, style
        self.sc.log(f"person {who} dies (recorded as {style})")
        self._after(data, who)

    @rule(
        data=st.data(),
        days=DAYS,
        kind=st.sampled_from(["dissent", "dissent", "withdrawn"]),
        style=st.sampled_from(DATE_STYLES),
        on_duplicate=st.booleans(),
    )
    def opt_out_or_withdraw(
        self, data: st.DataObject, days: int, kind: str, style: str, on_duplicate: bool
    ) -> None:
        self._count()
        who = self._person(data)
        if who is None:
            return
        self.sc.advance(days)
        person = self.sc.world.people[who]
        reg = person.registration_on(self.sc.world.today)
        on_duplicate = on_duplicate and reg is not None and reg.duplicate_id is not None
        self.sc.world.add_event(person, kind, style, on_duplicate)
        where = " on the duplicate record" if on_duplicate else ""
        self.sc.log(f"person {who}: type 1 {kind} recorded{where}, date {style}")
        self._after(data, who)

    @rule(data=st.data(), days=DAYS, what=st.sampled_from(["address", "unknown_address", "name"]))
    def changes_details(self, data: st.DataObject, days: int, what: str) -> None:
        self._count()
        who = self._person(data)
        if who is None:
            return
        self.sc.advance(days)
        person = self.sc.world.people[who]
        if what == "name":
            self.sc.world.change_name(person)
            self.sc.log(f"person {who} changes name to {person.names[-1].family}")
        else:
            self.sc.world.move_house(person, known=what == "address")
            known = "new address known" if what == "address" else "new address not known"
            self.sc.log(f"person {who} moves house ({known})")
        self._after(data, who)

    @rule(data=st.data(), days=DAYS)
    def duplicate_record(self, data: st.DataObject, days: int) -> None:
        self._count()
        who = self._person(data)
        if who is None:
            return
        self.sc.advance(days)
        reg = self.sc.world.add_duplicate(self.sc.world.people[who])
        if reg is not None:
            self.sc.log(f"person {who} gets a duplicate record {reg.duplicate_id} at {reg.practice}")
        self._after(data, who)

    @rule(data=st.data(), days=DAYS)
    def id_reused(self, data: st.DataObject, days: int) -> None:
        self._count()
        who = self._person(data)
        if who is None or len(self.sc.world.people) >= 7:
            return
        self.sc.advance(days)
        person = self.sc.world.people[who]
        old = person.registration_on(self.sc.world.today)
        assert old is not None
        others = [ods for ods, _ in self.sc.world.practices if ods != old.practice]
        to = data.draw(st.sampled_from(others), label="leaver goes to")
        newcomer = self.sc.world.reuse_id(person, to)
        if newcomer is not None:
            self.sc.model.birth[newcomer.nhs] = newcomer.birth
            self.sc.log(
                f"person {who} moves to {to}; {old.practice} gives their id {old.source_id} to a new "
                f"person {newcomer.index} ({newcomer.nhs}, born {newcomer.birth}, chronic pain)"
            )
            self._after(data, who)

    # --- the workflow ----------------------------------------------------------------------------

    @precondition(lambda self: self.s is not None and bool(self.s.model.loaded))
    @rule()
    def search(self) -> None:
        self._count()
        self.sc.search()

    @precondition(lambda self: self.s is not None and bool(self.s.runs))
    @rule(data=st.data(), decisions=st.lists(st.booleans(), max_size=8))
    def gp_review(self, data: st.DataObject, decisions: list[bool]) -> None:
        self._count()
        run_id = data.draw(st.sampled_from(self.sc.runs), label="run")
        self.sc.review(run_id, decisions)

    @precondition(lambda self: self.s is not None and bool(self.s.model.approvals))
    @rule(data=st.data(), days=st.integers(0, 20))
    def letters(self, data: st.DataObject, days: int) -> None:
        self._count()
        self.sc.advance(days)
        runs = sorted({run for run, _ in self.sc.model.approvals})
        self.sc.write(data.draw(st.sampled_from(runs), label="run"))

    @precondition(lambda self: self.s is not None and bool(self.s.model.loaded))
    @rule(decisions=st.lists(st.booleans(), max_size=8), days=st.integers(0, 20))
    def search_review_and_write(self, decisions: list[bool], days: int) -> None:
        """The usual round: a search, the GP's review of it, then letters (perhaps days later)."""
        self._count()
        run_id = self.sc.search()
        if run_id is None:
            return
        self.sc.review(run_id, decisions)
        self.sc.advance(days)
        self.sc.write(run_id)

    @precondition(lambda self: self.s is not None and bool(self.s.invitations))
    @rule(
        pick=st.integers(0, 5),
        reply=st.sampled_from(["interested", "not_interested", "do_not_contact", "now_in_work"]),
    )
    def reply(self, pick: int, reply: str) -> None:
        self._count()
        self.sc.reply(pick, reply)

    @precondition(lambda self: self.s is not None and bool(self.s.model.loaded))
    @rule(data=st.data())
    def do_not_contact_elsewhere(self, data: st.DataObject) -> None:
        self._count()
        who = self._person(data, alive_registered=False)
        if who is not None:
            self.sc.do_not_contact_elsewhere(who)

    @invariant()
    def nobody_else_gets_a_letter(self) -> None:
        if self.s is not None:
            self.sc.check()


def _run_machine(engine: Engine, folder: Path, name: str) -> None:
    STATS.clear()
    PersonSafety.engine = engine
    PersonSafety.folder = folder
    started = time.monotonic()
    try:
        chosen = settings(settings.get_profile(PROFILE))
        if EXAMPLES:
            chosen = settings(chosen, max_examples=int(EXAMPLES))
        if SURVEY:  # no shrinking: the survey lists what it met
            chosen = settings(chosen, phases=[Phase.explicit, Phase.generate])
        PersonSafety.TestCase.settings = chosen
        PersonSafety.TestCase("runTest").runTest()
    finally:
        elapsed = time.monotonic() - started
        print(
            f"\nperson-safety [{name}, profile {PROFILE}]: {STATS.get('examples', 0)} histories, "
            f"{STATS.get('steps', 0)} steps, {elapsed:.1f} s"
        )


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = fresh_engine(f"sqlite:///{tmp_path / 'safety.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_engine() -> Iterator[Engine]:
    with postgres_schema_url("ps") as url:
        engine = fresh_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def test_no_letter_reaches_anyone_else_sqlite(sqlite_engine: Engine, tmp_path: Path) -> None:
    _run_machine(sqlite_engine, tmp_path, "sqlite")


@pytest.mark.postgres
def test_no_letter_reaches_anyone_else_postgresql(postgres_engine: Engine, tmp_path: Path) -> None:
    _run_machine(postgres_engine, tmp_path, "postgresql")


# --- liveness: the property cannot pass by writing nothing ---------------------------------------


def test_clean_history_writes_to_the_eligible_approved_people(sqlite_engine: Engine, tmp_path: Path) -> None:
    """Two practices, clean extracts: letters go out to everyone the GP approved, and to nobody
    else."""
    sc = Scenario(sqlite_engine, tmp_path / "clean", practices=2)
    a, b = PRACTICES[0][0], PRACTICES[1][0]
    people = [sc.join(a, age=30), sc.join(a, age=45), sc.join(b, age=50), sc.join(b, age=38)]
    sc.advance(20)
    plain = Options()
    assert sc.load(a, sc.world.today, plain, "extract").startswith("loaded")
    assert sc.load(b, sc.world.today, plain, "extract").startswith("loaded")
    run_id = sc.search()
    assert run_id is not None
    rows = sc.candidates(run_id)
    assert len(rows) == 4
    refused = sc.world.people[people[1]].nhs
    sc.review(run_id, [nhs != refused for _, nhs, _ in rows])
    written = sc.write(run_id)
    sc.check()
    assert written == 3
    with sqlite_engine.connect() as conn:
        numbers = set(conn.execute(select(Invitation.nhs_number)).scalars())
    assert numbers == {sc.world.people[i].nhs for i in (people[0], people[2], people[3])}
    # A second letters run writes to nobody new.
    assert sc.write(run_id) == 0
    sc.check()
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM invitation")).scalar() == 3


# --- named histories: one per issue-14 case the machine can reach, as plain reproductions ---------


def _round(sc: Scenario) -> int:
    """Search, the GP approves every candidate, letters; the model checks every letter."""
    run_id = sc.search()
    assert run_id is not None
    sc.review(run_id, [])
    written = sc.write(run_id)
    sc.check()
    return written


def _start(engine: Engine, folder: Path, homes: list[int]) -> tuple[Scenario, list[int]]:
    sc = Scenario(engine, folder, practices=2)
    people = [sc.join(PRACTICES[h][0], age=30 + 5 * i) for i, h in enumerate(homes)]
    sc.advance(5)
    for ods, _ in PRACTICES[:2]:
        sc.load(ods, sc.world.today, Options(), "first extract")
    sc.advance(5)
    return sc, people


A, B = PRACTICES[0][0], PRACTICES[1][0]


def test_history_case1_snomed_type1_dissent_is_respected(sqlite_engine: Engine, tmp_path: Path) -> None:
    sc, (p0, p1) = _start(sqlite_engine, tmp_path / "h", [0, 0])
    sc.world.add_event(sc.world.people[p0], "dissent")
    sc.advance(1)
    sc.load(A, sc.world.today, Options(), "newer extract")
    assert _round(sc) == 1


def test_history_case2_dissent_without_a_date_holds_the_person_back(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    sc, (p0, _) = _start(sqlite_engine, tmp_path / "h", [0, 0])
    sc.world.add_event(sc.world.people[p0], "dissent", style="none")
    sc.advance(1)
    sc.load(A, sc.world.today, Options(), "newer extract")
    _round(sc)


def test_history_case3_partial_extract_keeps_earlier_opt_outs(sqlite_engine: Engine, tmp_path: Path) -> None:
    sc, (p0, _) = _start(sqlite_engine, tmp_path / "h", [0, 0])
    sc.world.add_event(sc.world.people[p0], "dissent")
    sc.advance(1)
    sc.load(A, sc.world.today, Options(), "newer extract")
    sc.advance(1)
    sc.load(A, sc.world.today, Options(leave_out="Observation", manifest_lists_missing=False), "partial")
    _round(sc)


def test_history_case4_another_practices_organization_changes_nothing_there(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    sc, _ = _start(sqlite_engine, tmp_path / "h", [0, 1])
    with sqlite_engine.connect() as conn:
        before = conn.execute(
            text(
                "SELECT count(*) FROM clinical_event e JOIN practice p ON p.id = e.practice_id "
                "WHERE p.ods_code = :a"
            ),
            {"a": A},
        ).scalar()
        ended_before = conn.execute(
            text("SELECT count(*) FROM patient WHERE registration_end IS NOT NULL")
        ).scalar()
    sc.advance(1)
    sc.load(B, sc.world.today, Options(other_org=A), "newer extract carrying A's Organization")
    with sqlite_engine.connect() as conn:
        after = conn.execute(
            text(
                "SELECT count(*) FROM clinical_event e JOIN practice p ON p.id = e.practice_id "
                "WHERE p.ods_code = :a"
            ),
            {"a": A},
        ).scalar()
        ended_after = conn.execute(
            text("SELECT count(*) FROM patient WHERE registration_end IS NOT NULL")
        ).scalar()
    assert (after, ended_after) == (before, ended_before), describe(sc.history)
    assert _round(sc) == 2


def test_history_case5_death_on_a_quarantined_duplicate_applies(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    sc, (p0, _) = _start(sqlite_engine, tmp_path / "h", [0, 0])
    person = sc.world.people[p0]
    sc.world.add_duplicate(person)
    sc.advance(1)
    person.death, person.death_style = sc.world.today, "on_duplicate"
    sc.advance(1)
    sc.load(A, sc.world.today, Options(), "newer extract")
    _round(sc)


def test_history_case6_older_extract_does_not_bring_the_dead_back(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    sc, (p0, _) = _start(sqlite_engine, tmp_path / "h", [0, 0])
    sc.join(A, age=33)  # so the older extract differs from the first one
    before_death = sc.world.today
    sc.advance(5)
    person = sc.world.people[p0]
    person.death, person.death_style = sc.world.today, "datetime"
    sc.advance(1)
    sc.load(A, sc.world.today, Options(), "newer extract")
    sc.load(A, before_death, Options(drop_left=True), "OLDER extract")
    _round(sc)


def test_history_case7_reused_id_does_not_inherit_the_approval(sqlite_engine: Engine, tmp_path: Path) -> None:
    sc, (p0, _) = _start(sqlite_engine, tmp_path / "h", [0, 0])
    run_id = sc.search()
    assert run_id is not None
    sc.review(run_id, [])  # the GP approves both people of A
    sc.advance(3)
    newcomer = sc.world.reuse_id(sc.world.people[p0], B)
    assert newcomer is not None
    sc.model.birth[newcomer.nhs] = newcomer.birth
    sc.advance(1)
    sc.load(A, sc.world.today, Options(), "newer extract")
    sc.load(B, sc.world.today, Options(), "newer extract")
    sc.write(run_id)
    sc.check()


def test_history_case8_old_practice_does_not_write_to_a_mover(sqlite_engine: Engine, tmp_path: Path) -> None:
    sc, (p0, _) = _start(sqlite_engine, tmp_path / "h", [0, 0])
    sc.world.move_practice(sc.world.people[p0], B, lag_days=400, gp2gp=True)
    sc.advance(1)
    sc.load(B, sc.world.today, Options(), "newer extract")
    _round(sc)


def test_history_case5_back_at_the_old_practice_the_practice_between_does_not_write(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    """Found by the long run: a person left B for A (B kept their record), then came back to B
    under a new record, which B's extract sent beside the old one (quarantined as a duplicate
    NHS number); A's registration then looked like the latest and A wrote to them."""
    sc, (p0, _) = _start(sqlite_engine, tmp_path / "h", [1, 1])
    person = sc.world.people[p0]
    sc.world.move_practice(person, A, lag_days=0, gp2gp=False)
    sc.advance(20)
    sc.load(A, sc.world.today, Options(), "newer extract")
    sc.world.move_practice(person, B, lag_days=10, gp2gp=True)
    sc.advance(20)
    sc.load(B, sc.world.today, Options(), "newer extract")
    _round(sc)


def test_history_case9_an_ended_home_address_is_never_used(sqlite_engine: Engine, tmp_path: Path) -> None:
    sc, (p0, _) = _start(sqlite_engine, tmp_path / "h", [0, 0])
    sc.world.move_house(sc.world.people[p0], known=True)
    sc.world.change_name(sc.world.people[p0])
    sc.advance(1)
    opt = Options(old_address_style="ended", current_address_use=False, address_order=0, name_order=1)
    sc.load(A, sc.world.today, opt, "newer extract")
    _round(sc)


def test_history_case10_partial_birth_date_never_lets_a_17_year_old_in(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    sc = Scenario(sqlite_engine, tmp_path / "h", practices=1)
    sc.join(A, age=40)
    sc.join(A, age=18, birth_format="year", shift=-100)  # 17 on the search date, written "YYYY"
    sc.advance(5)
    sc.load(A, sc.world.today, Options(), "first extract")
    _round(sc)


def test_history_case10_deceased_boolean_as_text_is_not_alive(sqlite_engine: Engine, tmp_path: Path) -> None:
    sc, (p0, _) = _start(sqlite_engine, tmp_path / "h", [0, 0])
    person = sc.world.people[p0]
    person.death, person.death_style = sc.world.today, "boolean_as_text"
    sc.advance(1)
    sc.load(A, sc.world.today, Options(), "newer extract")
    _round(sc)


def test_history_withdrawn_dissent_may_be_written_to(sqlite_engine: Engine, tmp_path: Path) -> None:
    """The model allows a person whose dissent was later withdrawn (the library may be stricter)."""
    sc, (p0, _) = _start(sqlite_engine, tmp_path / "h", [0, 0])
    sc.world.add_event(sc.world.people[p0], "dissent")
    sc.advance(3)
    sc.world.add_event(sc.world.people[p0], "withdrawn")
    sc.advance(1)
    sc.load(A, sc.world.today, Options(), "newer extract")
    assert not sc.model.opted_out(sc.world.people[p0].nhs)
    _round(sc)
