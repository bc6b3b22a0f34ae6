"""waves that learn: which evidence items each candidate had, the in-work answer, fitted weights

- search_result.score_items: bit i set when score item i of the run's rule set applied to the
  patient (NULL: searched before this revision), so weights fitted to replies can rank a wave
  without running the search again (issue 19).
- invitation.in_work: the reply slip's "Are you in paid work at the moment?" (true, false; NULL:
  not answered).
- letter_batch.ranking: which weights put the wave in order (the rule file's, or a fitted
  version): score items and weights only, no patient identifiers.
- score_weights: weights fitted to a run's replies (`recruit waves fit RUN`), one row per
  version, with who fitted them and when.

Revision ID: 0009_waves_learn
Revises: 0008_pseudonymised
Create Date: 2026-12-07 20:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0009_waves_learn'
down_revision: str | None = '0008_pseudonymised'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('search_result', schema=None) as batch_op:
        batch_op.add_column(sa.Column('score_items', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('invitation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('in_work', sa.Boolean(), nullable=True))
    with op.batch_alter_table('letter_batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ranking', sa.Text(), nullable=True))
    op.create_table(
        'score_weights',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('weights', sa.Text(), nullable=False),
        sa.Column('replies_used', sa.Integer(), nullable=False),
        sa.Column('in_work', sa.Integer(), nullable=False),
        sa.Column('out_of_work', sa.Integer(), nullable=False),
        sa.Column('method', sa.Text(), nullable=True),
        sa.Column('fitted_by', sa.String(length=200), nullable=True),
        sa.Column('fitted_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['search_run.id'], name=op.f('fk_score_weights_run_id_search_run'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_score_weights')),
        sa.UniqueConstraint('run_id', 'version', name=op.f('uq_score_weights_run_id_version')),
    )


def downgrade() -> None:
    op.drop_table('score_weights')
    with op.batch_alter_table('letter_batch', schema=None) as batch_op:
        batch_op.drop_column('ranking')
    with op.batch_alter_table('invitation', schema=None) as batch_op:
        batch_op.drop_column('in_work')
    with op.batch_alter_table('search_result', schema=None) as batch_op:
        batch_op.drop_column('score_items')
