"""An index on results (player_id, created_at): CONCURRENTLY on PostgreSQL.

PostgreSQL builds it with CREATE INDEX CONCURRENTLY inside an autocommit block (writes
keep flowing); SQLite builds it plainly. SAFE (both engines, exit 0, no warning about
the index build on PostgreSQL). The downgrade drops it the same way (exact).
"""

from __future__ import annotations

from alembic import op

revision = "safe_add_index_concurrently"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

NAME = "ix_results_player_id_created_at"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(NAME, "results", ["player_id", "created_at"], postgresql_concurrently=True)
    else:
        op.create_index(NAME, "results", ["player_id", "created_at"])


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(NAME, table_name="results", postgresql_concurrently=True)
    else:
        op.drop_index(NAME, table_name="results")
