"""Widen players.username from VARCHAR(32) to VARCHAR(64) through a batch operation.

The same revision is harmless on PostgreSQL and destroys the game on SQLite.

- SQLite: DANGEROUS (exit 3). The batch rebuild copies players into a new table, drops
  the old one and renames; results, progress and personal_bests reference players with
  ON DELETE CASCADE, and with foreign_keys=ON (the production setting) the DROP TABLE
  deletes every child row: batch-rebuild-cascade, cascade-rows-lost (every results,
  progress and personal_bests row).
- PostgreSQL: SAFE (exit 0). Widening a VARCHAR is a catalog-only change; at most a
  warning.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "cascade_sqlite_batch_players"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("players") as batch:
        batch.alter_column("username", type_=sa.String(64), existing_type=sa.String(32), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("players") as batch:
        batch.alter_column("username", type_=sa.String(32), existing_type=sa.String(64), existing_nullable=False)
