"""A declared data fix: re-date progress.updated_at of players 1..10, keeping the old values.

The change is declared under `expect` (update, at most 10 rows) and touches exactly 10
rows with a WHERE clause; the old values are kept in a new column, and the downgrade
puts them back and drops it. SAFE (both engines, exit 0): the change is reported as
declared, the round trip is exact.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "safe_declared_backfill"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

integrity = {
    "expect": [
        {"table": "progress", "column": "updated_at", "change": "update", "max_rows": 10,
         "reason": "the first ten accounts were migrated at the cut-over"},
    ],
}

UTC_DATETIME = sa.DateTime(timezone=True)
progress = sa.table(
    "progress",
    sa.column("player_id", sa.Integer),
    sa.column("updated_at", UTC_DATETIME),
    sa.column("updated_at_before_fix", UTC_DATETIME),
)
CUT_OVER = datetime(2026, 1, 1, tzinfo=timezone.utc)


def upgrade() -> None:
    op.add_column("progress", sa.Column("updated_at_before_fix", UTC_DATETIME, nullable=True))
    op.execute(
        progress.update()
        .where(progress.c.player_id <= 10)
        .values(updated_at_before_fix=progress.c.updated_at, updated_at=CUT_OVER)
    )


def downgrade() -> None:
    op.execute(
        progress.update()
        .where(progress.c.updated_at_before_fix.is_not(None))
        .values(updated_at=progress.c.updated_at_before_fix)
    )
    op.drop_column("progress", "updated_at_before_fix")
