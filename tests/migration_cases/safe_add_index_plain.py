"""A plain index on progress(level), without CONCURRENTLY.

SAFE (both engines, exit 0 with the default --fail-on error): no data changes. On
PostgreSQL the build blocks writes to progress meanwhile, a warning only
(pg-index-not-concurrent). The downgrade drops it (exact).
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
