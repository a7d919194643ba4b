"""A plain index on progress(level), without CONCURRENTLY.

DANGEROUS on PostgreSQL, SAFE on SQLite (exit 0). On PostgreSQL the build blocks writes to the
populated progress table meanwhile: pg-index-not-concurrent, an error there (exit 3).
The downgrade drops it (exact).
"""

from __future__ import annotations

from alembic import op

revision = "safe_add_index_plain"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_progress_level", "progress", ["level"])


def downgrade() -> None:
    op.drop_index("ix_progress_level", table_name="progress")
