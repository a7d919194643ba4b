"""Comments on players and results.wpm (PostgreSQL); SQLite has no comments (no-op there).

SAFE (both engines, exit 0): catalog only, no data. The downgrade removes the table
comment and restores the column's previous (absent) comment (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_comments"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

TWO_DECIMALS = sa.Numeric(7, 2, asdecimal=False)


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.create_table_comment("players", "Everyone who has played; usernames are unique.")
    op.alter_column(
        "results", "wpm", existing_type=TWO_DECIMALS, existing_nullable=False,
        comment="words per minute, 2 decimals (Monkeytype's definition)",
    )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.alter_column(
        "results", "wpm", existing_type=TWO_DECIMALS, existing_nullable=False,
        comment=None, existing_comment="words per minute, 2 decimals (Monkeytype's definition)",
    )
    op.drop_table_comment("players", existing_comment="Everyone who has played; usernames are unique.")
