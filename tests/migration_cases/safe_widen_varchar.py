"""Widen personal_bests.mode from VARCHAR(8) to VARCHAR(16).

SAFE (both engines, exit 0): every value is kept. PostgreSQL changes only the catalog;
SQLite rebuilds personal_bests through a batch copy, and no table references
personal_bests, so nothing cascades. The downgrade narrows back to VARCHAR(8), which
every stored value fits (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_widen_varchar"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("personal_bests") as batch:
        batch.alter_column("mode", type_=sa.String(16), existing_type=sa.String(8), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("personal_bests") as batch:
        batch.alter_column("mode", type_=sa.String(8), existing_type=sa.String(16), existing_nullable=False)
