"""Issue 15's acceptance test: over ANY sequence of loads, searches, review sheet exports and
imports (in any order, sorted, edited, stale, with rows pasted from another practice's sheet),
letters (including runs killed part-way), replies and copies to a second database and back, the
GP's decisions are never lost or silently reversed, and so every letter reaches only a person the
GP approved under their latest decision; nobody holds two study numbers for one study; no file
with identifiers outlives a killed run past the next command; copies never lose invitations.

State: two practices sharing a small made-up population (tests/generative/extract_world.py), a
clock, a main database (SQLite or PostgreSQL, where extracts are loaded) and a second one (a
SQLite file, or DuckDB) that `copy_database` fills. The workflow runs where the last copy went
(the README's region flow). After every step the databases are compared with the plain-Python
model in decisions_world.py.

The hard paths (stale rows, rows whose Name column alone was sorted, rows of another practice,
whole sheets refused, letters runs really killed with letters printed and their folders cleaned,
copies and copies refused because history would be lost, nobody approved, records that cannot be
printed) are counted in STATS, printed in the summary line, and the CI profile must reach each of
them at least once on each database (a guard at the end of each test), so the machine cannot
silently stop exploring them.

Settings profiles (RECRUIT_HYPOTHESIS_PROFILE): "decisions" (default: small, repeatable, no
shrinking, for CI) and "decisions-long" (by hand; shrinks). RECRUIT_DECISIONS_EXAMPLES=N runs N
histories (the guard then applies only if N is at least the CI profile's count);
RECRUIT_DECISIONS_VERBOSE=1 prints each history (with -s).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import Engine, select

from recruit.dbcopy import HistoryWouldBeLost, copy_database
from recruit.errors import RecruitError
from recruit.letters.batch import NobodyApproved, write_letters
from recruit.letters.select import COULD_NOT_PRINT
from recruit.letters.study import load_study_settings, store_study
from recruit.load import load_extract
from recruit.query.run import run_search
from recruit.replies import import_replies
from recruit.review import ReviewSheetError, export_review, import_review
from recruit.tables import DECISION, INVITATION, PATIENT, PRACTICE, RESULT, STUDY_NUMBER
from recruit.work_folders import clean_leftovers
from tests.conftest import postgres_schema_url
from tests.generative import decisions_world as dw
from tests.generative.conftest import clear_database
from tests.generative.extract_world import (
    PRACTICES,
    Options,
    World,
    describe,
    practice_snapshot,
    write_extract,
)
from tests.search_helpers import duckdb_available, fresh_engine

ROOT = Path(__file__).resolve().parents[2]
RULES = Path(__file__).resolve().parent / "person_safety" / "rules.yaml"
STUDY_FILE = ROOT / "rules" / "studies" / "instep.yaml"
SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

# The CI profile does not shrink: a failing history is printed whole, in words (each step loads
# extracts, writes workbooks or prints letters, so shrinking takes minutes).
settings.register_profile(
    "decisions",
    max_examples=15,
    stateful_step_count=12,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=SUPPRESS,
    print_blob=True,
)
settings.register_profile(
    "decisions-long",
    max_examples=300,
    stateful_step_count=30,
    deadline=None,
    derandomize=False,
    suppress_health_check=SUPPRESS,
    print_blob=True,
)
PROFILE = os.environ.get("RECRUIT_HYPOTHESIS_PROFILE", "decisions")
if PROFILE not in ("decisions", "decisions-long"):
    PROFILE = "decisions"
# RECRUIT_DECISIONS_EXAMPLES=N: N histories of the chosen profile.
EXAMPLES = os.environ.get("RECRUIT_DECISIONS_EXAMPLES")
# RECRUIT_DECISIONS_VERBOSE=1 prints every history (with -s), to see what the machine explores.
VERBOSE = os.environ.get("RECRUIT_DECISIONS_VERBOSE") == "1"
STATS: dict[str, Any] = {}
PARTIAL = re.compile(r"^\..*\.partial-")
NAMES = ("main", "copy")

pytestmark = pytest.mark.usefixtures("templates_checked_once")


# The hard paths the CI profile must reach on each database (the guard at the end of each test).
PATHS = (
    "stale refusals",
    "identity refusals (name-only sort)",
    "other-practice refusals",
    "whole-sheet refusals",
    "killed letters runs",
    "leftover folders cleaned",
    "copies",
    "copies refused (HistoryWouldBeLost)",
    "NobodyApproved",
    "could-not-print",
)


def count(path: str, n: int = 1) -> None:
    STATS[path] = STATS.get(path, 0) + n


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


class Scenario:
    """One history over two databases, with the model; every step is logged in words."""

    def __init__(self, main: Engine, second: Engine, folder: Path) -> None:
        self.engines = {"main": main, "copy": second}
        self.folder = folder
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for engine in self.engines.values():
            clear_database(engine)
        with main.begin() as conn:
            self.study_id = store_study(conn, load_study_settings(STUDY_FILE))
        self.world = World(list(PRACTICES[:2]))
        self.active = "main"
        self.states = {name: dw.DbState() for name in NAMES}
        self.invitations: dict[str, set[tuple[str, str]]] = {name: set() for name in NAMES}
        self.ever_invited: set[tuple[str, str]] = set()  # (NHS number, study number), any database
        self.unprintable: set[str] = set()  # NHS numbers whose address no letter can print
        self.sheets: list[dw.SheetInHand] = []
        self.identities: dict[int, dict[str, dw.Shown]] = {}  # run label -> key -> as shown
        self.history: list[str] = []
        self.violations: list[str] = []
        self.seq = 0
        self.runs = 0
        self.extracts = 0
        self.letter_runs = 0
        self.just_killed = False

    # --- bookkeeping ---------------------------------------------------------------------------

    def log(self, step: str) -> None:
        self.history.append(f"[{self.world.today}] {step}")

    def fail(self, what: str) -> None:
        self.violations.append(what)

    @property
    def engine(self) -> Engine:
        return self.engines[self.active]

    @property
    def state(self) -> dw.DbState:
        return self.states[self.active]

    def tick(self) -> int:
        self.seq += 1
        return self.seq

    def command(self) -> None:
        """What every recruit command does first: delete the folders a killed command left."""
        STATS["steps"] = STATS.get("steps", 0) + 1
        for engine in self.engines.values():
            count("leftover folders cleaned", clean_leftovers(engine))
        self.just_killed = False

    # --- the world and loads ---------------------------------------------------------------------

    def join(self, practice: str, age: int, odd: str | None = None) -> None:
        """A new person with chronic pain; `odd`: their address is 1,500 characters long ("long")
        or holds a control character ("control"), so no letter can print it."""
        person = self.world.new_person(practice, age_years=age)
        self.world.add_event(person, "pain")
        self.world.add_event(person, "med")
        said = ""
        if odd is not None:
            first = person.addresses[0]
            line = ("Flat 4, " + "The Long Terrace " * 100)[:1500] if odd == "long" else "12 Bell\x07 Street"
            person.addresses[0] = dataclasses.replace(first, lines=(line, *first.lines[1:]))
            self.unprintable.add(person.nhs)
            said = f", address {'of 1,500 characters' if odd == 'long' else 'with a control character'}"
        self.log(f"person {person.index} ({person.nhs}) registers at {practice}, chronic pain coded{said}")

    def load(self, practice: str) -> None:
        """A newer extract of the practice, into the main database (recruit loads only there)."""
        self.world.today += dt.timedelta(days=1)
        files, _ = practice_snapshot(self.world, practice, self.world.today, Options())
        self.extracts += 1
        folder = write_extract(self.folder / f"extract-{self.extracts}", files, self.world.today, Options())
        try:
            summary = load_extract(self.engines["main"], [folder], workers=1)
            outcome = f"loaded {summary.loaded}"
        except RecruitError as exc:
            outcome = f"refused: {one_line(exc)}"
            self.fail(f"a clean newer extract of {practice} was refused: {one_line(exc)}")
        self.log(f"load a newer extract of {practice} into main: {outcome}")

    # --- search and review -----------------------------------------------------------------------

    def practice_of(self) -> dict[int, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(PATIENT.c.id, PRACTICE.c.ods_code).join(
                    PRACTICE, PRACTICE.c.id == PATIENT.c.practice_id
                )
            ).all()
        return {r[0]: r[1] for r in rows}

    def search(self) -> int | None:
        try:
            run_id = run_search(self.engine, RULES, index_date=self.world.today)
        except RecruitError as exc:
            self.log(f"search on {self.active} refused: {one_line(exc)}")
            return None
        self.runs += 1
        label = self.runs
        with self.engine.connect() as conn:
            candidates = set(
                conn.execute(
                    select(RESULT.c.patient_id).where(
                        RESULT.c.run_id == run_id, RESULT.c.outcome == "candidate"
                    )
                ).scalars()
            )
        self.state.runs[run_id] = label
        self.state.candidates[label] = candidates
        self.identities[label] = {}
        self.log(f"search on {self.active}: run {run_id} (label {label}), {len(candidates)} candidate(s)")
        return run_id

    def export(self, run_id: int, practice: str | None) -> dw.SheetInHand | None:
        seq = self.tick()
        label = len(self.sheets) + 1
        out = self.folder / f"review-{label}.xlsx"
        try:
            summary = export_review(self.engine, run_id, out, today=self.world.today, practice=practice)
        except RecruitError as exc:
            self.log(f"export of run {run_id} ({practice}) refused: {one_line(exc)}")
            return None
        run_label = self.state.runs[run_id]
        shown = dw.shown_rows(Path(summary.path))
        self.identities[run_label].update(shown)
        sheet = dw.SheetInHand(
            label, self.active, run_id, run_label, practice, Path(summary.path), seq, shown
        )
        wrong = {k: s.practice for k, s in shown.items() if s.practice != practice}
        if wrong:
            self.fail(f"{sheet.describe()} shows rows of another practice: {sorted(wrong)}")
        self.sheets.append(sheet)
        self.state.sheets.add(label)
        self.log(f"export {sheet.describe()}")
        return sheet

    def importable(self) -> list[dw.SheetInHand]:
        """Sheets whose run and export the working database holds."""
        return [
            s
            for s in self.sheets
            if self.state.runs.get(s.run_id) == s.run_label and s.label in self.state.sheets
        ]

    def invited_patients(self, run_label: int) -> set[int]:
        """Candidates of the run whose NHS number holds an invitation to the study (here)."""
        with self.engine.connect() as conn:
            numbers = set(conn.execute(select(INVITATION.c.nhs_number)).scalars())
            nhs_of = dict(conn.execute(select(PATIENT.c.id, PATIENT.c.nhs_number)).all())
        return {pid for pid in self.state.candidates.get(run_label, set()) if nhs_of.get(pid) in numbers}

    def import_sheet(self, sheet: dw.SheetInHand, reviewer: str) -> None:
        seq = self.tick()
        rows = dw.read_rows(sheet.path)
        identities = self.identities[sheet.run_label]
        pred = dw.predict(
            sheet, rows, self.state, identities, self.practice_of(), self.invited_patients(sheet.run_label)
        )
        what = f"import {sheet.describe()} by {reviewer} into {self.active} (model: {pred.words()})"
        try:
            summary = import_review(self.engine, sheet.path, reviewer)
        except ReviewSheetError as exc:
            count("whole-sheet refusals")
            self.log(f"{what}: whole sheet refused: {one_line(exc)}")
            if not (pred.whole or pred.final):
                self.fail(
                    f"{sheet.describe()} was refused whole, but no row was tampered with: {one_line(exc)}"
                )
            self.check_words(str(exc), rows)
            return
        except RecruitError as exc:
            self.log(f"{what}: refused: {one_line(exc)}")
            self.fail(f"{sheet.describe()} was refused: {one_line(exc)}")
            return
        if pred.whole:
            self.fail(f"{sheet.describe()} was imported although {pred.whole} (a copied row)")
        refused = {int(n): why for n, why in summary.refused_rows}
        for why in refused.values():
            self.check_words(why, rows)
        for number, why in refused.items():
            # The library checks the practice first: a pasted row of another practice is that.
            kind = "practice" if "this sheet's practice" in why else pred.refused.get(number)
            if kind == "identity":
                count(f"identity refusals ({'name-only sort' if 'name_only' in sheet.arranged else 'other'})")
            elif kind is not None:
                count(f"{'other-practice' if kind == 'practice' else kind} refusals")
        blank = {r.number for r in rows if r.value is None}
        for number, why in pred.refused.items():
            if number not in refused:
                self.fail(
                    f"{sheet.describe()} row {number} should have been refused ({why}) but was not listed"
                )
        for number in set(refused) - set(pred.refused) - set(pred.final) - blank:
            self.fail(
                f"{sheet.describe()} row {number} was refused ({refused[number]}) but should be applied"
            )
        for pid, (number, value) in pred.apply.items():
            if number not in refused:
                self.state.decisions[(sheet.run_label, pid)] = dw.Decision(value, seq, sheet.label)
        self.log(f"{what}: {summary.recorded} new, {summary.changed} changed, refused rows {sorted(refused)}")

    def check_words(self, message: str, rows: list[dw.SheetRow]) -> None:
        """Import messages go to practice staff: row numbers only, never who."""
        digits = re.sub(r"\s", "", message)
        for r in rows:
            nhs = re.sub(r"\D", "", str(r.nhs or ""))
            if (nhs and nhs in digits) or (r.name and str(r.name) in message):
                self.fail(f"an import message names a patient: {message[:200]!r}")
                return

    def edit(
        self,
        sheet: dw.SheetInHand,
        picks: list[tuple[int, str]],
        arrangement: str,
        permutation: list[int],
        paste: tuple[dw.SheetInHand, int, str] | None,
    ) -> None:
        pasted = None
        if paste is not None:
            pasted = dw.first_row_values(paste[0].path, paste[1])
        said = dw.edit_sheet(
            sheet.path, picks, arrangement, permutation, pasted, paste[2] if paste else "blank"
        )
        sheet.edits += 1
        sheet.arranged.append(arrangement)
        self.log(f"a GP edits {sheet.describe()}: {'; '.join(said) or 'nothing'}")

    # --- letters ---------------------------------------------------------------------------------

    def db_invitations(self, name: str) -> dict[str, tuple[str, int]]:
        """Study number -> (NHS number, patient id) of the database's invitations to the study."""
        with self.engines[name].connect() as conn:
            rows = conn.execute(
                select(INVITATION.c.study_number, INVITATION.c.nhs_number, INVITATION.c.patient_id).where(
                    INVITATION.c.study_id == self.study_id
                )
            ).all()
        return {r[0]: (r[1], r[2]) for r in rows}

    def letters(self, run_id: int, kill: bool) -> None:
        self.letter_runs += 1
        out = self.folder / f"letters-{self.letter_runs}"
        run_label = self.state.runs[run_id]
        before = self.db_invitations(self.active)
        invited_before = {nhs for nhs, _ in self.ever_invited} | {nhs for nhs, _ in before.values()}
        approved = {
            pid
            for (label, pid), d in self.state.decisions.items()
            if label == run_label and d.value[0] == "invite" and pid in self.state.candidates[label]
        }
        # The person's latest decision decides, whichever search it was made for: a later "do not
        # invite" on another search's sheet (for any record with their NHS number) stops the letter.
        nhs_now = self._nhs_of()
        refused_later = {
            pid
            for pid in approved
            for (label, other), d in self.state.decisions.items()
            if label != run_label
            and d.value[0] != "invite"
            and nhs_now.get(other) == nhs_now.get(pid)
            and d.seq > self.state.decisions[(run_label, pid)].seq
        }
        if refused_later:
            count("refused later on another search", len(refused_later))
        how = "killed part-way" if kill else "run"
        outcome = ""
        could_not: dict[str, int] | None = None
        if kill:
            outcome = self._killed(run_id, out)
        else:
            try:
                summary = write_letters(
                    self.engine, run_id, out, study_file=STUDY_FILE, letter_date=self.world.today, workers=1
                )
                outcome = f"{summary.letters_written} written, refused {summary.refusals}"
                could_not = summary.could_not_print
                if not approved:
                    self.fail(f"letters for run {run_id} with nobody approved did not say so")
            except NobodyApproved as exc:
                count("NobodyApproved")
                outcome = f"refused: {one_line(exc)}"
                if approved:
                    self.fail(
                        f"letters for run {run_id} said nobody is approved; the model has {sorted(approved)}"
                    )
            except RecruitError as exc:
                outcome = f"refused: {one_line(exc)}"
                self.fail(f"letters for run {run_id} were refused: {one_line(exc)}")
        after = self.db_invitations(self.active)
        new = {n: v for n, v in after.items() if n not in before}
        nhs_of = {pid: nhs for pid, nhs in self._nhs_of().items()}
        for nhs, pid in sorted(new.values()):
            d = self.state.decisions.get((run_label, pid))
            if pid not in self.state.candidates[run_label]:
                self.fail(
                    f"letters run {self.letter_runs} wrote to patient {pid}, not a candidate of run {run_id}"
                )
            elif pid in refused_later:
                self.fail(
                    f"letters run {self.letter_runs} wrote to patient {pid} ({nhs}), whose GP later said "
                    "do not invite on another search's sheet"
                )
            elif d is None or d.value[0] != "invite":
                latest = "no decision" if d is None else f"latest decision {d.value}"
                self.fail(f"letters run {self.letter_runs} wrote to patient {pid} ({nhs}): {latest}")
            if nhs in invited_before:
                self.fail(
                    f"letters run {self.letter_runs} wrote again to {nhs}, already invited to the study"
                )
        written = {pid for _, pid in new.values()}
        if could_not is not None:
            due = {pid for pid in approved - refused_later if nhs_of.get(pid) not in invited_before}
            odd = {pid for pid in due if nhs_of.get(pid) in self.unprintable}
            if due - odd != written:
                self.fail(
                    f"letters run {self.letter_runs} for run {run_id} wrote to patients {sorted(written)}; "
                    f"approved, not yet invited and printable: {sorted(due - odd)}"
                )
            count("could-not-print", sum(could_not.values()))
            if sum(could_not.values()) != len(odd) or not set(could_not) <= set(COULD_NOT_PRINT):
                self.fail(
                    f"letters run {self.letter_runs} listed {could_not} as could not print; the model has "
                    f"{len(odd)} unprintable record(s) due a letter"
                )
        self.invitations[self.active] |= {(nhs, n) for n, (nhs, _) in after.items()}
        self.ever_invited |= {(nhs, n) for n, (nhs, _) in new.items()}
        self.log(f"letters for run {run_id} on {self.active} {how}: {outcome}; new to {sorted(written)}")

    def _nhs_of(self) -> dict[int, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(PATIENT.c.id, PATIENT.c.nhs_number)).all())

    def _killed(self, run_id: int, out: Path) -> str:
        """write_letters in a forked child that kills itself (SIGKILL) once the first chunk of
        letters is printed, before anything is committed."""
        engine = self.engine
        if engine.dialect.name == "duckdb":
            engine.dispose()  # one process at a time holds a DuckDB file: the child opens it anew
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 3
            os.close(read_end)
            try:
                engine.dispose(close=False)

                def die(_: int) -> None:
                    os.kill(os.getpid(), signal.SIGKILL)

                write_letters(
                    engine,
                    run_id,
                    out,
                    study_file=STUDY_FILE,
                    letter_date=self.world.today,
                    workers=1,
                    progress=die,
                )
                code = 0
            except BaseException as exc:  # said to the parent (a plain message, or what broke)
                code = 2
                os.write(write_end, f"{type(exc).__name__}: {one_line(exc)}".encode())
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            said = pipe.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            self.just_killed = True
            printed = list(out.parent.glob(f".{out.name}.partial-*/letters/*.pdf"))
            if printed:
                count("killed letters runs")
            return f"killed after the first chunk ({len(printed)} letter file(s) left in its folder)"
        code = os.WEXITSTATUS(status)
        if code == 2 and not said.startswith("NobodyApproved"):
            self.fail(f"a letters run (to be killed) for run {run_id} failed: {said}")
        return f"finished before printing anything (exit {code}{': ' + said if said else ''})"

    def reply(self, pick: int, reply: str) -> None:
        with self.engine.connect() as conn:
            open_ = conn.execute(
                select(INVITATION.c.study_number)
                .where(INVITATION.c.study_id == self.study_id, INVITATION.c.reply.is_(None))
                .order_by(INVITATION.c.id)
            ).all()
        if not open_:
            return
        number = open_[pick % len(open_)][0]
        path = self.folder / f"replies-{self.tick()}.csv"
        path.write_text(f"study number,reply,date\n{number},{reply.replace('_', ' ')},{dt.date.today()}\n")
        try:
            import_replies(self.engine, path, today=dt.date.today())
            self.log(f"reply on {self.active}: {reply}")
        except RecruitError as exc:
            self.fail(f"a reply to a letter written was refused: {one_line(exc)}")

    # --- copies ----------------------------------------------------------------------------------

    def history_of(self, name: str) -> set[tuple[Any, ...]]:
        """The decisions, invitations and replies a database holds."""
        with self.engines[name].connect() as conn:
            decisions = conn.execute(
                select(DECISION.c.run_id, DECISION.c.patient_id, DECISION.c.decision, DECISION.c.reason_code)
            ).all()
            invitations = conn.execute(
                select(INVITATION.c.study_number, INVITATION.c.nhs_number, INVITATION.c.reply)
            ).all()
        return {("decision", *r) for r in decisions} | {("invitation", *r) for r in invitations}

    def copy(self, to: str, replace: bool) -> None:
        source = "copy" if to == "main" else "main"
        lost = self.history_of(to) - self.history_of(source)
        what = f"copy {source} -> {to}{' --replace' if replace else ''}"
        try:
            copy_database(self.engines[source], self.engines[to], replace=replace)
        except HistoryWouldBeLost:
            count("copies refused (HistoryWouldBeLost)")
            self.log(f"{what}: refused (history would be lost)")
            if not replace:
                self.fail(f"{what} (without --replace) was refused as deleting history")
            return
        except RecruitError as exc:  # e.g. the target holds records and this is not --replace
            self.log(f"{what}: refused ({one_line(exc)})")
            return
        if lost:
            self.fail(f"{what} deleted history the source lacks: {sorted(map(str, lost))[:5]}")
        self.states[to] = self.states[source].copy()
        self.invitations[to] = set(self.invitations[source])
        self.active = to
        count("copies")
        self.log(f"{what}: done; the work goes on in {to}")

    # --- checks ----------------------------------------------------------------------------------

    def check(self) -> None:
        self._check_decisions()
        self._check_numbers()
        self._check_leftovers()
        if self.violations:
            raise AssertionError(
                "Decisions, letters or copies went wrong:\n"
                + "\n".join(f"- {v}" for v in self.violations)
                + f"\nHistory:\n{describe(self.history)}"
            )

    def _check_decisions(self) -> None:
        for name in NAMES:
            state = self.states[name]
            with self.engines[name].connect() as conn:
                rows = conn.execute(
                    select(
                        DECISION.c.run_id,
                        DECISION.c.patient_id,
                        DECISION.c.decision,
                        DECISION.c.reason_code,
                        DECISION.c.reason_text,
                    )
                ).all()
            held = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
            ids = {label: run_id for run_id, label in state.runs.items()}
            want = {(ids[label], pid): d.value for (label, pid), d in state.decisions.items()}
            if held != want:
                wrong = sorted(set(held.items()) ^ set(want.items()))
                self.fail(
                    f"{name} holds decisions {sorted(held.items())}; the model says {sorted(want.items())} "
                    f"(differing: {wrong})"
                )
            invited = {(r[0], n) for n, r in self.db_invitations(name).items()}
            if invited != self.invitations[name]:
                self.fail(f"{name}'s invitations changed outside a letters run or a copy")
        union = set().union(*(set((r[0], n) for n, r in self.db_invitations(x).items()) for x in NAMES))
        if not self.ever_invited <= union:
            self.fail(f"invitations were lost from every database: {sorted(self.ever_invited - union)}")

    def _check_numbers(self) -> None:
        """One study number per person per study: invitations, study_number and letter files."""
        numbers: dict[str, set[str]] = {}
        owner: dict[str, str] = {}
        for name in NAMES:
            with self.engines[name].connect() as conn:
                kept = conn.execute(
                    select(STUDY_NUMBER.c.nhs_number, STUDY_NUMBER.c.study_number).where(
                        STUDY_NUMBER.c.study_id == self.study_id
                    )
                ).all()
            for nhs, number in [*((r[0], n) for n, r in self.db_invitations(name).items()), *kept]:
                numbers.setdefault(nhs, set()).add(number)
                owner[number] = nhs
        for pdf in self.folder.glob("*/letters/*.pdf"):
            number = pdf.stem
            if number not in owner:
                if not (self.just_killed and PARTIAL.match(pdf.parent.parent.name)):
                    self.fail(
                        f"a letter file {pdf.parent.parent.name}/letters/{pdf.name} has a study number "
                        "no database knows"
                    )
                continue
        twice = {nhs: sorted(n) for nhs, n in numbers.items() if len(n) > 1}
        if twice:
            self.fail(f"people hold two study numbers for the study: {twice}")

    def _check_leftovers(self) -> None:
        if not self.just_killed:
            left = [p.name for p in self.folder.iterdir() if PARTIAL.match(p.name)]
            if left:
                self.fail(f"folders of a killed letters run are still there after the next command: {left}")
        readable = [
            f"{p.relative_to(self.folder.parent)} ({oct(p.stat().st_mode & 0o777)})"
            for p in self.identifiable()
            if p.stat().st_mode & 0o077
        ]
        if readable:
            self.fail(f"files or folders with identifiers are readable by others: {readable[:5]}")

    def identifiable(self) -> Iterator[Path]:
        """What recruit wrote that holds identifiers: the database files, review workbooks, letters
        folders (finished or being written) and everything in them. (Extracts and reply files are
        written by this test.)"""
        for p in self.folder.parent.iterdir():
            if p.is_file() and re.search(r"\.(db|duckdb)(\.wal|-journal|-wal|-shm)?$", p.name):
                yield p
        for p in self.folder.iterdir():
            if p.name.startswith("review-") or p.name.startswith("letters-") or PARTIAL.match(p.name):
                yield p
                if p.is_dir():
                    yield from p.rglob("*")


