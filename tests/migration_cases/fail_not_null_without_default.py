"""Add results.source VARCHAR(16) NOT NULL without a default to the populated table.

DANGEROUS (both engines, exit 3): not-null-no-default statically; on the copy the
migration fails (migration-failed) because every existing results row would hold NULL:
PostgreSQL "column contains null values", SQLite "Cannot add a NOT NULL column with
default value NULL". The finding names the rows: every results row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "fail_not_null_without_default"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("results", sa.Column("source", sa.String(16), nullable=False))


def downgrade() -> None:
    op.drop_column("results", "source")
