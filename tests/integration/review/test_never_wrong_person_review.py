"""Issue 15, cases 1, 2, 3 and 8 (review workbooks): a GP's decision reaches only the person it was
made for, is never silently overridden by an older sheet, a GP sees only their own practice's
patients, and the workbook is readable by its owner only.

Sheets are edited with openpyxl as a GP would in Excel: one column sorted on its own, whole rows
sorted, rows pasted from another practice's sheet, a sheet re-imported after a newer one.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from sqlalchemy import delete, func, insert, select

import recruit.review as review
from recruit.cli_render import format_import_summary
from recruit.errors import RecruitError
from recruit.models import Invitation, ReviewDecision, ReviewSheet
from recruit.review import (
    HEADERS,
    ReviewSheetError,
    export_review,
    export_review_by_practice,
    import_review,
)
from recruit.work_folders import LOCK_NAME, clean_leftovers, register, staging_path
from tests.conftest import postgres_schema_url
from tests.helpers import run_cli
from tests.integration.review.practice import load_and_search, nhs, region, search_again
from tests.integration.review.sheets import edit, rows_by_pid
from tests.search_helpers import fresh_engine

DECISION, REASON = HEADERS["Decision"], HEADERS["Reason (if not inviting)"]
NAME, DOB, NHS = HEADERS["Name"], HEADERS["Date of birth"], HEADERS["NHS number"]
TODAY = dt.date(2025, 7, 1)


def export(engine, run_id, folder, name="review.xlsx", **kwargs):
    return export_review(engine, run_id, folder / name, today=TODAY, **kwargs).path


def decide(path, choices):
    """choices: pid -> 'Invite' or a reason label (Do not invite for that reason)."""

    def gp(ws, row):
        for pid, choice in choices.items():
            if choice == "Invite":
                ws.cell(row[pid], DECISION).value = "Invite"
                ws.cell(row[pid], REASON).value = None
            else:
                ws.cell(row[pid], DECISION).value = "Do not invite"
                ws.cell(row[pid], REASON).value = choice

    edit(path, gp)


def decisions(engine, run_id):
    with engine.connect() as conn:
        rows = conn.execute(select(ReviewDecision.__table__).where(ReviewDecision.run_id == run_id))
        return {r.patient_id: (r.decision, r.reason_code, r.reviewer) for r in rows}


def refused_numbers(summary):
    return [n for n, _ in summary.refused_rows]


# --- case 1: a stale sheet never overrides a newer decision ------------------------------------------


def test_case_1_stale_sheet_never_overrides_newer_decision(searched, tmp_path):
    engine, run_id = searched
    sheet_a = export(engine, run_id, tmp_path, "dr-a.xlsx")
    decide(sheet_a, {4: "Invite", 1: "Invite"})
    first = import_review(engine, sheet_a, "Dr A Smith")
    assert (first.recorded, first.refused_rows) == (2, [])

    # Dr B exports a sheet later and says patient 4 must not get a letter.
    sheet_b = export(engine, run_id, tmp_path, "dr-b.xlsx")
    decide(sheet_b, {4: "Safeguarding concern"})
    second = import_review(engine, sheet_b, "Dr B Jones")
    assert (second.changed, second.refused_rows) == (1, [])

    # Dr A's older sheet comes back (with one more decision, for 5): 4 is not turned back to Invite.
    decide(sheet_a, {5: "Invite"})
    again = import_review(engine, sheet_a, "Dr A Smith")
    got = decisions(engine, run_id)
    assert got[4] == ("do_not_invite", "safeguarding", "Dr B Jones")
    assert got[5] == ("invite", None, "Dr A Smith")  # the rest of the sheet is recorded
    assert (again.recorded, again.changed, again.unchanged) == (1, 0, 1)
    row_of_4 = rows_by_pid(load_workbook(sheet_a)["Review"])[4]
    assert refused_numbers(again) == [row_of_4]
    reason = again.refused_rows[0][1]
    assert reason.startswith("a newer decision (Do not invite: Safeguarding concern, by Dr B Jones on ")
    assert "was made after this sheet was exported; it stands. Export a new sheet to change it" in reason
    text = format_import_summary(again, "dr-a.xlsx")
    assert f"1 row(s) were NOT recorded (the other rows were):\n  row {row_of_4}: a newer decision" in text
    assert "Given4" not in text and "Family4" not in text and nhs(4) not in text.replace(" ", "")

    # Dr B changes their mind on their own sheet: the same sheet may always change its own decision.
    decide(sheet_b, {4: "Invite"})
    assert import_review(engine, sheet_b, "Dr B Jones").changed == 1
    assert decisions(engine, run_id)[4] == ("invite", None, "Dr B Jones")

    # A new sheet, exported after every decision so far, may change any of them.
    sheet_c = export(engine, run_id, tmp_path, "dr-c.xlsx")
    decide(sheet_c, {4: "Pain resolved"})
    assert import_review(engine, sheet_c, "Dr C Patel").changed == 1
    assert decisions(engine, run_id)[4] == ("do_not_invite", "pain_resolved", "Dr C Patel")


def test_case_1_a_decision_recorded_outside_any_sheet_also_stands(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    with engine.begin() as conn:  # recorded after the export, not from a sheet
        conn.execute(
            insert(ReviewDecision.__table__).values(
                run_id=run_id, patient_id=6, decision="do_not_invite", reason_code="lacks_capacity",
                reviewer="Dr D Roy", decided_at=dt.datetime.now(dt.UTC),
            )
        )  # fmt: skip
    decide(path, {6: "Invite", 7: "Invite"})
    summary = import_review(engine, path, "Dr A Smith")
    assert decisions(engine, run_id)[6][0] == "do_not_invite"
    assert decisions(engine, run_id)[7][0] == "invite"
    assert len(summary.refused_rows) == 1 and "by Dr D Roy" in summary.refused_rows[0][1]
    # The same decision as the newer one is simply unchanged; a blank one never undoes it.
    decide(path, {6: "Lacks capacity"})
    same = import_review(engine, path, "Dr A Smith")
    assert (same.unchanged, same.refused_rows) == (2, [])


def test_case_1_an_old_format_or_unknown_sheet_is_refused_whole(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    decide(path, {4: "Invite"})
    wb = load_workbook(path)
    meta = wb["recruit"]
    fields = {meta.cell(r, 1).value: r for r in range(1, meta.max_row + 1)}
    meta.cell(fields["format"], 2).value = "recruit review sheet 1"
    old = tmp_path / "old.xlsx"
    wb.save(old)
    with pytest.raises(ReviewSheetError, match="earlier version of recruit.*export a new sheet"):
        import_review(engine, old, "Dr A Smith")
    meta.cell(fields["format"], 2).value = review.FORMAT
    meta.cell(fields["sheet"], 2).value = "00000000-0000-0000-0000-000000000000"
    unknown = tmp_path / "unknown.xlsx"
    wb.save(unknown)
    with pytest.raises(ReviewSheetError, match="was not exported from this database"):
        import_review(engine, unknown, "Dr A Smith")
    assert decisions(engine, run_id) == {}


class _Clock:
    """Hypothesis model of case 1: what each patient's decision must be after any order of
    exports and imports, from the rule 'a row never overrides a decision made since its sheet was
    exported by another sheet'."""

    def __init__(self) -> None:
        self.time = 0
        self.exported: dict[int, int] = {}
        self.stored: dict[int, tuple[str, int, int]] = {}  # pid -> (choice, time, sheet)

    def export(self, sheet: int) -> None:
        self.time += 1
        self.exported[sheet] = self.time

    def imported(self, sheet: int, choices: dict[int, str]) -> set[int]:
        """Apply one import to the model; the pids the import must refuse."""
        self.time += 1
        refused = set()
        for pid, choice in choices.items():
            before = self.stored.get(pid)
            if before is not None and before[0] == choice:
                continue
            if before is not None and before[2] != sheet and before[1] > self.exported[sheet]:
                refused.add(pid)
                continue
            self.stored[pid] = (choice, self.time, sheet)
        return refused


