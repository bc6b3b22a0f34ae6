"""The reply slip's "Are you in paid work now?" (issue 19): an optional column of the replies file,
stored on the invitation for `recruit waves fit`; and the evidence items the search keeps per
candidate, which the fit learns from."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from recruit.cli_render import format_replies_summary
from recruit.models import Invitation, SearchResult
from recruit.replies import RepliesFileError, import_replies
from recruit.waves import run_score_items
from tests.integration.review.practice import invite

TODAY = dt.date(2025, 8, 1)


def in_work(engine) -> dict[int, bool | None]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Invitation.patient_id, Invitation.in_work)).all())


def test_in_work_answers_are_stored_and_now_in_paid_work_means_yes(searched, tmp_path):
    engine, run_id = searched
    for pid in (1, 4, 5, 6, 7):
        invite(engine, pid, f"INS-000{pid}", run_id=run_id)
    path = tmp_path / "replies.csv"
    path.write_text(
        "Study number,Reply,Date,In paid work?\n"
        "INS-0001,interested,2025-07-10,No\n"
        "INS-0004,not interested,2025-07-10,yes\n"
        "INS-0005,interested,2025-07-10,\n"
        "INS-0006,now in paid work,2025-07-10,\n"
        "INS-0007,do not contact,2025-07-10,no\n",
        encoding="utf-8",
    )
    summary = import_replies(engine, path, today=TODAY)
    assert in_work(engine) == {1: False, 4: True, 5: None, 6: True, 7: None}
    text = format_replies_summary(summary, path.name)
    assert "'In paid work' answers recorded: 2 yes, 1 no." in text
    # Importing the same file again changes nothing.
    again = import_replies(engine, path, today=TODAY)
    assert again.unchanged == 5 and not again.recorded


def test_a_later_do_not_contact_removes_an_earlier_in_work_answer(searched, tmp_path):
    engine, run_id = searched
    invite(engine, 1, "INS-0001", run_id=run_id)
    first = tmp_path / "a.csv"
    first.write_text("study number,reply,date,in work\nINS-0001,interested,2025-07-10,no\n", encoding="utf-8")
    import_replies(engine, first, today=TODAY)
    assert in_work(engine) == {1: False}
    later = tmp_path / "b.csv"
    later.write_text("study number,reply,date\nINS-0001,do not contact,2025-07-20\n", encoding="utf-8")
    summary = import_replies(engine, later, today=TODAY)
    assert in_work(engine) == {1: None} and summary.in_work_set_aside == 1


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("INS-0001,now in paid work,2025-07-10,no", "says now in paid work but 'in paid work' says no"),
        ("INS-0001,interested,2025-07-10,maybe", "'in paid work' must be yes, no or blank"),
    ],
)
def test_a_contradictory_or_unreadable_in_work_answer_refuses_the_file(searched, tmp_path, row, problem):
    engine, run_id = searched
    invite(engine, 1, "INS-0001", run_id=run_id)
    path = tmp_path / "replies.csv"
    path.write_text(f"study number,reply,date,in paid work\n{row}\n", encoding="utf-8")
    with pytest.raises(RepliesFileError, match=problem):
        import_replies(engine, path, today=TODAY)
    assert in_work(engine) == {1: None}


def test_the_search_keeps_each_candidates_evidence_items_adding_up_to_the_score(searched):
    engine, run_id = searched
    with engine.connect() as conn:
        items = run_score_items(conn, run_id).score
        rows = conn.execute(
            select(SearchResult.patient_id, SearchResult.score, SearchResult.score_items).where(
                SearchResult.run_id == run_id
            )
        ).all()
    assert rows and all(r.score_items is not None for r in rows)
    for r in rows:
        held = sum(float(c.weight) for i, c in enumerate(items) if r.score_items >> i & 1)
        assert held == pytest.approx(r.score)
    # Patient 5 (unemployed code) and patient 6 (no work record) hold different items.
    masks = {r.patient_id: r.score_items for r in rows}
    assert masks[5] and masks[6] and masks[5] != masks[6]
