"""A unique index on results (player_id, mode, mode_param): "one result per mode".

DANGEROUS (both engines, exit 3): the existing data holds many results per player and
mode, so CREATE UNIQUE INDEX fails on the copy (migration-failed, naming the duplicate
rows).
"""

from __future__ import annotations

from alembic import op

revision = "fail_unique_over_duplicates"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("uq_results_player_mode", "results", ["player_id", "mode", "mode_param"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_results_player_mode", table_name="results")