CHOICES = st.sampled_from(["Invite", "Safeguarding concern", "Pain resolved"])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("export"), st.integers(0, 2)),
        st.tuples(st.just("import"), st.integers(0, 2), st.dictionaries(st.sampled_from([4, 5]), CHOICES)),
    ),
    min_size=1,
    max_size=7,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_case_1_any_order_of_sheets_keeps_the_newest_decision(searched, tmp_path_factory, steps):
    engine, run_id = searched
    with engine.begin() as conn:
        conn.execute(delete(ReviewDecision.__table__))
    folder = tmp_path_factory.mktemp("order")
    model = _Clock()
    paths = {}
    codes = {"Invite": "invite", "Safeguarding concern": "do_not_invite", "Pain resolved": "do_not_invite"}
    for step in steps:
        if step[0] == "export":
            paths[step[1]] = export(engine, run_id, folder, f"sheet{step[1]}.xlsx")
            model.export(step[1])
            continue
        _, sheet, choices = step
        if sheet not in paths:
            continue
        decide(paths[sheet], choices)
        summary = import_review(engine, paths[sheet], f"Dr {sheet}")
        # every row of the sheet is imported again, with the choices made on it so far
        on_sheet = {
            pid: "Invite" if ws_decision == "Invite" else ws_reason
            for pid, ws_decision, ws_reason in _sheet_choices(paths[sheet])
        }
        refused = model.imported(sheet, on_sheet)
        row = rows_by_pid(load_workbook(paths[sheet])["Review"])
        assert sorted(refused_numbers(summary)) == sorted(row[pid] for pid in refused)
        got = decisions(engine, run_id)
        assert {pid: d for pid, (d, _, _) in got.items()} == {
            pid: codes[choice] for pid, (choice, _, _) in model.stored.items()
        }


