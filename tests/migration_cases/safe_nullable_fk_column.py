"""A seasons table and a nullable personal_bests.season_id referencing it.

PostgreSQL: the foreign key is added NOT VALID and validated in its own autocommit step.
SQLite: personal_bests is rebuilt by a batch copy; no table references personal_bests,
so nothing cascades. SAFE (both engines, exit 0): every existing row keeps its values
(season_id NULL). The downgrade drops the column, the constraint and the table (exact).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_nullable_fk_column"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

FK = "fk_personal_bests_season_id_seasons"


def upgrade() -> None:
    op.create_table(
        "seasons",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seasons")),
        sa.UniqueConstraint("name", name=op.f("uq_seasons_name")),
    )
    if op.get_context().dialect.name == "postgresql":
        op.add_column("personal_bests", sa.Column("season_id", sa.Integer, nullable=True))
        op.create_foreign_key(
            op.f(FK), "personal_bests", "seasons", ["season_id"], ["id"], ondelete="SET NULL",
            postgresql_not_valid=True,
        )
        with op.get_context().autocommit_block():
            op.execute(f"ALTER TABLE personal_bests VALIDATE CONSTRAINT {FK}")
    else:
        with op.batch_alter_table("personal_bests") as batch:
            batch.add_column(sa.Column("season_id", sa.Integer, nullable=True))
            batch.create_foreign_key(op.f(FK), "seasons", ["season_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("personal_bests") as batch:
        batch.drop_constraint(op.f(FK), type_="foreignkey")
        batch.drop_column("season_id")
    op.drop_table("seasons")
