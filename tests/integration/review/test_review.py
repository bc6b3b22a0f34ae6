"""GP review: export a run's candidates, fill the sheet in with openpyxl as a GP would, import it.

Every refusal of a whole sheet names the sheet's rows and records nothing (a row that no longer shows its
person is refused alone: test_never_wrong_person_review.py); names that look like formulas, HTML or
right-to-left text stay literal text in the workbook.
"""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from sqlalchemy import func, select, update

from recruit.cli_render import format_import_summary
from recruit.errors import RecruitError
from recruit.models import Patient, ReviewDecision
from recruit.review import (
    COLUMNS,
    HEADERS,
    REASONS,
    ReviewSheetError,
    export_review,
    import_review,
)
from tests.integration.review.practice import invite, load_and_search, nhs, practice
from tests.integration.review.sheets import edit, rows_by_pid
from tests.search_helpers import fresh_engine

COL = {name: i for name, i in HEADERS.items()}
DECISION, REASON, DETAIL = COL["Decision"], COL["Reason (if not inviting)"], COL["Other reason or note"]


def export(engine, run_id, tmp_path, name="review.xlsx"):
    path = tmp_path / name
    export_review(engine, run_id, path, today=dt.date(2025, 7, 1))
    return path


def decisions(engine, run_id):
    with engine.connect() as conn:
        rows = conn.execute(select(ReviewDecision.__table__).where(ReviewDecision.run_id == run_id))
        return {r.patient_id: (r.decision, r.reason_code, r.reason_text, r.reviewer) for r in rows}


def no_formulas(path):
    wb = load_workbook(path)
    return all(c.data_type != "f" for ws in wb.worksheets for row in ws.iter_rows() for c in row)


# --- export --------------------------------------------------------------------------------------


