"""Add results.source VARCHAR(16) NOT NULL with the constant server default 'game'.

SAFE (both engines, exit 0): existing rows read the default; PostgreSQL 11+ stores a
constant default without rewriting the table, SQLite adds it natively. No existing
value changes. The downgrade drops the column (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_add_column_server_default"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("results", sa.Column("source", sa.String(16), nullable=False, server_default="game"))


def downgrade() -> None:
    op.drop_column("results", "source")
