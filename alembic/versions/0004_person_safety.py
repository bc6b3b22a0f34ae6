"""person safety: record status and kind, partial birth dates, extract dates and kinds, holds

- clinical_event.status and medication_issue.status: what the record's own status says
  (resolved, cancelled, stopped, ...), so each rule can say which statuses count.
- clinical_event.resource_type and medication_issue.resource_type: a newer extract replaces only
  the kinds of record it carries, so one missing file never wipes earlier opt-outs.
- patient.date_of_birth_latest: a birth date recorded as a year or a month has a range; age
  limits are decided at the safe end of it.
- extract.date_source and extract.resource_types: when the extract was taken, and from where;
  which kinds of record it carries.
- person_hold: a broken record that still signals death, leaving or a coded entry (dissent)
  holds its person back from letters; so does a second record of one person in a practice's
  extract ('unclear': which registration is current cannot be told).

Revision ID: 0004_person_safety
Revises: 0003_search_result_indexes
Create Date: 2026-12-07 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004_person_safety'
down_revision: str | None = '0003_search_result_indexes'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('person_hold',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('extract_id', sa.Integer(), nullable=False),
    sa.Column('nhs_number', sa.String(length=10), nullable=True),
    sa.Column('practice_id', sa.Integer(), nullable=True),
    sa.Column('source_id', sa.String(length=200), nullable=True),
    sa.Column('signal', sa.String(length=8), nullable=False),
    sa.Column('code_system', sa.String(length=10), nullable=True),
    sa.Column('code', sa.String(length=20), nullable=True),
    sa.Column('reason_code', sa.String(length=64), nullable=False),
    sa.Column('file', sa.String(length=500), nullable=True),
    sa.Column('line', sa.Integer(), nullable=True),
    sa.CheckConstraint("signal IN ('death', 'left', 'code', 'unclear')", name=op.f('ck_person_hold_signal')),
    sa.ForeignKeyConstraint(['extract_id'], ['extract.id'], name=op.f('fk_person_hold_extract_id_extract'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_person_hold'))
    )
    with op.batch_alter_table('person_hold', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_person_hold_nhs_number'), ['nhs_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_person_hold_practice_id_source_id'), ['practice_id', 'source_id'], unique=False)

    with op.batch_alter_table('clinical_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('resource_type', sa.String(length=40), nullable=True))
    with op.batch_alter_table('medication_issue', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('resource_type', sa.String(length=40), nullable=True))
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.add_column(sa.Column('date_of_birth_latest', sa.Date(), nullable=True))
    with op.batch_alter_table('extract', schema=None) as batch_op:
        batch_op.add_column(sa.Column('date_source', sa.String(length=60), nullable=True))
        batch_op.add_column(sa.Column('resource_types', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('extract', schema=None) as batch_op:
        batch_op.drop_column('resource_types')
        batch_op.drop_column('date_source')
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.drop_column('date_of_birth_latest')
    with op.batch_alter_table('medication_issue', schema=None) as batch_op:
        batch_op.drop_column('resource_type')
        batch_op.drop_column('status')
    with op.batch_alter_table('clinical_event', schema=None) as batch_op:
        batch_op.drop_column('resource_type')
        batch_op.drop_column('status')
    with op.batch_alter_table('person_hold', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_person_hold_practice_id_source_id'))
        batch_op.drop_index(batch_op.f('ix_person_hold_nhs_number'))
    op.drop_table('person_hold')
