"""quarantine entry: where in a Bundle a quarantined record was

- quarantine.entry: the record's place in its Bundle (0 = the first entry), so a record of a
  JSON or XML Bundle file, which has no line of its own, can still be found (issue 16).

Revision ID: 0006_quarantine_entry
Revises: 0005_keep_decisions
Create Date: 2026-12-07 17:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006_quarantine_entry'
down_revision: str | None = '0005_keep_decisions'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entry', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.drop_column('entry')
