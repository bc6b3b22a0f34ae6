"""Importing what practice staff actually hand back: a CSV copy of the review sheet, a sheet whose
people are not this database's, study numbers typed with spaces; and a long export's progress."""

from __future__ import annotations

import datetime as dt

import pytest
from openpyxl import load_workbook
from sqlalchemy import select, update

from recruit import review
from recruit.models import Invitation, Patient
from recruit.replies import import_replies
from recruit.review import HEADERS, ReviewSheetError, export_review, export_review_by_practice, import_review
from tests.integration.review.practice import invite

TODAY = dt.date(2025, 7, 1)


def export(engine, run_id, tmp_path, **kwargs):
    return export_review(engine, run_id, tmp_path / "review.xlsx", today=TODAY, **kwargs).path


def test_a_csv_copy_is_refused_in_words(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    ws = load_workbook(path)["Review"]
    csv = tmp_path / "review.csv"
    csv.write_text("\n".join(",".join(str(c.value or "") for c in row) for row in ws.iter_rows()))
    with pytest.raises(ReviewSheetError) as info:
        import_review(engine, csv, "Dr A Smith")
    message = str(info.value)
    assert "review.csv is a CSV file" in message and "(.xlsx)" in message
    assert "openpyxl" not in message and "does not support" not in message


def test_a_sheet_whose_people_are_not_in_this_database_is_said_once(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    # The practice's records as another database holds them: other people behind the same ids.
    with engine.begin() as conn:
        for pid in range(1, 9):
            conn.execute(
                update(Patient.__table__)
                .where(Patient.id == pid)
                .values(nhs_number=f"99900000{pid:02d}", given_name=f"Other{pid}")
            )
    with pytest.raises(ReviewSheetError) as info:
        import_review(engine, path, "Dr A Smith")
    message = str(info.value)
    assert "none of its 6 rows match the candidates of search run" in message
    assert "another search run, practice or database" in message
    assert "row " not in message.replace("rows", "")  # one sentence, no line per row


def test_one_column_sorted_on_its_own_is_still_named_row_by_row(searched, tmp_path):
    engine, run_id = searched
    path = export(engine, run_id, tmp_path)
    wb = load_workbook(path)
    ws = wb["Review"]
    col = HEADERS["NHS number"]
    shown = [ws.cell(r, col).value for r in range(2, ws.max_row + 1)]
    for r, value in enumerate(shown[1:] + shown[:1], 2):  # every row now shows another's number
        ws.cell(r, col).value = value
    wb.save(path)
    summary = import_review(engine, path, "Dr A Smith")
    assert len(summary.refused_rows) == 6
    assert all("sorted on its own" in why for _, why in summary.refused_rows)


def test_export_reports_progress(searched, tmp_path, monkeypatch):
    engine, run_id = searched
    monkeypatch.setattr(review, "PROGRESS_EVERY", 2)
    calls: list[tuple[int, int]] = []
    export(engine, run_id, tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (6, 6)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert (2, 6) in calls and (4, 6) in calls
    calls.clear()
    export_review_by_practice(
        engine, run_id, tmp_path / "all.xlsx", today=TODAY, progress=lambda *a: calls.append(a)
    )
    assert calls[-1] == (6, 6)


def test_study_numbers_typed_with_spaces_are_found(searched, tmp_path):
    engine, run_id = searched
    invite(engine, 4, "INSTEP-7KQ3-M9XPA", run_id=run_id)
    invite(engine, 5, "INSTEP-ABCD-EFGHJ", run_id=run_id)
    path = tmp_path / "replies.csv"
    path.write_text(
        "Study number,Reply,Date\n"
        " instep-7kq3 m9xpa ,Not interested,2025-07-10\n"
        "INSTEP ABCD\u00a0EFGHJ,Interested,2025-07-11\n",
        encoding="utf-8",
    )
    summary = import_replies(engine, path, today=dt.date(2025, 8, 1))
    assert sum(summary.recorded.values()) == 2
    with engine.connect() as conn:
        got = dict(conn.execute(select(Invitation.patient_id, Invitation.reply)).all())
    assert got == {4: "not_interested", 5: "interested"}