def _sheet_choices(path):
    ws = load_workbook(path)["Review"]
    for pid, r in rows_by_pid(ws).items():
        decision = ws.cell(r, DECISION).value
        if decision:
            yield pid, decision, ws.cell(r, REASON).value


# --- case 2: every row is checked against the person it shows --------------------------------------


def test_case_2_one_column_sorted_refuses_only_the_rows_it_broke(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    # Sheet order is patients 4, 5, 1, 6, 7, 8 (rows 2 to 7). The GP sorts the Name column alone
    # (Excel's "continue with the current selection"): Given1 moves up to row 2, and so on.
    wb = load_workbook(path)
    ws = wb["Review"]
    names = sorted(ws.cell(r, NAME).value for r in range(2, 8))
    for r, name in enumerate(names, 2):
        ws.cell(r, NAME).value = name
    for r in range(2, 8):  # "Do not invite" is meant for the person whose name the GP reads
        ws.cell(r, DECISION).value = (
            "Do not invite" if ws.cell(r, NAME).value == "Ms Given1 Family1" else "Invite"
        )
        ws.cell(r, REASON).value = "Safeguarding concern" if ws.cell(r, DECISION).value != "Invite" else None
    wb.save(path)

    summary = import_review(engine, path, "Dr A Smith")
    # Rows 2-4 now show another person's name: nothing from them is recorded, not even "Invite".
    assert refused_numbers(summary) == [2, 3, 4]
    for _, reason in summary.refused_rows:
        assert reason == (
            "the name in this row is not the name of the person this row was made for: was one column "
            "sorted on its own? Nothing from this row was recorded (sort whole rows, or export a new sheet)"
        )
    assert decisions(engine, run_id) == {pid: ("invite", None, "Dr A Smith") for pid in (6, 7, 8)}
    assert (summary.recorded, summary.not_reviewed) == (3, 3)


def test_case_2_each_identity_cell_is_checked_and_sorting_whole_rows_is_fine(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    wb = load_workbook(path)
    ws = wb["Review"]
    # Sort whole rows by name, descending (every column moves together).
    body = [[ws.cell(r, c).value for c in range(1, ws.max_column + 1)] for r in range(2, ws.max_row + 1)]
    body.sort(key=lambda values: values[NAME - 1], reverse=True)
    for r, values in enumerate(body, 2):
        for c, value in enumerate(values, 1):
            ws.cell(r, c).value = value
    row = rows_by_pid(ws)
    for pid in row:
        ws.cell(row[pid], DECISION).value = "Invite"
    ws.cell(row[1], NAME).value = "  ms   GIVEN1 family1 "  # spaces and case do not matter
    ws.cell(row[6], DOB).value = "06/05/1980"  # a date typed as text is read as a date
    ws.cell(row[5], DOB).value = dt.datetime(1980, 5, 6)  # another person's birth date
    ws.cell(row[7], NHS).value = nhs(8)  # another person's NHS number
    ws.cell(row[8], NAME).value = "Ms Given7 Family7"
    ws.cell(row[8], DOB).value = "07/05/1980"
    wb.save(path)

    summary = import_review(engine, path, "Dr A Smith")
    reasons = dict(summary.refused_rows)
    assert sorted(reasons) == sorted([row[5], row[7], row[8]])
    assert reasons[row[5]].startswith("the date of birth in this row is not the date of birth of the person")
    assert reasons[row[7]].startswith("the NHS number in this row is not the NHS number of the person")
    assert reasons[row[8]].startswith("the name and date of birth in this row are not those of the person")
    assert set(decisions(engine, run_id)) == {4, 1, 6}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    column=st.sampled_from([NAME, DOB, NHS]),
    order=st.permutations(range(6)),
    choices=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_case_2_any_single_column_shuffle_records_only_rows_still_showing_their_person(
    searched, tmp_path_factory, column, order, choices
):
    engine, run_id = searched
    with engine.begin() as conn:
        conn.execute(delete(ReviewDecision.__table__))
    path = export(engine, run_id, tmp_path_factory.mktemp("shuffle"))
    wb = load_workbook(path)
    ws = wb["Review"]
    shown = [ws.cell(r, column).value for r in range(2, 8)]
    for r, i in enumerate(order, 2):
        ws.cell(r, column).value = shown[i]
    for r, invite in enumerate(choices, 2):
        ws.cell(r, DECISION).value = "Invite" if invite else "Do not invite"
        ws.cell(r, REASON).value = None if invite else "Safeguarding concern"
    wb.save(path)
    pid_of = {r: pid for pid, r in rows_by_pid(ws).items()}

    summary = import_review(engine, path, "Dr A Smith")
    moved = [r for r, i in enumerate(order, 2) if i != r - 2]
    assert refused_numbers(summary) == moved
    expected = {
        pid_of[r]: "invite" if choices[r - 2] else "do_not_invite" for r in range(2, 8) if r not in moved
    }
    assert {pid: d for pid, (d, _, _) in decisions(engine, run_id).items()} == expected


# --- case 3: one practice per workbook -------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def region_base(request, tmp_path_factory):
    """(engine, run) over region(): one search of two practices, A81001 and B82002."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('region') / 'recruit.db'}"
        else:
            url = stack.enter_context(postgres_schema_url("rr"))
        engine = fresh_engine(url)
        stack.callback(engine.dispose)
        load_and_search(engine, region())
        yield engine, search_again(engine, practice=None)


@pytest.fixture
def regional(region_base):
    engine, run_id = region_base
    with engine.begin() as conn:
        conn.execute(delete(ReviewDecision.__table__))
        conn.execute(delete(Invitation.__table__))
    return engine, run_id


def practice_of_rows(path):
    ws = load_workbook(path)["Review"]
    return {pid: ws.cell(r, HEADERS["Practice"]).value for pid, r in rows_by_pid(ws).items()}


def test_case_3_each_practice_gets_only_its_own_patients(regional, tmp_path):
    engine, run_id = regional
    with pytest.raises(RecruitError, match=r"candidates at 2 practices \(A81001, B82002\).*--practice"):
        export_review(engine, run_id, tmp_path / "all.xlsx")
    assert not (tmp_path / "all.xlsx").exists()

    summaries = export_review_by_practice(engine, run_id, tmp_path / "review.xlsx", today=TODAY)
    assert [(s.path.name, s.practice, s.rows) for s in summaries] == [
        ("review-A81001.xlsx", "A81001", 6),
        ("review-B82002.xlsx", "B82002", 4),
    ]
    a, b = (s.path for s in summaries)
    assert practice_of_rows(a) == {pid: "Riverside Surgery (A81001)" for pid in (4, 5, 1, 6, 7, 8)}
    assert practice_of_rows(b) == {pid: "Hillside Practice (B82002)" for pid in (11, 12, 13, 14)}
    guide = " ".join(str(c.value) for c in load_workbook(b)["Instructions"]["A"] if c.value)
    assert "4 people at Hillside Practice (B82002)" in guide
    assert sorted(p.name for p in tmp_path.iterdir()) == ["review-A81001.xlsx", "review-B82002.xlsx"]

    one = export_review(engine, run_id, tmp_path / "b.xlsx", today=TODAY, practice=" b82002 ")
    assert (one.practice, one.rows) == ("B82002", 4)
    with pytest.raises(RecruitError, match="no candidates at practice Z99999"):
        export_review(engine, run_id, tmp_path / "z.xlsx", practice="Z99999")

    # A row of B's sheet pasted into A's sheet: refused alone; A's own rows are recorded.
    wb_b = load_workbook(b)
    ws_b = wb_b["Review"]
    pasted = [ws_b.cell(2, c).value for c in range(1, ws_b.max_column + 1)]
    wb = load_workbook(a)
    ws = wb["Review"]
    for c, value in enumerate(pasted, 1):
        ws.cell(8, c).value = value
    ws.cell(8, DECISION).value = "Invite"
    ws.cell(2, DECISION).value = "Invite"
    wb.save(a)
    summary = import_review(engine, a, "Dr A Smith")
    assert summary.refused_rows == [
        (
            8,
            "this person is not a patient of this sheet's practice (A81001): was the row copied from "
            "another practice's sheet? Nothing from this row was recorded",
        )
    ]
    assert set(decisions(engine, run_id)) == {4}
    assert summary.not_in_sheet == 0  # B's candidates are not "missing" from A's sheet
    with engine.connect() as conn:
        sheets = conn.execute(select(ReviewSheet.__table__.c.practice_id, ReviewSheet.__table__.c.rows)).all()
    assert sorted(sheets) == [(1, 6), (2, 4), (2, 4)]


def test_case_3_a_single_practice_export_keeps_the_given_name(searched, tmp_path):
    engine, run_id = searched
    summaries = export_review_by_practice(engine, run_id, tmp_path / "review.xlsx", today=TODAY)
    assert [(s.path, s.practice, s.rows) for s in summaries] == [(tmp_path / "review.xlsx", "A81001", 6)]


# --- case 8: the workbook is readable by its owner only ----------------------------------------------


def test_case_8_review_workbook_is_owner_only_whatever_the_umask(searched, tmp_path):
    engine, run_id = searched
    old = os.umask(0o022)
    try:
        path = export(engine, run_id, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["review.xlsx"]


def test_case_8_a_killed_export_leaves_nothing_past_the_next_command(searched, tmp_path):
    """An export killed part-way (SIGKILL: nothing in it can clean up) leaves its staging folder
    with a half-written workbook; the next command that opens the database deletes it."""
    engine, run_id = searched
    staging = staging_path(tmp_path / "review.xlsx", "deadbeef")
    register(engine, staging, "review")  # as the killed export had done
    staging.mkdir()
    (staging / LOCK_NAME).touch()  # its lock went with the killed process
    (staging / "review.xlsx").write_bytes(b"half a workbook")
    assert clean_leftovers(engine) == 1
    assert list(tmp_path.iterdir()) == []
    export(engine, run_id, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["review.xlsx"]


def test_case_8_a_failed_export_leaves_no_file_under_the_real_name(searched, tmp_path, monkeypatch):
    engine, run_id = searched
    real = review._iter_candidates

    def breaks_half_way(*args, **kwargs):
        rows = real(*args, **kwargs)
        yield next(rows)
        raise RuntimeError("disk pulled out")

    def sheets():
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(ReviewSheet.__table__)).scalar_one()

    before = sheets()
    monkeypatch.setattr(review, "_iter_candidates", breaks_half_way)
    with pytest.raises(RuntimeError):
        export(engine, run_id, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert sheets() == before  # a sheet that was never written is not recorded either


# --- the command line: plain words, no traceback, exit status 1 when a row was not recorded ---------


def test_cli_exports_one_workbook_per_practice_and_lists_rows_not_recorded(tmp_path):
    db = f"sqlite:///{tmp_path / 'recruit.db'}"
    engine = fresh_engine(db)
    load_and_search(engine, region())
    run_id = search_again(engine, practice=None)
    out = tmp_path / "sheets"
    out.mkdir()

    exported = run_cli(
        "review", "export", str(run_id), "--out", str(out / "review.xlsx"), "--db", db, cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    assert (
        f"Wrote 6 candidates of practice A81001 from search run {run_id} to {out / 'review-A81001.xlsx'}"
        in exported.stdout
    )
    assert (
        f"Wrote 4 candidates of practice B82002 from search run {run_id} to {out / 'review-B82002.xlsx'}"
        in exported.stdout
    )
    assert "can be opened only by you" in exported.stdout

    unknown = run_cli(
        "review",
        "export",
        str(run_id),
        "--out",
        str(out / "x.xlsx"),
        "--practice",
        "Z9",
        "--db",
        db,
        cwd=tmp_path,
    )
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "no candidates at practice Z9 (practices with candidates: A81001, B82002)" in unknown.stderr

    sheet = out / "review-A81001.xlsx"
    wb = load_workbook(sheet)
    ws = wb["Review"]
    row = rows_by_pid(ws)
    ws.cell(row[4], NAME).value, ws.cell(row[5], NAME).value = (
        ws.cell(row[5], NAME).value,
        ws.cell(row[4], NAME).value,
    )
    ws.cell(row[4], DECISION).value = "Invite"
    ws.cell(row[1], DECISION).value = "Invite"
    wb.save(sheet)
    done = run_cli("review", "import", str(sheet), "--reviewer", "Dr A Smith", "--db", db, cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "1 new decision(s)" in done.stdout
    assert f"row {row[4]}: the name in this row is not the name of the person" in done.stdout
    assert f"row {row[5]}: the name in this row" in done.stdout
    assert (
        "2 row(s) of review-A81001.xlsx were not recorded (listed above); the other rows were." in done.stderr
    )
    for person in ("Given4", "Given5", "Family4", nhs(4)):
        assert person not in done.stdout + done.stderr
    engine.dispose()


def test_cli_import_refuses_an_old_sheet_plainly(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    wb = load_workbook(path)
    wb["recruit"].cell(1, 2).value = "recruit review sheet 1"
    wb.save(path)
    db = engine.url.render_as_string(hide_password=False)
    refused = run_cli("review", "import", str(path), "--reviewer", "Dr A", "--db", db, cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "earlier version of recruit" in refused.stderr and "export a new sheet" in refused.stderr
