"""Issue 17: `recruit letters posted BATCH [--date]` and `recruit letters not-posted BATCH`, and the
audit's "Invited" counting posted letters only."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, insert, select

from recruit.audit import Rule, audit
from recruit.errors import RecruitError
from recruit.letters.posted import record_not_posted, record_posted
from recruit.load.values import LONDON
from recruit.models import Invitation, LetterBatch, Patient, ReviewDecision, SearchResult
from recruit.tables import INVITATION
from tests.audit_helpers import instep_study_id, synthetic_region
from tests.helpers import run_cli

BATCH = LetterBatch.__table__


def _written_batch(engine, run_id: int, letters: int = 4) -> int:
    """A batch of drafted letters to the first GP-approved candidates, as recruit letters records it."""
    result, patient = SearchResult.__table__, Patient.__table__
    with engine.begin() as conn:
        study_id = instep_study_id(conn)
        people = conn.execute(
            select(result.c.patient_id, patient.c.nhs_number)
            .join(patient, patient.c.id == result.c.patient_id)
            .where(result.c.run_id == run_id, result.c.outcome == "candidate")
            .order_by(result.c.patient_id)
            .limit(letters)
        ).all()
        assert len(people) == letters
        conn.execute(
            insert(ReviewDecision.__table__),
            [
                {"run_id": run_id, "patient_id": p, "decision": "invite", "reviewer": "Dr Test"}
                for p, _ in people
            ],
        )
        batch_id = conn.execute(
            insert(BATCH)
            .values(run_id=run_id, study_id=study_id, letters_written=letters, output_dir="/tmp/letters-1")
            .returning(BATCH.c.id)
        ).scalar_one()
        conn.execute(
            insert(Invitation.__table__),
            [
                {
                    "study_id": study_id,
                    "patient_id": p,
                    "nhs_number": nhs,
                    "run_id": run_id,
                    "batch_id": batch_id,
                    "study_number": f"S{p:06d}",
                    "status": "drafted",
                }
                for p, nhs in people
            ],
        )
    return batch_id


def _letter_figures(engine, run_id: int, tmp_path) -> dict[str, int]:
    report, _ = audit(engine, [run_id], tmp_path / "audit", Rule(enabled=False))
    figures = {(f["column"], f["item"]): f["number"] for f in report.runs[0].records()}
    return {
        item: figures[("all", item)] for item in ("letters.invited", "letters.drafted", "letters.not_written")
    }


@pytest.fixture
def region(db_url, tmp_path):
    return synthetic_region(db_url, tmp_path, practices=1, patients=300, review=False)


def test_posting_a_batch_makes_its_people_invited_in_the_audit(region, tmp_path):
    engine, run_id = region.engine, region.run_id
    batch = _written_batch(engine, run_id)
    assert _letter_figures(engine, run_id, tmp_path) == {
        "letters.invited": 0,
        "letters.drafted": 4,
        "letters.not_written": 0,
    }
    written = dt.datetime.now(LONDON).date()
    done = record_posted(engine, batch, written)
    assert done.letters == 4 and not done.already
    assert _letter_figures(engine, run_id, tmp_path)["letters.invited"] == 4
    with engine.connect() as conn:
        assert conn.execute(select(BATCH.c.posted_on).where(BATCH.c.id == batch)).scalar_one() == written
        statuses = conn.execute(select(INVITATION.c.status, INVITATION.c.sent_at)).all()
    assert {s for s, _ in statuses} == {"sent"} and all(at is not None for _, at in statuses)

    assert record_posted(engine, batch, written).already  # the same again changes nothing
    with pytest.raises(RecruitError, match="already recorded as posted"):
        record_posted(engine, batch, written - dt.timedelta(days=1))
    with pytest.raises(RecruitError, match="cannot be recorded as not posted"):
        record_not_posted(engine, batch)


def test_a_date_in_the_future_or_before_the_letters_were_written_is_refused(region):
    batch = _written_batch(region.engine, region.run_id)
    with pytest.raises(RecruitError, match="after today"):
        record_posted(region.engine, batch, dt.date.today() + dt.timedelta(days=2))
    with pytest.raises(RecruitError, match="cannot have been posted on 2020-01-01"):
        record_posted(region.engine, batch, dt.date(2020, 1, 1))
    with pytest.raises(RecruitError, match="There is no batch 99"):
        record_posted(region.engine, 99)


def test_a_batch_not_posted_invites_nobody_and_its_people_can_be_written_to_again(region, tmp_path):
    engine, run_id = region.engine, region.run_id
    batch = _written_batch(engine, run_id)
    gone = record_not_posted(engine, batch)
    assert gone.letters_removed == 4 and gone.output_dir == "/tmp/letters-1"
    assert _letter_figures(engine, run_id, tmp_path) == {
        "letters.invited": 0,
        "letters.drafted": 0,
        "letters.not_written": 4,
    }
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(INVITATION)).scalar_one() == 0
        assert conn.execute(select(BATCH.c.not_posted_at).where(BATCH.c.id == batch)).scalar_one() is not None
    assert record_not_posted(engine, batch).already
    with pytest.raises(RecruitError, match="never posted"):
        record_posted(engine, batch)


def test_a_batch_with_a_reply_was_posted_and_cannot_be_unposted(region):
    engine = region.engine
    batch = _written_batch(engine, region.run_id)
    with engine.begin() as conn:
        first = conn.execute(select(INVITATION.c.id).limit(1)).scalar_one()
        conn.execute(
            INVITATION.update().where(INVITATION.c.id == first).values(reply="interested", status="replied")
        )
    with pytest.raises(RecruitError, match="already have a reply"):
        record_not_posted(engine, batch)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(INVITATION)).scalar_one() == 4


def test_the_commands_say_what_they_recorded(region, tmp_path, db_url):
    batch = _written_batch(region.engine, region.run_id)
    today = dt.datetime.now(LONDON).date().isoformat()
    posted = run_cli("letters", "posted", str(batch), "--date", today, "--db", db_url, cwd=tmp_path)
    assert posted.returncode == 0, posted.stderr
    assert f"Batch {batch}: 4 letter(s) recorded as posted on {today}." in posted.stdout
    refused = run_cli("letters", "not-posted", str(batch), "--db", db_url, cwd=tmp_path)
    assert refused.returncode == 1 and "cannot be recorded as not posted" in refused.stderr
    bad = run_cli("letters", "posted", str(batch), "--date", "1/12/2026", "--db", db_url, cwd=tmp_path)
    assert bad.returncode == 1 and "not a date like" in bad.stderr
