"""Add a nullable players.country column; the downgrade raises.

The upgrade alone is harmless. DANGEROUS (both engines, exit 3): the downgrade raises on
the copy (round-trip-failed; statically empty-downgrade), so the revision cannot be
rolled back, and it is not declared irreversible.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "roundtrip_downgrade_raises"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("players", sa.Column("country", sa.String(2), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("no way back from players.country")
