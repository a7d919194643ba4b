"""A partial index on results(player_id) WHERE wpm > 150 (the suspicious-score review).

PostgreSQL builds it CONCURRENTLY in an autocommit block, SQLite plainly. SAFE (both
engines, exit 0). The downgrade drops it (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_partial_index"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

NAME = "ix_results_fast_player_id"
WHERE = sa.text("wpm > 150")


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(NAME, "results", ["player_id"], postgresql_where=WHERE, postgresql_concurrently=True)
    else:
        op.create_index(NAME, "results", ["player_id"], sqlite_where=WHERE)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(NAME, table_name="results", postgresql_concurrently=True)
    else:
        op.drop_index(NAME, table_name="results")
