"""results.wpm from NUMERIC(7,2) to INTEGER ("whole words per minute are enough").

DANGEROUS (both engines, exit 3): type-narrowing statically; on the data every wpm with
a fractional part changes (values-changed on results.wpm: PostgreSQL rounds, the SQLite
batch copy CASTs and truncates). On SQLite the batch rebuild of results, which
personal_bests references with ON DELETE CASCADE, also deletes every personal_bests row
under foreign_keys=ON (batch-rebuild-cascade, cascade-rows-lost). The downgrade restores
the type but not the decimals (round-trip-lossy).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "value_wpm_numeric_to_integer"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

TWO_DECIMALS = sa.Numeric(7, 2, asdecimal=False)


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.alter_column("wpm", type_=sa.Integer, existing_type=TWO_DECIMALS, existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.alter_column("wpm", type_=TWO_DECIMALS, existing_type=sa.Integer, existing_nullable=False)
