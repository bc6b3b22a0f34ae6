"""Reply slips: recorded from CSV or Excel, refused row by row when wrong, and honoured by the next
search (nobody invited, declining, asking not to be contacted or now in work is found again)."""

from __future__ import annotations

import datetime as dt

import pytest
from openpyxl import Workbook
from sqlalchemy import insert, select

from recruit.cli_render import format_replies_summary
from recruit.errors import RecruitError
from recruit.models import Invitation, Study
from recruit.replies import RepliesFileError, import_replies
from tests.integration.review.practice import candidates, invite, outcomes, search_again

TODAY = dt.date(2025, 8, 1)


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def invitations(engine):
    with engine.connect() as conn:
        rows = conn.execute(select(Invitation.__table__))
        return {
            r.patient_id: (r.status, r.reply, r.replied_at and r.replied_at.date().isoformat()) for r in rows
        }


def invite_four(engine, run_id):
    for pid in (4, 5, 1, 6):
        invite(engine, pid, f"INS-000{pid}", run_id=run_id)


def test_replies_from_csv_are_recorded_with_forgiving_headers(searched, tmp_path):
    engine, run_id = searched
    invite_four(engine, run_id)
    path = write_csv(
        tmp_path / "replies.csv",
        "Study No.,REPLY,Date replied\n"
        "ins-0004,Not interested,2025-07-10\n"
        "INS-0005,  do not   contact ,11/07/2025\n"
        "INS-0001,Now in paid work,2025-07-12\n"
        "\n"
        "INS-0006,interested,12/7/2025\n",
    )
    summary = import_replies(engine, path, today=TODAY)
    assert invitations(engine) == {
        4: ("declined", "not_interested", "2025-07-10"),
        5: ("do_not_contact", "do_not_contact", "2025-07-11"),
        1: ("declined", "now_in_work", "2025-07-12"),
        6: ("replied", "interested", "2025-07-12"),
    }
    assert (summary.rows, sum(summary.recorded.values()), summary.changed, summary.unchanged) == (4, 4, 0, 0)
    text = format_replies_summary(summary, "replies.csv")
    assert "now in paid work: 1" in text and "do not contact: 1" in text
    again = import_replies(engine, path, today=TODAY)
    assert (sum(again.recorded.values()), again.unchanged) == (0, 4)


def test_replies_from_excel_with_date_cells_and_a_misspelt_header(searched, tmp_path):
    engine, run_id = searched
    invite(engine, 4, "12345", run_id=run_id)
    invite(engine, 5, "INS-0005", run_id=run_id)
    wb = Workbook()
    ws = wb.active
    ws.append(["Studdy number", "Reply", "Date"])
    ws.append([12345, "Do not contact", dt.datetime(2025, 7, 3)])
    ws.append(["INS-0005", "not_interested", dt.date(2025, 7, 4)])
    wb.save(tmp_path / "replies.xlsx")
    import_replies(engine, tmp_path / "replies.xlsx", today=TODAY)
    assert invitations(engine) == {
        4: ("do_not_contact", "do_not_contact", "2025-07-03"),
        5: ("declined", "not_interested", "2025-07-04"),
    }


def test_a_file_with_wrong_rows_is_refused_naming_them(searched, tmp_path):
    engine, run_id = searched
    invite_four(engine, run_id)
    path = write_csv(
        tmp_path / "replies.csv",
        "study number,reply,date\n"
        "INS-0004,not interested,2025-07-10\n"  # 2: fine, but nothing is recorded
        "INS-9999,interested,2025-07-10\n"  # 3: unknown study number
        "INS-0005,maybe,2025-07-10\n"  # 4: not one of the four replies
        "INS-0001,interested,31/02/2025\n"  # 5: no such date
        "INS-0006,interested,2025-09-01\n"  # 6: in the future
        "INS-0006,interested,2025-06-01\n"  # 7: before the letter was written
        "INS-0001,,2025-07-10\n"  # 8: no reply
        "INS-0004,interested,2025-07-11\n",  # 9: contradicts row 2
    )
    with pytest.raises(RepliesFileError) as info:
        import_replies(engine, path, today=TODAY)
    lines = str(info.value).splitlines()
    assert lines[0] == "replies.csv was not imported (nothing was recorded): 7 problem(s)."
    assert [line.split(":")[0].strip() for line in lines[1:]] == [f"row {n}" for n in (3, 4, 5, 6, 7, 8, 9)]
    message = str(info.value)
    assert "study number INS-9999 is not one recruit has issued" in message
    assert "the reply must be one of: interested, not interested, do not contact, now in paid work" in message
    assert "'31/02/2025' is not a date" in message and "in the future" in message
    assert "before the letter was written (2025-07-01)" in message
    assert "also on row 2 with another reply" in message
    assert all(reply is None for _, reply, _ in invitations(engine).values())


