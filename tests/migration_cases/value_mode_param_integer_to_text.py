"""personal_bests.mode_param from INTEGER to VARCHAR(8) ("it is a label anyway").

DANGEROUS (both engines, exit 3): a number becomes text (type-meaning-change): '100'
now sorts before '15', and comparisons with results.mode_param change meaning. On SQLite
the batch copy CASTs every value to TEXT (values-changed: another storage class, every
personal_bests row). The downgrade converts back (PostgreSQL: USING mode_param::integer).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "value_mode_param_integer_to_text"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("personal_bests") as batch:
        batch.alter_column("mode_param", type_=sa.String(8), existing_type=sa.Integer, existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("personal_bests") as batch:
        batch.alter_column(
            "mode_param",
            type_=sa.Integer,
            existing_type=sa.String(8),
            existing_nullable=False,
            postgresql_using="mode_param::integer",
        )