# --- the state machine ------------------------------------------------------------------------------

PICKS = st.lists(
    st.tuples(st.integers(0, 20), st.sampled_from(["invite", "invite", "safeguarding", "other", "blank"])),
    min_size=1,
    max_size=4,
)
# A sort that moves every row of a sheet of up to 6 rows.
REVERSED = [5, 4, 3, 2, 1, 0]
# Whose address no letter can print, now and then (case 4).
ODD = st.sampled_from([None, None, None, "long", "control"])
# At the start: mostly one such person (drawn first, as hypothesis prefers the first value).
FIRST_ODD = st.sampled_from(["long", None, "control", None])


class Decisions(RuleBasedStateMachine):
    """Loads, searches, sheets, letters, replies and copies, checked after every step."""

    main: Engine
    second: Engine
    folder: Path

    def __init__(self) -> None:
        super().__init__()
        self.s: Scenario | None = None

    @property
    def sc(self) -> Scenario:
        assert self.s is not None
        return self.s

    @initialize(homes=st.lists(st.integers(0, 1), min_size=4, max_size=6), odd=FIRST_ODD)
    def start(self, homes: list[int], odd: str | None) -> None:
        STATS["examples"] = STATS.get("examples", 0) + 1
        self.s = Scenario(self.main, self.second, self.folder / "history")
        for i, home in enumerate(homes):
            self.sc.join(PRACTICES[home][0], age=30 + 4 * i, odd=odd if i == 1 else None)
        self.sc.world.today += dt.timedelta(days=5)
        for ods, _ in PRACTICES[:2]:
            self.sc.load(ods)

    def _practice(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from([ods for ods, _ in PRACTICES[:2]]), label="practice")

    # --- records -------------------------------------------------------------------------------

    @rule(data=st.data(), join=st.booleans(), age=st.integers(20, 60), odd=ODD)
    def newer_extract(self, data: st.DataObject, join: bool, age: int, odd: str | None) -> None:
        self.sc.command()
        practice = self._practice(data)
        if join and len(self.sc.world.people) < 8:
            self.sc.join(practice, age, odd)
        self.sc.load(practice)

    # --- search and review ---------------------------------------------------------------------

    @rule(export=st.booleans())
    def search(self, export: bool) -> None:
        """A search on the working database; often followed at once by a sheet per practice."""
        self.sc.command()
        run_id = self.sc.search()
        if run_id is not None and export:
            for ods, _ in PRACTICES[:2]:
                self.sc.export(run_id, ods)

    @rule(
        picks=PICKS,
        # The first of each list is drawn most (hypothesis prefers simple values): the hard paths.
        letters=st.sampled_from(["killed", "normal", "before review", "none", "killed", "normal"]),
        everyone=st.sampled_from([True, False, False]),
        arrangement=st.sampled_from(["name_only", "none", "rows", "none"]),
        paste=st.sampled_from(["other practice", "none", "same sheet", "none"]),
        paste_row=st.integers(0, 10),
    )
    def usual_round(
        self,
        picks: list[tuple[int, str]],
        letters: str,
        everyone: bool,
        arrangement: str,
        paste: str,
        paste_row: int,
    ) -> None:
        """The usual month: a search, a sheet per practice, each GP's decisions imported, and
        perhaps the letters at once (run normally, or killed part-way), or letters asked for
        before any review (nobody is approved yet). The first practice's GP may sort the sheet
        (only the Name column, or whole rows); the second's may paste in a row of the first's
        sheet, or copy a row within the sheet. `everyone`: each GP first marks every row Invite."""
        self.sc.command()
        if everyone:
            picks = [(i, "invite") for i in range(8)] + picks
        run_id = self.sc.search()
        if run_id is None:
            return
        if letters == "before review":
            self.sc.letters(run_id, False)
        first: dw.SheetInHand | None = None
        for ods, _ in PRACTICES[:2]:
            sheet = self.sc.export(run_id, ods)
            if sheet is None:
                continue
            if first is None:
                self.sc.edit(sheet, picks, arrangement, REVERSED, None)
                first = sheet
            else:
                source = {"other practice": first, "same sheet": sheet, "none": None}[paste]
                pasted = (source, paste_row, "invite") if source is not None and source.shown else None
                self.sc.edit(sheet, picks, "none", [], pasted)
            self.sc.import_sheet(sheet, "Dr A" if ods == PRACTICES[0][0] else "Dr B")
        if letters in ("normal", "killed"):
            self.sc.letters(run_id, letters == "killed")

    @precondition(lambda self: self.s is not None and bool(self.s.state.runs))
    @rule(
        data=st.data(),
        rows=st.lists(st.integers(0, 20), min_size=1, max_size=3),
        older=st.sampled_from(["safeguarding", "other", "invite"]),
    )
    def two_gps_two_sheets(self, data: st.DataObject, rows: list[int], older: str) -> None:
        """Two sheets of one practice exported one after the other, edited differently by two
        GPs; the newer is imported first, then the older (its differing rows are stale)."""
        self.sc.command()
        run_id = max(self.sc.state.runs, key=lambda r: self.sc.state.runs[r])
        practice = self._practice(data)
        first = self.sc.export(run_id, practice)
        second = self.sc.export(run_id, practice)
        if first is None or second is None:
            return
        newer = "invite" if older != "invite" else "safeguarding"
        self.sc.edit(first, [(r, older) for r in rows], "none", [], None)
        self.sc.edit(second, [(r, newer) for r in rows], "none", [], None)
        self.sc.import_sheet(second, "Dr B")
        self.sc.import_sheet(first, "Dr A")

    @precondition(lambda self: self.s is not None and bool(self.s.state.runs))
    @rule(data=st.data())
    def export_sheet(self, data: st.DataObject) -> None:
        self.sc.command()
        run_id = data.draw(st.sampled_from(sorted(self.sc.state.runs)), label="run")
        self.sc.export(run_id, self._practice(data))

    @precondition(lambda self: self.s is not None and bool(self.s.sheets))
    @rule(
        data=st.data(),
        picks=PICKS,
        arrangement=st.sampled_from(["none", "rows", "name_only", "name_only"]),
        permutation=st.permutations(range(6)),
        paste=st.sampled_from(["none", "none", "other practice", "other practice", "same sheet"]),
        paste_pick=st.sampled_from(["invite", "safeguarding"]),
        then_import=st.booleans(),
    )
    def gp_edits_sheet(
        self,
        data: st.DataObject,
        picks: list[tuple[int, str]],
        arrangement: str,
        permutation: list[int],
        paste: str,
        paste_pick: str,
        then_import: bool,
    ) -> None:
        """A GP edits a sheet in hand: decisions, perhaps the Name column sorted on its own or
        whole rows sorted, perhaps a row pasted from another practice's sheet or copied within
        the sheet."""
        self.sc.command()
        sheet = data.draw(st.sampled_from(self.sc.sheets[::-1]), label="sheet")  # mostly the newest
        source = None
        if paste != "none":
            others = [
                s
                for s in self.sc.sheets
                if s.run_label == sheet.run_label
                and s.shown
                and ((s.practice != sheet.practice) if paste == "other practice" else s is sheet)
            ]
            if others:
                other = data.draw(st.sampled_from(others), label="paste from")
                source = (other, data.draw(st.integers(0, 10), label="row"), paste_pick)
        self.sc.edit(sheet, picks, arrangement, list(permutation), source)
        if then_import and sheet in self.sc.importable():
            self.sc.import_sheet(sheet, data.draw(st.sampled_from(["Dr A", "Dr B"]), label="reviewer"))

    @precondition(lambda self: self.s is not None and bool(self.s.importable()))
    @rule(data=st.data(), reviewer=st.sampled_from(["Dr A", "Dr B"]))
    def import_sheet(self, data: st.DataObject, reviewer: str) -> None:
        """Any sheet in hand, in any order: older ones are stale."""
        self.sc.command()
        sheet = data.draw(st.sampled_from(self.sc.importable()[::-1]), label="sheet")  # mostly the newest
        self.sc.import_sheet(sheet, reviewer)

    # --- letters and replies -------------------------------------------------------------------

    @precondition(lambda self: self.s is not None and bool(self.s.state.runs))
    @rule(data=st.data(), kill=st.sampled_from([False, False, True]), days=st.integers(0, 10))
    def letters(self, data: st.DataObject, kill: bool, days: int) -> None:
        self.sc.command()
        self.sc.world.today += dt.timedelta(days=days)
        state = self.sc.state
        approved = sorted(
            r
            for r, label in state.runs.items()
            if any(lab == label and d.value[0] == "invite" for (lab, _), d in state.decisions.items())
        )
        # Mostly a run someone was approved in (so a killed run has letters to print).
        pool = approved if approved and data.draw(st.integers(0, 3), label="any run") else sorted(state.runs)
        run_id = data.draw(st.sampled_from(pool), label="run")
        self.sc.letters(run_id, kill)

    @precondition(lambda self: self.s is not None and bool(self.s.ever_invited))
    @rule(
        pick=st.integers(0, 5),
        reply=st.sampled_from(["interested", "not_interested", "do_not_contact", "now_in_work"]),
    )
    def reply(self, pick: int, reply: str) -> None:
        self.sc.command()
        self.sc.reply(pick, reply)

    # --- copies --------------------------------------------------------------------------------

    @rule(to=st.sampled_from(["copy", "copy", "main"]), replace=st.booleans())
    def copy(self, to: str, replace: bool) -> None:
        self.sc.command()
        self.sc.copy(to, replace)

    @rule(data=st.data(), picks=PICKS)
    def region_month(self, data: st.DataObject, picks: list[tuple[int, str]]) -> None:
        """The README's region flow (case 7): `db copy --replace` from the main database into the
        copy, a review round in the working database, then next month's extract into main and
        `db copy --replace` again, which must be refused when the copy holds decisions main
        lacks."""
        self.sc.command()
        self.sc.copy("copy", True)
        run_id = self.sc.search()
        if run_id is not None:
            for ods, _ in PRACTICES[:2]:
                sheet = self.sc.export(run_id, ods)
                if sheet is not None:
                    self.sc.edit(sheet, [(0, "invite"), *picks], "none", [], None)
                    self.sc.import_sheet(sheet, "Dr A")
        self.sc.load(self._practice(data))
        self.sc.copy("copy", True)

    @invariant()
    def never_wrong(self) -> None:
        if self.s is not None:
            self.sc.check()

    def teardown(self) -> None:
        """One more command after the last step: a run killed in it leaves nothing either."""
        if self.s is not None:
            if VERBOSE:
                print(f"\nHistory:\n{describe(self.s.history)}")
            if self.sc.just_killed:
                self.sc.command()
                self.sc.log("the next command")
                self.sc.check()


