"""A new game_modes lookup table with its two rows.

SAFE (both engines, exit 0): a new table and two inserted rows (declared as inserts);
nothing existing changes. The downgrade drops the table (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_lookup_table_rows"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

integrity = {
    "expect": [
        {"table": "game_modes", "change": "insert", "max_rows": 2, "reason": "the two modes the game offers"},
    ],
}


def upgrade() -> None:
    game_modes = op.create_table(
        "game_modes",
        sa.Column("code", sa.String(8), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("default_param", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_game_modes")),
    )
    op.bulk_insert(
        game_modes,
        [
            {"code": "words", "label": "Fixed word count", "default_param": 25},
            {"code": "time", "label": "Timed", "default_param": 30},
        ],
    )


def downgrade() -> None:
    op.drop_table("game_modes")
