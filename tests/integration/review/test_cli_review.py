"""recruit review export / import and recruit replies import, run as a user would (SQLite)."""

from __future__ import annotations

from pathlib import Path

from openpyxl import load_workbook

from recruit.review import HEADERS
from tests.helpers import run_cli
from tests.integration.review.practice import invite, load_and_search, practice
from tests.search_helpers import fresh_engine

ROOT = Path(__file__).resolve().parents[3]


def test_review_and_replies_from_the_command_line(tmp_path):
    db = f"sqlite:///{tmp_path / 'recruit.db'}"
    engine = fresh_engine(db)
    run_id = load_and_search(engine, practice())
    sheet = tmp_path / "review.xlsx"

    exported = run_cli("review", "export", str(run_id), "--out", str(sheet), "--db", db, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert f"Wrote 6 candidates of practice A81001 from search run {run_id}" in exported.stdout
    assert "identifies patients" in exported.stdout and "Keep it inside the practice" in exported.stdout

    wb = load_workbook(sheet)
    ws = wb["Review"]
    ws.cell(2, HEADERS["Decision"]).value = "Invite"
    ws.cell(3, HEADERS["Decision"]).value = "Do not invite"  # no reason: refused
    wb.save(sheet)
    refused = run_cli("review", "import", str(sheet), "--reviewer", "Dr A Smith", "--db", db, cwd=tmp_path)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert (
        "nothing was recorded" in refused.stderr and "row 3: Do not invite needs a reason" in refused.stderr
    )

    ws.cell(3, HEADERS["Reason (if not inviting)"]).value = "Safeguarding concern"
    wb.save(sheet)
    done = run_cli("review", "import", str(sheet), "--reviewer", "Dr A Smith", "--db", db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 new decision(s)" in done.stdout
    assert "Safeguarding concern: 1" in done.stdout and "not yet reviewed: 4" in done.stdout

    invite(engine, 4, "INS-0004", run_id=run_id)
    replies = tmp_path / "replies.csv"
    replies.write_text("Study number,Reply,Date\nINS-0004,now in paid work,2025-07-02\n")
    recorded = run_cli("replies", "import", str(replies), "--db", db, cwd=tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    assert "now in paid work: 1" in recorded.stdout
    replies.write_text("Study number,Reply,Date\nINS-0400,interested,2025-07-02\n")
    unknown = run_cli("replies", "import", str(replies), "--db", db, cwd=tmp_path)
    assert (
        unknown.returncode == 1
        and "row 2: study number INS-0400 is not one recruit has issued" in unknown.stderr
    )
    engine.dispose()
