"""results.xp from INTEGER to BIGINT with ALTER COLUMN TYPE.

PostgreSQL only. DANGEROUS as a lock-heavy statement, reported as WARNINGS: the statement rewrites results and its indexes
under ACCESS EXCLUSIVE (pg-table-rewrite statically; table-rewritten measured from
relfilenode). Every value is kept (a widening), so exit 0 with the default --fail-on
error and exit 3 with --fail-on warning. The downgrade converts back exactly.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "lock_alter_type_rewrite"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("results", "xp", type_=sa.BigInteger, existing_type=sa.Integer, existing_nullable=False)


def downgrade() -> None:
    op.alter_column("results", "xp", type_=sa.Integer, existing_type=sa.BigInteger, existing_nullable=False)
