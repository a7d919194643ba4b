"""Delete the first five players ("test accounts"), declared; their children cascade.

DANGEROUS (both engines, exit 3): the players delete is declared (expect: delete, at most
5 rows), but results, progress and personal_bests reference players with ON DELETE
CASCADE: their rows of those players go too, undeclared (cascade-rows-lost: 5 results
per player, one progress row per player, and their personal bests). The downgrade
cannot restore anything (round-trip-lossy).
"""

from __future__ import annotations

from alembic import op

revision = "cascade_delete_some_players"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None

integrity = {
    "expect": [
        {"table": "players", "change": "delete", "max_rows": 5, "reason": "remove the five test accounts"},
    ],
}


def upgrade() -> None:
    op.execute("DELETE FROM players WHERE id <= 5")


def downgrade() -> None:
    # The deleted players cannot be brought back from the migration itself.
    pass
