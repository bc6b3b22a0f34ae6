"""pseudonymised extracts: extracts and patients with no NHS number, name or address

- extract.pseudonymised: the data provider removed NHS numbers, names and addresses (CPRD
  Aurum, OpenSAFELY tables, OMOP CDM; issue 18); a mapping says `pseudonymised: true`.
- patient.pseudonymised: the patient was stored from such an extract. The search counts them
  (the provider verified identity before pseudonymising), but no letter is ever written to them.

Revision ID: 0008_pseudonymised
Revises: 0007_batch_posted
Create Date: 2026-12-07 19:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008_pseudonymised'
down_revision: str | None = '0007_batch_posted'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ('extract', 'patient'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column('pseudonymised', sa.Boolean(), server_default=sa.false(), nullable=False)
            )


def downgrade() -> None:
    for table in ('patient', 'extract'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('pseudonymised')