def _run_machine(main: Engine, second: Engine, folder: Path, name: str) -> None:
    STATS.clear()
    Decisions.main, Decisions.second, Decisions.folder = main, second, folder
    started = time.monotonic()
    chosen = settings(settings.get_profile(PROFILE))
    if EXAMPLES:
        chosen = settings(chosen, max_examples=int(EXAMPLES))
    try:
        Decisions.TestCase.settings = chosen
        Decisions.TestCase("runTest").runTest()
    finally:
        elapsed = time.monotonic() - started
        paths = ", ".join(f"{p} {STATS.get(p, 0)}" for p in PATHS)
        print(
            f"\ndecisions [{name}, profile {PROFILE}]: {STATS.get('examples', 0)} histories, "
            f"{STATS.get('steps', 0)} steps, {elapsed:.1f} s; {paths}; "
            f"identity refusals (other) {STATS.get('identity refusals (other)', 0)}"
        )
    # The guard: the CI profile must keep exploring every hard path (fewer histories than the
    # CI profile's, asked for by hand, are not held to it).
    if chosen.max_examples >= settings.get_profile("decisions").max_examples:
        missing = [p for p in PATHS if not STATS.get(p)]
        assert not missing, (
            f"the decisions machine no longer reaches {missing} on {name} "
            f"({STATS.get('examples', 0)} histories; counts: {paths}); re-weight its rules"
        )


