"""A declared data fix on progress.updated_at whose downgrade does not restore the values.

The upgrade sets updated_at of players 1..3 to a fixed past instant, declared under
`expect` (3 rows, within max_rows): the upgrade itself is accepted. The downgrade
"restores" them to the current time instead of their old values.

DANGEROUS (both engines, exit 3): round-trip-lossy (progress.updated_at of 3 rows differs
from the before state after the downgrade), not declared irreversible.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "roundtrip_update_not_restored"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

integrity = {
    "expect": [
        {"table": "progress", "column": "updated_at", "change": "update", "max_rows": 3,
         "reason": "mark the three migrated accounts as last updated at the cut-over"},
    ],
}

progress = sa.table("progress", sa.column("player_id", sa.Integer), sa.column("updated_at", sa.DateTime(timezone=True)))
CUT_OVER = datetime(2026, 1, 1, tzinfo=timezone.utc)


def upgrade() -> None:
    op.execute(progress.update().where(progress.c.player_id <= 3).values(updated_at=CUT_OVER))


def downgrade() -> None:
    op.execute(progress.update().where(progress.c.player_id <= 3).values(updated_at=sa.func.current_timestamp()))
