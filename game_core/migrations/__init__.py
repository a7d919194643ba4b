"""The game's Alembic history and the programmatic Alembic configuration.

No alembic.ini is needed: `alembic_config()` points Alembic at this package. `env.py`
follows the Alembic cookbook pattern and uses the connection handed to it in
`config.attributes["connection"]`, so the integrity tool can run it on a scratch copy.
"""

from __future__ import annotations

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(connection=None, url: str | None = None):
    """An Alembic Config for this history, bound to a connection or a URL."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config
