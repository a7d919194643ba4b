"""personal_bests.wpm from NUMERIC(7,2) to NUMERIC(9,2): more digits, same decimals.

SAFE (both engines, exit 0): a widening, every value kept (PostgreSQL: no rewrite for a
larger precision at the same scale; SQLite: a batch copy of personal_bests, which no
table references). The downgrade narrows back, every value fits (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_numeric_widen"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

NARROW = sa.Numeric(7, 2, asdecimal=False)
WIDE = sa.Numeric(9, 2, asdecimal=False)


def upgrade() -> None:
    with op.batch_alter_table("personal_bests") as batch:
        batch.alter_column("wpm", type_=WIDE, existing_type=NARROW, existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("personal_bests") as batch:
        batch.alter_column("wpm", type_=NARROW, existing_type=WIDE, existing_nullable=False)
