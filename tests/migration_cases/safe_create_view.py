"""A read-only view player_best_wpm over results.

SAFE (both engines, exit 0): no table or value changes. The downgrade drops the view
(exact).
"""

from __future__ import annotations

from alembic import op

revision = "safe_create_view"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE VIEW player_best_wpm AS "
        "SELECT player_id, mode, mode_param, MAX(wpm) AS best_wpm, COUNT(*) AS tests "
        "FROM results GROUP BY player_id, mode, mode_param"
    )


def downgrade() -> None:
    op.execute("DROP VIEW player_best_wpm")
