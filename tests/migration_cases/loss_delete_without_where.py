"""DELETE FROM progress without a WHERE clause ("reset the cache").

DANGEROUS (both engines, exit 3): unbounded-data-change statically; rows-lost on the data
with exactly the table's row count (one progress row per player). The downgrade cannot
bring the rows back (it does nothing), so the round trip is lossy too.
"""

from __future__ import annotations

from alembic import op

revision = "loss_delete_without_where"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM progress")


def downgrade() -> None:
    # Nothing to undo here: the rows are gone (`integrity repair progress` rebuilds them).
    pass
