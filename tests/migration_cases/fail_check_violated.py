"""A CHECK constraint best_wpm < 60 on progress, which existing rows violate.

DANGEROUS (both engines, exit 3): PostgreSQL validates the constraint against every row
and refuses; the SQLite batch copy into the constrained table fails on the first
violating row. migration-failed, naming the violating rows (progress rows with
best_wpm >= 60).
"""

from __future__ import annotations

from alembic import op

revision = "fail_check_violated"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("progress") as batch:
        batch.create_check_constraint(op.f("ck_progress_best_wpm_below_60"), "best_wpm < 60")


def downgrade() -> None:
    with op.batch_alter_table("progress") as batch:
        batch.drop_constraint(op.f("ck_progress_best_wpm_below_60"), type_="check")