def test_a_file_without_a_needed_column_is_refused(searched, tmp_path):
    engine, _ = searched
    path = write_csv(tmp_path / "replies.csv", "study number,reply\nINS-0004,interested\n")
    with pytest.raises(RecruitError, match="no 'date' column in the first row"):
        import_replies(engine, path, today=TODAY)
    (tmp_path / "replies.pdf").write_text("%PDF")
    with pytest.raises(RecruitError, match="not .pdf"):
        import_replies(engine, tmp_path / "replies.pdf", today=TODAY)


def test_a_later_reply_replaces_an_earlier_one_but_do_not_contact_stays(searched, tmp_path):
    engine, run_id = searched
    invite_four(engine, run_id)
    first = write_csv(
        tmp_path / "a.csv",
        "study number,reply,date\nINS-0004,interested,2025-07-10\nINS-0005,do not contact,2025-07-10\n",
    )
    import_replies(engine, first, today=TODAY)
    later = write_csv(tmp_path / "b.csv", "study number,reply,date\nINS-0004,now in paid work,2025-07-20\n")
    summary = import_replies(engine, later, today=TODAY)
    assert summary.changed == 1
    assert invitations(engine)[4] == ("declined", "now_in_work", "2025-07-20")
    older = write_csv(tmp_path / "c.csv", "study number,reply,date\nINS-0004,interested,2025-07-15\n")
    with pytest.raises(RepliesFileError, match="row 2: study number INS-0004 already has the later reply"):
        import_replies(engine, older, today=TODAY)
    undo = write_csv(tmp_path / "d.csv", "study number,reply,date\nINS-0005,interested,2025-07-25\n")
    with pytest.raises(RepliesFileError, match="asked not to be contacted; recruit does not undo that"):
        import_replies(engine, undo, today=TODAY)
    stop = write_csv(tmp_path / "e.csv", "study number,reply,date\nINS-0004,do not contact,2025-07-01\n")
    import_replies(engine, stop, today=TODAY)  # do not contact is always recorded
    assert invitations(engine)[4][:2] == ("do_not_contact", "do_not_contact")


def test_the_next_search_finds_nobody_invited_or_who_replied(searched, tmp_path):
    engine, run_id = searched
    assert candidates(engine, run_id) == {4, 5, 1, 6, 7, 8}
    invite_four(engine, run_id)
    invite(engine, 7, "INS-0007", run_id=run_id)  # invited, no reply yet
    path = write_csv(
        tmp_path / "replies.csv",
        "study number,reply,date\n"
        "INS-0004,not interested,2025-07-10\n"
        "INS-0005,do not contact,2025-07-10\n"
        "INS-0001,now in paid work,2025-07-10\n"
        "INS-0006,interested,2025-07-10\n",
    )
    import_replies(engine, path, today=TODAY)
    again = search_again(engine, dt.date(2025, 8, 1))
    got = outcomes(engine, again)
    assert {pid: got[pid] for pid in (4, 5, 1, 6, 7, 8)} == {
        4: "already_invited",
        5: "do_not_contact",
        1: "already_invited",
        6: "already_invited",
        7: "already_invited",
        8: None,
    }
    # Asking not to be contacted also keeps someone out of another study's search.
    with engine.begin() as conn:
        conn.execute(insert(Study.__table__).values(id=2, code="other", title="Another study"))
    other = search_again(engine, dt.date(2025, 8, 1), study="other")
    assert outcomes(engine, other)[5] == "do_not_contact"
    assert candidates(engine, other) == {4, 1, 6, 7, 8}
