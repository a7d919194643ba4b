"""Add results.input_device as a PostgreSQL ENUM; the downgrade drops the column only.

PostgreSQL only. DANGEROUS (exit 3): the downgrade leaves the type input_device behind
(enum-not-dropped statically), so the second upgrade of the round trip fails with
"type input_device already exists" (round-trip-failed).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "roundtrip_enum_not_dropped"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

INPUT_DEVICE = sa.Enum("keyboard", "touchscreen", name="input_device")


def upgrade() -> None:
    INPUT_DEVICE.create(op.get_bind(), checkfirst=False)
    op.add_column("results", sa.Column("input_device", INPUT_DEVICE, nullable=True))


def downgrade() -> None:
    op.drop_column("results", "input_device")
