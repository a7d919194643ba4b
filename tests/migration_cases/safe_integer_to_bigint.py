"""progress.tests_completed from INTEGER to BIGINT.

DANGEROUS on PostgreSQL, SAFE on SQLite: a widening, every value kept (exit 0; it rebuilds progress
through a batch copy, and no table references progress). PostgreSQL rewrites the
populated progress table under ACCESS EXCLUSIVE: pg-table-rewrite, an error (exit 3). The downgrade
converts back, every value fits (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_integer_to_bigint"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("progress") as batch:
        batch.alter_column("tests_completed", type_=sa.BigInteger, existing_type=sa.Integer, existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("progress") as batch:
        batch.alter_column("tests_completed", type_=sa.Integer, existing_type=sa.BigInteger, existing_nullable=False)
