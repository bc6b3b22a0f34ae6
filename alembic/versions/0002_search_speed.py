"""search speed: search_result without foreign keys

A search writes one search_result row per patient searched (a million for a region). On
PostgreSQL each foreign key is checked row by row by a trigger that also locks the parent row:
the three keys of search_result made writing a million results take over a minute instead of
a few seconds. The rows are written only by the search, in the transaction that creates their
run, from the patient table itself, so the keys guarded nothing the search can break. SQLite
rebuilds the table (batch mode); DuckDB never had the keys.

Revision ID: 0002_search_speed
Revises: 0001
Create Date: 2026-11-23 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002_search_speed'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('search_result', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_search_result_run_id_search_run'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_search_result_patient_id_patient'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_search_result_practice_id_practice'), type_='foreignkey')


def downgrade() -> None:
    with op.batch_alter_table('search_result', schema=None) as batch_op:
        batch_op.create_foreign_key(batch_op.f('fk_search_result_practice_id_practice'), 'practice', ['practice_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_search_result_patient_id_patient'), 'patient', ['patient_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_search_result_run_id_search_run'), 'search_run', ['run_id'], ['id'], ondelete='CASCADE')
