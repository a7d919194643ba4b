"""Rescale results.accuracy from percent to a 0..1 fraction in place.

The incident's kind of change: every row is kept, no constraint objects, the type is
unchanged, and every stored value now means something else.

DANGEROUS (both engines, exit 3): values-changed on results.accuracy for every row above
1 (all of them); the game's audits fail on rows that passed before (new-audit-failures:
accuracy no longer matches the keystrokes). The downgrade multiplies back, but the
2-decimal column (or float arithmetic on SQLite) cannot return the original values
(round-trip-lossy).
"""

from __future__ import annotations

from alembic import op

revision = "value_accuracy_rescaled"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE results SET accuracy = accuracy / 100 WHERE accuracy > 1")


def downgrade() -> None:
    op.execute("UPDATE results SET accuracy = accuracy * 100 WHERE accuracy <= 1")
