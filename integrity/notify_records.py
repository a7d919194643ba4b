"""What the ledger remembers of notifications: each condition's state as last notified and
the delivery errors (read by integrity.notify, which sends, and integrity.status, which
shows a `notifications` row; kept apart so neither imports the other)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ConditionRow:
    key: str
    active: bool
    detail: str
    changed_at: datetime
    run_id: str | None
    last_error: str | None
    error_at: datetime | None


def read_rows(ledger, *, prefix: str | None = None) -> dict[str, ConditionRow]:
    import sqlalchemy as sa

    from integrity.ledger import _aware, notify_conditions as table

    query = sa.select(table).order_by(table.c.key)
    if prefix:
        query = query.where(table.c.key.like(prefix.replace("%", r"\%").replace("_", r"\_") + "%", escape="\\"))
    with ledger.engine.connect() as connection:
        return {
            row["key"]: ConditionRow(row["key"], bool(row["active"]), row["detail"], _aware(row["changed_at"]),
                                     row["run_id"], row["last_error"], _aware(row["error_at"]))
            for row in connection.execute(query).mappings()
        }
