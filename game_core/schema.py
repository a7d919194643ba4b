"""The game's data model (SQLAlchemy Core tables; changed only by an Alembic revision).

`results` is the append-only source of truth. `progress` and `personal_bests` are caches
of it that `game_core.rebuild` can always recompute and the audits compare against it.
Plausible-range rules (accuracy 0..100, wpm limits, durations) are enforced at write
time by `game_core.store` and checked by the audits, not by CHECK constraints: the
audits must be able to see, count and report bad rows that reached a database some
other way (an old client, a migration, a restore).

Core tables rather than ORM classes: the integrity CLI imports this module on commands
that must start fast, and `sqlalchemy.orm` alone costs about 0.2 s.
"""

from __future__ import annotations

import sqlalchemy as sa

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

MODES = ("words", "time")
UTC_DATETIME = sa.DateTime(timezone=True)
# Two decimals, as stored; returned as float (SQLite has no exact decimal type anyway).
TWO_DECIMALS = sa.Numeric(7, 2, asdecimal=False)

store_identity = sa.Table(
    "store_identity",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("identity_uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("created_at", UTC_DATETIME, nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
    comment="One row: the UUID that identifies this store across backups and restores.",
)

players = sa.Table(
    "players",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # "personal": data about a person, replaced by a stable pseudonym in a sanitised
    # snapshot (`integrity snapshot export --sanitize` reads this marking and nothing else).
    sa.Column("username", sa.String(32), nullable=False, unique=True, info={"personal": True}),
    sa.Column("created_at", UTC_DATETIME, nullable=False),
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "player_id",
        sa.Integer,
        sa.ForeignKey("players.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("mode_param", sa.Integer, nullable=False, comment="word count or seconds"),
    sa.Column("started_at", UTC_DATETIME, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("correct_word_chars", sa.Integer, nullable=False),
    sa.Column("correct_spaces", sa.Integer, nullable=False),
    sa.Column("correct_chars", sa.Integer, nullable=False),
    sa.Column("incorrect_chars", sa.Integer, nullable=False),
    sa.Column("extra_chars", sa.Integer, nullable=False),
    sa.Column("missed_chars", sa.Integer, nullable=False),
    sa.Column("correct_keystrokes", sa.Integer, nullable=False),
    sa.Column("incorrect_keystrokes", sa.Integer, nullable=False),
    sa.Column("wpm", TWO_DECIMALS, nullable=False),
    sa.Column("raw_wpm", TWO_DECIMALS, nullable=False),
    sa.Column("accuracy", TWO_DECIMALS, nullable=False),
    sa.Column("xp", sa.Integer, nullable=False),
    sa.Column("metrics_version", sa.SmallInteger, nullable=False),
    sa.Column("created_at", UTC_DATETIME, nullable=False),
    sa.UniqueConstraint("player_id", "started_at"),
    sa.CheckConstraint("mode IN ('words', 'time')", name="mode"),
    sa.Index("ix_results_leaderboard", "mode", "mode_param", "wpm"),
)

progress = sa.Table(
    "progress",
    metadata,
    sa.Column(
        "player_id",
        sa.Integer,
        sa.ForeignKey("players.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("xp", sa.BigInteger, nullable=False),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("tests_completed", sa.Integer, nullable=False),
    sa.Column("time_typing_ms", sa.BigInteger, nullable=False),
    sa.Column("best_wpm", TWO_DECIMALS, nullable=False),
    sa.Column("updated_at", UTC_DATETIME, nullable=False),
)

personal_bests = sa.Table(
    "personal_bests",
    metadata,
    sa.Column(
        "player_id",
        sa.Integer,
        sa.ForeignKey("players.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("mode", sa.String(8), primary_key=True),
    sa.Column("mode_param", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column(
        "result_id",
        sa.Integer,
        sa.ForeignKey("results.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("wpm", TWO_DECIMALS, nullable=False),
    sa.Column("accuracy", TWO_DECIMALS, nullable=False),
)

GAME_TABLES = ("store_identity", "players", "results", "progress", "personal_bests")
