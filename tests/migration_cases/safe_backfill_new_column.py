"""Add results.wpm_centi (wpm in hundredths, an integer) and backfill it WHERE it is NULL.

Only the new column is written; the idempotent backfill names its rows
(WHERE wpm_centi IS NULL). SAFE (both engines, exit 0): no existing value changes. The
downgrade drops the new column (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_backfill_new_column"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("results", sa.Column("wpm_centi", sa.Integer, nullable=True))
    op.execute("UPDATE results SET wpm_centi = CAST(ROUND(wpm * 100) AS INTEGER) WHERE wpm_centi IS NULL")


def downgrade() -> None:
    op.drop_column("results", "wpm_centi")
