"""Make progress.best_wpm nullable and blank it for every fourth player.

DANGEROUS (both engines, exit 3): values-changed on progress.best_wpm: exactly the rows
with player_id % 4 = 0 became NULL (undeclared). The column becoming nullable also fails
the audits' schema check. The downgrade recomputes best_wpm from results (the exact
values the cache held) and sets NOT NULL again, so the round trip itself is clean.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "value_set_null_by_update"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

TWO_DECIMALS = sa.Numeric(7, 2, asdecimal=False)


def upgrade() -> None:
    with op.batch_alter_table("progress") as batch:
        batch.alter_column("best_wpm", existing_type=TWO_DECIMALS, nullable=True)
    op.execute("UPDATE progress SET best_wpm = NULL WHERE player_id % 4 = 0")


def downgrade() -> None:
    op.execute(
        "UPDATE progress SET best_wpm = "
        "(SELECT MAX(results.wpm) FROM results WHERE results.player_id = progress.player_id) "
        "WHERE best_wpm IS NULL"
    )
    with op.batch_alter_table("progress") as batch:
        batch.alter_column("best_wpm", existing_type=TWO_DECIMALS, nullable=False)