@pytest.fixture
def sqlite_main(tmp_path: Path) -> Iterator[Engine]:
    engine = fresh_engine(f"sqlite:///{tmp_path / 'main.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_second(tmp_path: Path) -> Iterator[Engine]:
    engine = fresh_engine(f"sqlite:///{tmp_path / 'copy.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_main() -> Iterator[Engine]:
    with postgres_schema_url("dec") as url:
        engine = fresh_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def test_decisions_never_wrong_sqlite(sqlite_main: Engine, sqlite_second: Engine, tmp_path: Path) -> None:
    _run_machine(sqlite_main, sqlite_second, tmp_path, "sqlite")


@pytest.mark.postgres
def test_decisions_never_wrong_postgresql(
    postgres_main: Engine, sqlite_second: Engine, tmp_path: Path
) -> None:
    _run_machine(postgres_main, sqlite_second, tmp_path, "postgresql")


@pytest.mark.skipif(not duckdb_available(), reason="duckdb-engine is not installed")
def test_decisions_never_wrong_duckdb(sqlite_main: Engine, tmp_path: Path) -> None:
    """Copies into a DuckDB file and back; the workflow runs in DuckDB after a copy there."""
    second = fresh_engine(f"duckdb:///{tmp_path / 'region.duckdb'}")
    try:
        _run_machine(sqlite_main, second, tmp_path, "duckdb")
    finally:
        second.dispose()


# --- liveness: the machine's checks cannot pass by writing nothing -------------------------------


def test_decisions_round_writes_to_the_approved_and_no_one_else(
    sqlite_main: Engine, sqlite_second: Engine, tmp_path: Path
) -> None:
    """A clean round: the GP's Invite rows get letters, the Do not invite row does not, the model
    agrees with the database, and a copy carries every invitation."""
    sc = Scenario(sqlite_main, sqlite_second, tmp_path / "round")
    for i in range(3):
        sc.join(PRACTICES[0][0], 30 + i)
    sc.load(PRACTICES[0][0])
    run_id = sc.search()
    assert run_id is not None
    sheet = sc.export(run_id, PRACTICES[0][0])
    assert sheet is not None and len(sheet.shown) == 3
    sc.edit(sheet, [(0, "invite"), (1, "safeguarding"), (2, "invite")], "rows", [2, 1, 0], None)
    sc.import_sheet(sheet, "Dr A")
    sc.check()
    sc.letters(run_id, False)
    sc.check()
    assert len(sc.ever_invited) == 2, describe(sc.history)
    sc.copy("copy", False)
    sc.check()
    assert sc.active == "copy" and len(sc.invitations["copy"]) == 2
    letters = [p for p in sc.identifiable() if p.suffix == ".pdf"]
    assert letters and any(p.suffix == ".db" for p in sc.identifiable()), describe(sc.history)
    # The owner-only check bites: one letter made readable by others is a failure.
    letters[0].chmod(0o644)
    with pytest.raises(AssertionError, match="readable by others"):
        sc.check()
