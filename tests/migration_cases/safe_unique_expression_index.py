"""A unique index on lower(players.username): usernames unique regardless of case.

Every stored username is already unique in lower case, so the build succeeds.
PostgreSQL builds it CONCURRENTLY in an autocommit block, SQLite plainly. SAFE (both
engines, exit 0). The downgrade drops it (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_unique_expression_index"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

NAME = "uq_players_username_lower"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(NAME, "players", [sa.text("lower(username)")], unique=True, postgresql_concurrently=True)
    else:
        op.create_index(NAME, "players", [sa.text("lower(username)")], unique=True)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(NAME, table_name="players", postgresql_concurrently=True)
    else:
        op.drop_index(NAME, table_name="players")
