"""Point-in-time recovery on the field's own engines: Litestream for SQLite, pgBackRest for
PostgreSQL (issue 16). `engine.py` is the protocol both implement; `engine_for` picks one
from the configured database; `operations.py` holds what `integrity pitr ...` runs."""

from __future__ import annotations

from game_core.errors import PreconditionFailed


class PitrNotEnabled(PreconditionFailed):
    """`[pitr] enabled` is false: there is no continuous archive to read or run."""


def require_enabled(settings) -> None:
    if not settings.pitr.enabled:
        raise PitrNotEnabled("point-in-time recovery is not enabled; set `enabled = true` under [pitr] in "
                             f"{settings.config_display} (or INTEGRITY_PITR__ENABLED=true), then run `integrity pitr config`")


def engine_for(settings):
    """The engine of the configured database: Litestream for a SQLite file, pgBackRest for
    PostgreSQL (each imported only when chosen). A missing program is exit 4 naming how to
    install it."""
    from game_core.db import SQLITE, parse_database_url

    if parse_database_url(settings.database_url).kind == SQLITE:
        from integrity.pitr.litestream import LitestreamEngine

        return LitestreamEngine.from_settings(settings)
    from integrity.pitr.pgbackrest import PgBackRestEngine

    return PgBackRestEngine.from_settings(settings)
