"""players.username from VARCHAR(32) to VARCHAR(4) ("short handles only").

DANGEROUS (both engines, exit 3): type-narrowing statically (shorter strings).
- PostgreSQL: the assignment cast refuses the longer usernames, so the migration fails
  on the existing data (migration-failed: value too long, every player row).
- SQLite: lengths are not enforced, but the change needs a batch rebuild of players,
  which results, progress and personal_bests reference with ON DELETE CASCADE: under
  foreign_keys=ON dropping the old players table deletes every child row
  (batch-rebuild-cascade, cascade-rows-lost).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "value_username_varchar_4"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("players") as batch:
        batch.alter_column("username", type_=sa.String(4), existing_type=sa.String(32), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("players") as batch:
        batch.alter_column("username", type_=sa.String(32), existing_type=sa.String(4), existing_nullable=False)
