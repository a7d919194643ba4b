"""Add a nullable results.keyboard column; the downgrade drops it with
batch_alter_table("results") (a held-out case of issue 18, finding 1).

The upgrade is harmless on both engines; the danger is in the downgrade.

- SQLite: DANGEROUS (exit 3). Dropping a column in a batch rebuilds results (copy, drop,
  rename); personal_bests references results with ON DELETE CASCADE, so with
  foreign_keys=ON the rebuild's DROP TABLE results empties personal_bests. The static
  pass lints the downgrade with the upgrade's rules (batch-rebuild-cascade, its message
  starting "downgrade:"), and the round trip's round-trip-lossy names the batch rebuild
  of results and the cascade to personal_bests, not only the row counts.
- PostgreSQL: SAFE (exit 0). The batch is a plain ALTER TABLE ... DROP COLUMN of a
  column the upgrade created.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "downgrade_batch_drop_cascade"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("results", sa.Column("keyboard", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("keyboard")
