"""progress.updated_at from TIMESTAMP WITH TIME ZONE to TEXT.

DANGEROUS (both engines, exit 3): an instant becomes a string (type-meaning-change): it
no longer compares or sorts as time, and its rendering depends on the session's
TimeZone on PostgreSQL. The audits' schema check fails on the new type
(new-audit-failures). The downgrade converts back (PostgreSQL: USING updated_at::timestamptz,
exact); on SQLite the batch copy back CASTs the text AS DATETIME, which has numeric
affinity and keeps only the leading year (2026): the round trip is lossy there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "value_timestamp_to_text"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("progress") as batch:
        batch.alter_column("updated_at", type_=sa.Text, existing_type=UTC_DATETIME, existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("progress") as batch:
        batch.alter_column(
            "updated_at",
            type_=UTC_DATETIME,
            existing_type=sa.Text,
            existing_nullable=False,
            postgresql_using="updated_at::timestamptz",
        )