def test_export_lists_the_candidates_in_wave_order_with_their_evidence(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    wb = load_workbook(path)
    assert wb.sheetnames[:2] == ["Instructions", "Review"]
    assert wb["Lists"].sheet_state == "hidden" and wb["recruit"].sheet_state == "veryHidden"
    ws = wb["Review"]
    assert [ws.cell(1, c).value for c in range(1, len(COLUMNS) + 1)] == [c.header for c in COLUMNS]
    # 2 (dementia) and 3 (in work) were excluded; 4 (recent not-fit note) and 5 (unemployed) lead.
    keys = [ws.cell(r, 1).value for r in range(2, ws.max_row + 1)]
    assert keys == [f"{run_id}-{pid}" for pid in (4, 5, 1, 6, 7, 8)]
    first = {ws.cell(1, c).value: ws.cell(2, c).value for c in range(1, len(COLUMNS) + 1)}
    assert first["Rank"] == 1 and first["Score"] == 6.0
    assert first["Name"] == "Ms Given4 Family4"
    assert first["Date of birth"].date() == dt.date(1980, 5, 4)
    assert first["NHS number"] == "940 000 0004"
    assert (first["Address"], first["Postcode"]) == ("4 High Street, Leeds", "LS1 1AA")
    assert first["Practice"] == "Riverside Surgery (A81001)"
    assert first["Why on the list"].startswith("Chronic pain coded")
    assert "10 Jan 2024" in first["Why on the list"] and "SNOMED CT" in first["Why on the list"]
    assert first["Latest work, fit note or benefit record"].startswith("Out of work:")
    assert "not fit for work" in first["Latest work, fit note or benefit record"]
    assert "1 May 2025" in first["Latest work, fit note or benefit record"]
    assert "not fit note 3 months (+3)" in first["Score made up of"]
    third = {ws.cell(1, c).value: ws.cell(4, c).value for c in range(1, len(COLUMNS) + 1)}
    assert third["Latest work, fit note or benefit record"] == "No work, fit note or benefit record"
    # Readable and safe to hand over: key hidden, header frozen, only the decision columns open.
    assert ws.column_dimensions["A"].hidden
    assert ws.freeze_panes == "E2"
    assert ws.protection.sheet
    assert ws.cell(2, COL["Name"]).protection.locked
    assert not ws.cell(2, DECISION).protection.locked and not ws.cell(2, DETAIL).protection.locked
    lists = {str(dv.sqref): dv.formula1 for dv in ws.data_validations.dataValidation}
    assert lists == {"N2:N7": "=Lists!$A$1:$A$2", "O2:O7": f"=Lists!$B$1:$B${len(REASONS)}"}
    assert [wb["Lists"].cell(i, 2).value for i in range(1, len(REASONS) + 1)] == list(REASONS.values())
    guide = " ".join(str(c.value) for c in wb["Instructions"]["A"] if c.value)
    assert "Keep it inside the practice" in guide and "Do not invite" in guide
    assert no_formulas(path)


def test_changes_since_the_search_are_flagged(searched, tmp_path):
    engine, run_id = searched
    with engine.begin() as conn:
        conn.execute(
            update(Patient.__table__).where(Patient.id == 5).values(date_of_death=dt.date(2025, 6, 30))
        )
        conn.execute(update(Patient.__table__).where(Patient.id == 1).values(needs_large_print=True))
    ws = load_workbook(export(engine, run_id, tmp_path))["Review"]
    row = rows_by_pid(ws)
    assert ws.cell(row[5], COL["Check first"]).value == "Record shows a date of death: 30 Jun 2025"
    assert ws.cell(row[1], COL["Check first"]).value == "Needs large print"


def test_export_refuses_an_unknown_or_failed_run(searched, tmp_path):
    engine, run_id = searched
    with pytest.raises(RecruitError, match="There is no search run 99"):
        export_review(engine, 99, tmp_path / "r.xlsx")
    with pytest.raises(RecruitError, match="must be an .xlsx file"):
        export_review(engine, run_id, tmp_path / "r.csv")


# --- import --------------------------------------------------------------------------------------


def test_round_trip_records_decisions_and_reimport_updates_them(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)

    def gp(ws, row):
        ws.cell(row[4], DECISION).value = "Invite"
        ws.cell(row[5], DECISION).value = "Do not invite"
        ws.cell(row[5], REASON).value = "Recent bereavement"
        ws.cell(row[1], DECISION).value = "  do NOT invite "  # case and spaces do not matter
        ws.cell(row[1], REASON).value = "other"
        ws.cell(row[1], DETAIL).value = "Moving abroad next month"
        ws.cell(row[6], DECISION).value = "Invite"
        ws.cell(row[6], DETAIL).value = "Known to me, happy to be asked"

    edit(path, gp)
    summary = import_review(engine, path, "Dr A Smith")
    assert decisions(engine, run_id) == {
        4: ("invite", None, None, "Dr A Smith"),
        5: ("do_not_invite", "recent_bereavement", None, "Dr A Smith"),
        1: ("do_not_invite", "other", "Moving abroad next month", "Dr A Smith"),
        6: ("invite", None, "Known to me, happy to be asked", "Dr A Smith"),
    }
    assert (summary.recorded, summary.changed, summary.unchanged) == (4, 0, 0)
    assert (summary.candidates, summary.invite, summary.not_reviewed) == (6, 2, 2)
    assert summary.not_invited == {"Other": 1, "Recent bereavement": 1}
    text = format_import_summary(summary, "review.xlsx")
    assert "invite:           2" in text and "Recent bereavement: 1" in text and "not yet reviewed: 2" in text

    # The same sheet again changes nothing.
    again = import_review(engine, path, "Dr B Jones")
    assert (again.recorded, again.changed, again.unchanged) == (0, 0, 4)
    assert decisions(engine, run_id)[4][3] == "Dr A Smith"

    # A second pass: 5 changed to invite, 7 decided, 6 cleared (an empty decision keeps the earlier one).
    def second(ws, row):
        ws.cell(row[5], DECISION).value = "Invite"
        ws.cell(row[5], REASON).value = None
        ws.cell(row[7], DECISION).value = "Do not invite"
        ws.cell(row[7], REASON).value = "Pain resolved"
        ws.cell(row[6], DECISION).value = None
        ws.cell(row[6], DETAIL).value = None

    edit(path, second)
    third = import_review(engine, path, "Dr B Jones", run_id=run_id)
    assert (third.recorded, third.changed, third.unchanged, third.blank_kept_earlier) == (1, 1, 2, 1)
    got = decisions(engine, run_id)
    assert got[5] == ("invite", None, None, "Dr B Jones")
    assert got[7] == ("do_not_invite", "pain_resolved", None, "Dr B Jones")
    assert got[6] == ("invite", None, "Known to me, happy to be asked", "Dr A Smith")
    assert third.not_reviewed == 1


def _copy_row(ws, src, dst):
    for c in range(1, ws.max_column + 1):
        ws.cell(dst, c).value = ws.cell(src, c).value


REFUSALS = {
    "duplicated row": (lambda ws, row: _copy_row(ws, row[4], 8), [8], "the same person as row 2"),
    "unknown patient": (
        lambda ws, row: setattr(ws.cell(row[1], 1), "value", "1-999"),
        [4],
        "no such patient",
    ),
    "not a candidate": (
        lambda ws, row: (
            setattr(ws.cell(row[6], 1), "value", "1-2"),
            setattr(ws.cell(row[6], COL["NHS number"]), "value", nhs(2)),
        ),
        [5],
        "not a candidate in search run 1 (left out at step dementia)",
    ),
    "changed key": (lambda ws, row: setattr(ws.cell(row[7], 1), "value", "seven"), [6], "changed hidden key"),
    "row added by hand": (
        lambda ws, row: setattr(ws.cell(8, COL["Name"]), "value", "New Person"),
        [8],
        "no hidden key",
    ),
    "row from another run": (
        lambda ws, row: setattr(ws.cell(row[8], 1), "value", "2-8"),
        [7],
        "belongs to search run 2",
    ),
    "no reason": (
        lambda ws, row: setattr(ws.cell(row[4], DECISION), "value", "Do not invite"),
        [2],
        "needs a reason",
    ),
    "other without words": (
        lambda ws, row: (
            setattr(ws.cell(row[4], DECISION), "value", "Do not invite"),
            setattr(ws.cell(row[4], REASON), "value", "Other"),
        ),
        [2],
        "write the reason",
    ),
    "unknown decision": (
        lambda ws, row: setattr(ws.cell(row[4], DECISION), "value", "Maybe"),
        [2],
        "not 'maybe'",
    ),
    "unknown reason": (
        lambda ws, row: (
            setattr(ws.cell(row[4], DECISION), "value", "Do not invite"),
            setattr(ws.cell(row[4], REASON), "value", "Too busy"),
        ),
        [2],
        "'too busy' is not one from the list",
    ),
    "reason without decision": (
        lambda ws, row: setattr(ws.cell(row[4], REASON), "value", "Pain resolved"),
        [2],
        "no decision",
    ),
    "reason with invite": (
        lambda ws, row: (
            setattr(ws.cell(row[4], DECISION), "value", "Invite"),
            setattr(ws.cell(row[4], REASON), "value", "Pain resolved"),
        ),
        [2],
        "decision is Invite",
    ),
    "formula decision": (
        lambda ws, row: setattr(ws.cell(row[4], DECISION), "value", '=IF(1,"Invite")'),
        [2],
        "the Decision cell holds a formula",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_sheet_that_does_not_match_is_refused_naming_the_rows(searched, tmp_path, case):
    engine, run_id = searched
    change, bad_rows, words = REFUSALS[case]
    path = export(engine, run_id, tmp_path)

    def gp(ws, row):
        for pid in (1, 5, 6, 7, 8):  # good decisions around the bad row: still nothing recorded
            ws.cell(row[pid], DECISION).value = "Invite"
        change(ws, row)

    edit(path, gp)
    with pytest.raises(ReviewSheetError) as info:
        import_review(engine, path, "Dr A Smith")
    message = str(info.value)
    assert "nothing was recorded" in message
    named = sorted(int(line.split(":")[0].split()[1]) for line in message.splitlines()[1:])
    assert named == bad_rows, message
    assert words in message
    assert decisions(engine, run_id) == {}


def test_every_bad_row_is_named_at_once(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)

    def gp(ws, row):
        ws.cell(row[4], 1).value = "not a key"
        ws.cell(row[5], DECISION).value = "Do not invite"
        _copy_row(ws, row[6], 9)

    edit(path, gp)
    with pytest.raises(ReviewSheetError) as info:
        import_review(engine, path, "Dr A Smith")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("review.xlsx was not imported (nothing was recorded): 3 problem(s)")
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["row 2", "row 3", "row 9"]


def test_a_sheet_for_another_run_or_database_is_refused(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    with pytest.raises(ReviewSheetError, match="is the review sheet for search run 1, not run 2"):
        import_review(engine, path, "Dr A Smith", run_id=2)
    other = fresh_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(ReviewSheetError, match="search run 1, which is not in this database"):
        import_review(other, path, "Dr A Smith")
    with pytest.raises(RecruitError, match="Give the name of the GP"):
        import_review(engine, path, "  ")
    not_ours = tmp_path / "plain.xlsx"
    shutil.copy(path, not_ours)
    wb = load_workbook(not_ours)
    del wb["recruit"]
    wb.save(not_ours)
    with pytest.raises(ReviewSheetError, match="not a review sheet made by `recruit review export`"):
        import_review(engine, not_ours, "Dr A Smith")
    broken = tmp_path / "broken.xlsx"
    broken.write_text("not a workbook")
    with pytest.raises(RecruitError, match="cannot be read as an Excel review workbook"):
        import_review(engine, broken, "Dr A Smith")


def test_once_a_letter_is_written_the_decision_cannot_change(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    edit(path, lambda ws, row: setattr(ws.cell(row[4], DECISION), "value", "Invite"))
    import_review(engine, path, "Dr A Smith")
    invite(engine, 4, "INS-0001", run_id=run_id)
    import_review(engine, path, "Dr A Smith")  # the same decision again is fine

    def change(ws, row):
        ws.cell(row[4], DECISION).value = "Do not invite"
        ws.cell(row[4], REASON).value = "Pain resolved"

    edit(path, change)
    with pytest.raises(ReviewSheetError, match="row 2: a letter has already been written"):
        import_review(engine, path, "Dr A Smith")
    assert decisions(engine, run_id)[4][0] == "invite"


# --- names are data ------------------------------------------------------------------------------

FORMULA_NAMES = [
    '=HYPERLINK("http://evil.example","Click")',
    "+44 113",
    "-2+3",
    "@SUM(A1:A9)",
    "=1+2",
    "\tTab",
]


def test_formula_looking_names_stay_text(searched, tmp_path):
    engine, run_id = searched
    with engine.begin() as conn:
        for pid, name in zip((4, 5, 1, 6, 7, 8), FORMULA_NAMES, strict=True):
            conn.execute(
                update(Patient.__table__)
                .where(Patient.id == pid)
                .values(title=None, given_name=name, family_name="=cmd|' /C calc'!A0")
            )
    path = export(engine, run_id, tmp_path)
    assert no_formulas(path)
    ws = load_workbook(path)["Review"]
    for r, name in enumerate(FORMULA_NAMES, 2):
        cell = ws.cell(r, COL["Name"])
        assert cell.value == f"{name} =cmd|' /C calc'!A0"
        assert cell.data_type == "s" and cell.quotePrefix
    edit(path, lambda ws, row: setattr(ws.cell(row[4], DECISION), "value", "Invite"))
    import_review(engine, path, "Dr A Smith")
    assert decisions(engine, run_id)[4][0] == "invite"


def test_characters_xml_cannot_hold_do_not_break_the_workbook(sqlite_url, tmp_path):
    engine = fresh_engine(sqlite_url)
    run_id = load_and_search(engine, practice(names={4: ("A\x01B", "C\uffffD\r\nE")}))
    ws = load_workbook(export(engine, run_id, tmp_path))["Review"]
    assert ws.cell(2, COL["Name"]).value == "Ms A\ufffdB C\ufffdD\nE"


SPECIAL = [
    "=",
    "+",
    "-",
    "@",
    "<script>alert(1)</script>",
    "&amp;",
    "{{ name }}",
    "{% if %}",
    "\u202e",
    "\u200f",
    "שלום",
    "مرحبا",
    "Zoë",
    "Ødegård",
    "李",
    "'",
    '"',
    "\n",
    "  ",
]
name_parts = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn", "Co")), max_size=6),
)
names = st.lists(name_parts, min_size=1, max_size=6).map("".join).map(lambda s: s[:40])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=st.lists(st.tuples(names, names), min_size=6, max_size=6))
def test_any_name_round_trips_literally(searched, tmp_path_factory, people):
    engine, run_id = searched
    pids = (4, 5, 1, 6, 7, 8)  # the candidates, in sheet order
    with engine.begin() as conn:
        for pid, (given_name, family_name) in zip(pids, people, strict=True):
            conn.execute(
                update(Patient.__table__)
                .where(Patient.id == pid)
                .values(title=None, given_name=given_name, family_name=family_name)
            )
        conn.execute(ReviewDecision.__table__.delete())
    path = export(engine, run_id, tmp_path_factory.mktemp("names"))
    assert no_formulas(path)
    ws = load_workbook(path)["Review"]
    for r, (given_name, family_name) in enumerate(people, 2):
        expected = " ".join(p for p in (given_name, family_name) if p.strip())
        assert ws.cell(r, COL["Name"]).value == (expected or None)
        assert expected == "" or ws.cell(r, COL["Name"]).data_type == "s"
    edit(path, lambda ws, row: setattr(ws.cell(row[4], DECISION), "value", "Invite"))
    reviewer = people[0][0] if people[0][0].strip() else "Dr X"
    import_review(engine, path, reviewer)  # even the reviewer's name is just data
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ReviewDecision.__table__)).scalar_one() == 1
