"""`recruit demo`: the README's first command runs the whole flow on made-up patients."""

from __future__ import annotations

import csv
import stat

from openpyxl import load_workbook
from pypdf import PdfReader
from sqlalchemy import func, select

from recruit.db import make_engine
from recruit.models import Invitation, ReviewDecision
from tests.helpers import run_cli


def test_demo_runs_every_step_and_writes_only_to_approved_people(tmp_path):
    result = run_cli("demo", "--patients", "900", "--out", "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    demo = tmp_path / "demo"
    for name in (
        "recruit.db",
        "letters/letters.pdf",
        "letters/mail-merge.csv",
        "audit/audit.html",
    ):
        assert (demo / name).is_file(), name
    assert "audit report: " in result.stdout

    engine = make_engine(f"sqlite:///{demo / 'recruit.db'}")
    with engine.connect() as conn:
        approved = set(
            conn.execute(
                select(ReviewDecision.patient_id).where(ReviewDecision.decision == "invite")
            ).scalars()
        )
        refused = conn.execute(
            select(func.count()).select_from(ReviewDecision).where(ReviewDecision.decision == "do_not_invite")
        ).scalar_one()
        invited = list(conn.execute(select(Invitation.patient_id)).scalars())
    engine.dispose()
    assert approved and refused, "the simulated GP should both approve and turn some people down"
    assert invited and set(invited) <= approved and len(invited) == len(set(invited))

    def rows(name: str) -> int:
        with (demo / "letters" / name).open(encoding="utf-8-sig", newline="") as f:
            return len(list(csv.DictReader(f)))

    # Everyone invited is either mailed or listed for the practice to contact another way.
    assert rows("mail-merge.csv") + rows("contact-another-way.csv") == len(invited)
    assert len(PdfReader(demo / "letters" / "letters.pdf").pages) >= rows("mail-merge.csv")
    # One review workbook per practice (the demo makes three), each filled in by the simulated GP.
    decided = sorted((demo / "review").glob("review-*-decided.xlsx"))
    assert len(decided) == 3 and len(list((demo / "review").glob("review-*.xlsx"))) == 6
    assert all(load_workbook(path)["Review"].max_row >= 2 for path in decided)

    # Everything in the demo folder is private to its owner, as a real run's files are.
    assert stat.S_IMODE(demo.stat().st_mode) == 0o700
    for path in demo.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path

    # The audit report holds counts, never the people behind them.
    report = (demo / "audit" / "audit.html").read_text(encoding="utf-8")
    with (demo / "extract" / "truth" / "truth.csv").open(newline="") as f:
        numbers = [row["nhs_number"] for row in csv.DictReader(f)]
    assert not [n for n in numbers if n in report]
    assert list((demo / "audit").glob("*.json"))


def test_demo_refuses_to_clear_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = run_cli("demo", "--out", "mine", cwd=tmp_path)
    assert result.returncode != 0
    assert "not made by recruit demo" in result.stdout + result.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
