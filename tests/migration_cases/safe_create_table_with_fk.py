"""A new achievements table referencing players (ON DELETE CASCADE), with an index.

SAFE (both engines, exit 0): a new, empty table; nothing existing changes. The
downgrade drops it (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_create_table_with_fk"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "achievements",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("player_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("earned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["player_id"], ["players.id"], name=op.f("fk_achievements_player_id_players"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_achievements")),
        sa.UniqueConstraint("player_id", "name", name=op.f("uq_achievements_player_id_name")),
    )
    op.create_index(op.f("ix_achievements_player_id"), "achievements", ["player_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_achievements_player_id"), table_name="achievements")
    op.drop_table("achievements")
