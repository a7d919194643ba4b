"""Drop the personal_bests table ("it is only a cache").

DANGEROUS (both engines, exit 3): every personal_bests row is lost (drop-table,
rows-lost with the table's row count). The downgrade recreates the table empty with its
exact schema, so the round trip loses the rows (round-trip-lossy).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "loss_drop_table_personal_bests"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

TWO_DECIMALS = sa.Numeric(7, 2, asdecimal=False)


def upgrade() -> None:
    op.drop_index(op.f("ix_personal_bests_result_id"), table_name="personal_bests")
    op.drop_table("personal_bests")


def downgrade() -> None:
    op.create_table(
        "personal_bests",
        sa.Column("player_id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("mode_param", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("result_id", sa.Integer, nullable=False),
        sa.Column("wpm", TWO_DECIMALS, nullable=False),
        sa.Column("accuracy", TWO_DECIMALS, nullable=False),
        sa.ForeignKeyConstraint(
            ["player_id"], ["players.id"], name=op.f("fk_personal_bests_player_id_players"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["result_id"], ["results.id"], name=op.f("fk_personal_bests_result_id_results"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("player_id", "mode", "mode_param", name=op.f("pk_personal_bests")),
    )
    op.create_index(op.f("ix_personal_bests_result_id"), "personal_bests", ["result_id"])
