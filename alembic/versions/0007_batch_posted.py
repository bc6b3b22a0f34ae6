"""batch posted: when a batch of letters was posted, or that it never was

- letter_batch.posted_on: the day the batch was posted (`recruit letters posted BATCH`); its
  invitations are then 'sent', which the audit counts as invited (issue 17).
- letter_batch.not_posted_at: when the batch was recorded as never posted (destroyed,
  `recruit letters not-posted BATCH`); its invitations are then removed so the people in it can
  be written to again.

Revision ID: 0007_batch_posted
Revises: 0006_quarantine_entry
Create Date: 2026-12-07 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007_batch_posted'
down_revision: str | None = '0006_quarantine_entry'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('letter_batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('posted_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('not_posted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('letter_batch', schema=None) as batch_op:
        batch_op.drop_column('not_posted_at')
        batch_op.drop_column('posted_on')
