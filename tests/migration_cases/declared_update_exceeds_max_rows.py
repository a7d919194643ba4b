"""A data fix on progress.updated_at declared for at most 5 rows that touches 20.

The WHERE clause is wrong (player_id <= 20 instead of <= 5). The old values are kept in a
new column and restored by the downgrade, so the round trip is exact.

DANGEROUS (both engines, exit 3): declared-change-exceeded on progress.updated_at (20
rows changed, 5 declared).
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "declared_update_exceeds_max_rows"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

integrity = {
    "expect": [
        {"table": "progress", "column": "updated_at", "change": "update", "max_rows": 5,
         "reason": "re-date the five accounts migrated from the old server"},
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
        .where(progress.c.player_id <= 20)
        .values(updated_at_before_fix=progress.c.updated_at, updated_at=CUT_OVER)
    )


def downgrade() -> None:
    op.execute(
        progress.update()
        .where(progress.c.updated_at_before_fix.is_not(None))
        .values(updated_at=progress.c.updated_at_before_fix)
    )
    op.drop_column("progress", "updated_at_before_fix")
