"""Rename results.extra_chars to extra_keystrokes, written as add column plus drop column.

DANGEROUS (both engines, exit 3): a probable rename written as drop plus add
(drop-add-rename); the new column is empty and every extra_chars value is lost
(column-values-lost). The downgrade re-adds extra_chars filled with zeros (lossy).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "loss_rename_as_drop_add"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("results", sa.Column("extra_keystrokes", sa.Integer, nullable=True))
    op.drop_column("results", "extra_chars")


def downgrade() -> None:
    op.add_column("results", sa.Column("extra_chars", sa.Integer, nullable=False, server_default="0"))
    op.drop_column("results", "extra_keystrokes")
