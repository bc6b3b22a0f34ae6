"""`recruit letters posted BATCH` and `recruit letters not-posted BATCH`: what became of a batch.

Writing letters is not posting them. Until a batch is recorded as posted its invitations stay
'drafted', and the audit counts them as "Letter written, not yet sent", not as invited. A batch
that was never posted (destroyed, lost before posting) has its invitations removed, so the people
in it are not counted as invited and can be written to in a later batch; each keeps their study
number (STUDY_NUMBER), so a reply slip from a stray copy still finds them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Row, and_, delete, func, or_, select, update

from recruit.errors import RecruitError
from recruit.load.values import LONDON
from recruit.models import LetterBatch, utcnow
from recruit.tables import INVITATION

BATCH = LetterBatch.__table__


@dataclass(frozen=True)
class PostedSummary:
    batch_id: int
    posted_on: dt.date
    letters: int
    already: bool = False


@dataclass(frozen=True)
class NotPostedSummary:
    batch_id: int
    letters_removed: int
    output_dir: str | None
    already: bool = False


def _batch(conn: Connection, batch_id: int) -> Row:
    row = conn.execute(select(BATCH).where(BATCH.c.id == batch_id)).one_or_none()
    if row is None:
        raise RecruitError(
            f'There is no batch {batch_id}. The batch number is printed by recruit letters ("Batch N: ...").'
        )
    return row


def _written_on(row: Row) -> dt.date:
    created = row.created_at
    if created.tzinfo is None:  # SQLite gives back naive UTC
        created = created.replace(tzinfo=dt.UTC)
    return created.astimezone(LONDON).date()


def record_posted(engine: Engine, batch_id: int, posted_on: dt.date | None = None) -> PostedSummary:
    """Record that a batch was posted on a day (default today): its letters are then 'sent'."""
    today = dt.datetime.now(LONDON).date()
    when = posted_on or today
    with engine.begin() as conn:
        row = _batch(conn, batch_id)
        if row.not_posted_at is not None:
            raise RecruitError(
                f"Batch {batch_id} was recorded as never posted, and its letters were removed. "
                "Write a new batch with recruit letters RUN --out FOLDER."
            )
        mine = INVITATION.c.batch_id == batch_id
        letters = conn.execute(select(func.count()).select_from(INVITATION).where(mine)).scalar_one()
        if row.posted_on is not None:
            if row.posted_on != when:
                raise RecruitError(
                    f"Batch {batch_id} is already recorded as posted on {row.posted_on}; nothing changed."
                )
            return PostedSummary(batch_id, when, letters, already=True)
        if when > today:
            raise RecruitError(f"{when} is after today: record the batch as posted once it has gone.")
        written = _written_on(row)
        if when < written:
            raise RecruitError(
                f"Batch {batch_id} was written on {written}, so it cannot have been posted on {when}."
            )
        sent_at = dt.datetime.combine(when, dt.time(0), tzinfo=LONDON)
        conn.execute(update(BATCH).where(BATCH.c.id == batch_id).values(posted_on=when))
        conn.execute(
            update(INVITATION)
            .where(mine, INVITATION.c.status == "drafted")
            .values(status="sent", sent_at=sent_at)
        )
        conn.execute(update(INVITATION).where(mine, INVITATION.c.sent_at.is_(None)).values(sent_at=sent_at))
    return PostedSummary(batch_id, when, letters)


def record_not_posted(engine: Engine, batch_id: int) -> NotPostedSummary:
    """Record that a batch never went: its invitations are removed, so nobody in it counts as
    invited and each can be written to again. Refused once a letter of it has a reply (it went)."""
    with engine.begin() as conn:
        row = _batch(conn, batch_id)
        if row.not_posted_at is not None:
            return NotPostedSummary(batch_id, 0, row.output_dir, already=True)
        if row.posted_on is not None:
            raise RecruitError(
                f"Batch {batch_id} is recorded as posted on {row.posted_on}, so it cannot be recorded "
                "as not posted."
            )
        mine = INVITATION.c.batch_id == batch_id
        answered = conn.execute(
            select(func.count())
            .select_from(INVITATION)
            .where(mine, or_(INVITATION.c.reply.is_not(None), INVITATION.c.status != "drafted"))
        ).scalar_one()
        if answered:
            raise RecruitError(
                f"{answered:,} letter(s) of batch {batch_id} already have a reply recorded, so the batch "
                "was posted; nothing changed."
            )
        removed = conn.execute(
            delete(INVITATION).where(and_(mine, INVITATION.c.status == "drafted"))
        ).rowcount
        conn.execute(update(BATCH).where(BATCH.c.id == batch_id).values(not_posted_at=utcnow()))
    return NotPostedSummary(batch_id, removed, row.output_dir)
