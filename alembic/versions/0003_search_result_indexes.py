"""search speed: search_result keeps one secondary index, (run_id, outcome)

Writing a region's million results paid for two secondary indexes. (run_id, outcome, score)
took each row at a random place (scores repeat and arrive in patient order), which cost more
than writing the rows themselves (SQLite 1.3 s of 2.7 s for a million rows); (run_id,
practice_id) was read by no query. Readers ask for a run's candidates, which (run_id, outcome)
finds as well, and sort those few by rank themselves.

Revision ID: 0003_search_result_indexes
Revises: 0002_search_speed
Create Date: 2026-11-23 16:40:00
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0003_search_result_indexes'
down_revision: str | None = '0002_search_speed'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('search_result', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_result_run_id_practice_id'))
        batch_op.drop_index(batch_op.f('ix_search_result_run_id_outcome_score'))
        batch_op.create_index(batch_op.f('ix_search_result_run_id_outcome'), ['run_id', 'outcome'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('search_result', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_result_run_id_outcome'))
        batch_op.create_index(batch_op.f('ix_search_result_run_id_outcome_score'), ['run_id', 'outcome', 'score'], unique=False)
        batch_op.create_index(batch_op.f('ix_search_result_run_id_practice_id'), ['run_id', 'practice_id'], unique=False)
