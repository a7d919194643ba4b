"""Drop results.raw_wpm, a column holding a value in every row.

DANGEROUS (both engines, exit 3): every raw_wpm value is lost (drop-column statically,
column-values-lost on the data: one value per results row). The downgrade adds the
column back with a zero default, so the round trip does not bring the values back
(round-trip-lossy).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "loss_drop_column_raw_wpm"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("results", "raw_wpm")


def downgrade() -> None:
    op.add_column(
        "results",
        sa.Column("raw_wpm", sa.Numeric(7, 2, asdecimal=False), nullable=False, server_default="0"),
    )
