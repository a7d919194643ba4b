"""progress.tests_completed from INTEGER to BIGINT.

SAFE (both engines, exit 0 with the default --fail-on error): a widening, every value
kept. PostgreSQL rewrites the small progress table (warnings at most); SQLite rebuilds
progress through a batch copy, and no table references progress. The downgrade
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
