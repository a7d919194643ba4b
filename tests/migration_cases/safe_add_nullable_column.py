"""Add a nullable players.country VARCHAR(2).

SAFE (both engines, exit 0): no existing value changes; a catalog-only change on
PostgreSQL, a native ADD COLUMN on SQLite. The downgrade drops the new column (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_add_nullable_column"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("players", sa.Column("country", sa.String(2), nullable=True))


def downgrade() -> None:
    op.drop_column("players", "country")
