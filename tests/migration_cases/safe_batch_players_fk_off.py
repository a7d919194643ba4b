"""Widen players.username from VARCHAR(32) to VARCHAR(64) through a batch operation,
following the `batch-rebuild-cascade` hint: foreign keys are turned off outside the
transaction before the rebuild, back on (and checked) after it, both ways.

SAFE (both engines, exit 0). It is cascade_sqlite_batch_players done right:

- SQLite: `PRAGMA foreign_keys=OFF` runs inside Alembic's `autocommit_block()`, where
  no transaction is open (game_core.db's begin hook issues no BEGIN on an AUTOCOMMIT
  connection), so it takes effect; the rebuild's DROP TABLE players then deletes no
  results, progress or personal_bests row. `PRAGMA foreign_key_check` after the batch
  fails the revision if the rebuild left an orphan. With a hook that opened a
  transaction there too, the PRAGMA was ignored and every child row was lost
  (issue 18, finding 2).
- PostgreSQL: widening a VARCHAR is a catalog-only change; the PRAGMAs are SQLite's
  only and are not run.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "safe_batch_players_fk_off"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def _foreign_keys(on: bool) -> None:
    # The dialect is known offline too (op.get_bind() is not): the static pass reads this.
    if op.get_context().dialect.name != "sqlite":
        return
    with op.get_context().autocommit_block():
        op.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    if on:
        orphans = op.get_bind().execute(sa.text("PRAGMA foreign_key_check")).fetchall() if not op.get_context().as_sql else []
        if orphans:
            raise RuntimeError(f"the rebuild left {len(orphans)} rows whose parent is gone: {orphans[:3]}")


def _username(length: int, was: int) -> None:
    _foreign_keys(on=False)
    with op.batch_alter_table("players") as batch:
        batch.alter_column("username", type_=sa.String(length), existing_type=sa.String(was), existing_nullable=False)
    _foreign_keys(on=True)


def upgrade() -> None:
    _username(64, was=32)


def downgrade() -> None:
    _username(32, was=64)
