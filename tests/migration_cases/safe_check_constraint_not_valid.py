"""A CHECK constraint level >= 1 on progress, which every row satisfies.

PostgreSQL: added NOT VALID (no scan under the strong lock), then validated in its own
autocommit step (VALIDATE CONSTRAINT takes only SHARE UPDATE EXCLUSIVE). SQLite: a
batch rebuild of progress, which no table references. SAFE (both engines, exit 0). The
downgrade drops the constraint (exact).
"""

from __future__ import annotations

from alembic import op

revision = "safe_check_constraint_not_valid"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

NAME = "ck_progress_level_at_least_1"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.create_check_constraint(op.f(NAME), "progress", "level >= 1", postgresql_not_valid=True)
        with op.get_context().autocommit_block():
            op.execute(f"ALTER TABLE progress VALIDATE CONSTRAINT {NAME}")
    else:
        with op.batch_alter_table("progress") as batch:
            batch.create_check_constraint(op.f(NAME), "level >= 1")


def downgrade() -> None:
    with op.batch_alter_table("progress") as batch:
        batch.drop_constraint(op.f(NAME), type_="check")
