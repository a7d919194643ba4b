"""Clean up impossible results (negative durations) with a bounded DELETE that matches none.

The data holds no such row, so nothing is deleted. SAFE (both engines, exit 0): no row
lost. The downgrade has nothing to undo (an empty downgrade is a warning at most).
"""

from __future__ import annotations

from alembic import op

revision = "safe_delete_matching_nothing"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM results WHERE duration_ms < 0")


def downgrade() -> None:
    # Nothing was deleted on any database whose results pass the audits.
    pass
