"""A new player_mode_stats table filled from results with INSERT ... SELECT.

SAFE (both engines, exit 0): rows are added to a new table only (declared as inserts);
nothing existing changes. The downgrade drops the table (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_summary_table_populated"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

integrity = {
    "expect": [
        {"table": "player_mode_stats", "change": "insert", "max_rows": 100000,
         "reason": "one row per player and mode, computed from results"},
    ],
}


def upgrade() -> None:
    op.create_table(
        "player_mode_stats",
        sa.Column("player_id", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("mode_param", sa.Integer, nullable=False),
        sa.Column("tests", sa.Integer, nullable=False),
        sa.Column("best_wpm", sa.Numeric(7, 2, asdecimal=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["player_id"], ["players.id"], name=op.f("fk_player_mode_stats_player_id_players"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("player_id", "mode", "mode_param", name=op.f("pk_player_mode_stats")),
    )
    op.execute(
        "INSERT INTO player_mode_stats (player_id, mode, mode_param, tests, best_wpm) "
        "SELECT player_id, mode, mode_param, COUNT(*), MAX(wpm) FROM results "
        "GROUP BY player_id, mode, mode_param"
    )


def downgrade() -> None:
    op.drop_table("player_mode_stats")
