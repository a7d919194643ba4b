"""A CHECK constraint on results.accuracy added and validated in one step.

PostgreSQL only. DANGEROUS as a lock-heavy statement: every row satisfies it, but ADD
CONSTRAINT scans results under ACCESS EXCLUSIVE, reported as a WARNING
(pg-constraint-validated). Exit 0 with the default --fail-on error, exit 3 with
--fail-on warning. The downgrade drops the constraint (exact).
"""

from __future__ import annotations

from alembic import op

revision = "lock_check_validated_one_step"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_check_constraint(op.f("ck_results_accuracy_percent"), "results", "accuracy >= 0 AND accuracy <= 100")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_results_accuracy_percent"), "results", type_="check")
