"""A plain CREATE INDEX on results(started_at), without CONCURRENTLY.

PostgreSQL only (SQLite: SAFE, exit 0). DANGEROUS as a lock-heavy statement, reported as a WARNING (pg-index-not-concurrent): writes to results wait
for the whole build. Exit 0 with the default --fail-on error, exit 3 with
--fail-on warning. The data is untouched and the downgrade is exact.
"""

from __future__ import annotations

from alembic import op

revision = "lock_index_not_concurrent"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_results_started_at", "results", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_results_started_at", table_name="results")
