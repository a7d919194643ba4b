"""personal_bests.mode from VARCHAR(8) to VARCHAR(4), converted with an explicit cast.

An explicit cast to a shorter VARCHAR truncates silently on PostgreSQL (SQL standard):
'words' becomes 'word' and no error is raised.

DANGEROUS (both engines, exit 3): type-narrowing statically (shorter strings).
- PostgreSQL: every 'words' row is truncated (mode is part of the primary key, so keyed
  by it the rows are changed, or lost and added again); the audits now fail on those
  rows (mode not allowed).
- SQLite: lengths are not enforced, the values survive the batch copy; the static
  finding alone fails the run (the same revision truncates in production on PostgreSQL).
The downgrade widens the type again but cannot restore the truncated values.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "value_mode_truncated_by_cast"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("personal_bests") as batch:
        batch.alter_column(
            "mode",
            type_=sa.String(4),
            existing_type=sa.String(8),
            existing_nullable=False,
            postgresql_using="mode::varchar(4)",
        )


def downgrade() -> None:
    with op.batch_alter_table("personal_bests") as batch:
        batch.alter_column("mode", type_=sa.String(8), existing_type=sa.String(4), existing_nullable=False)
