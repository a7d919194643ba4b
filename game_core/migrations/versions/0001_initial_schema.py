"""Initial schema: store identity, players, results, progress, personal bests.

Revision ID: 0001_initial_schema
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0001_initial_schema"
down_revision = None
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)
TWO_DECIMALS = sa.Numeric(7, 2, asdecimal=False)


def upgrade() -> None:
    store_identity = op.create_table(
        "store_identity",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("identity_uuid", sa.String(36), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_store_identity_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_identity")),
        sa.UniqueConstraint("identity_uuid", name=op.f("uq_store_identity_identity_uuid")),
        comment="One row: the UUID that identifies this store across backups and restores.",
    )
    op.create_table(
        "players",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_players")),
        sa.UniqueConstraint("username", name=op.f("uq_players_username")),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("player_id", sa.Integer, nullable=False),
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
        sa.CheckConstraint("mode IN ('words', 'time')", name=op.f("ck_results_mode")),
        sa.ForeignKeyConstraint(
            ["player_id"], ["players.id"], name=op.f("fk_results_player_id_players"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint("player_id", "started_at", name=op.f("uq_results_player_id_started_at")),
    )
    op.create_index("ix_results_leaderboard", "results", ["mode", "mode_param", "wpm"])
    op.create_table(
        "progress",
        sa.Column("player_id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("xp", sa.BigInteger, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("tests_completed", sa.Integer, nullable=False),
        sa.Column("time_typing_ms", sa.BigInteger, nullable=False),
        sa.Column("best_wpm", TWO_DECIMALS, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["player_id"], ["players.id"], name=op.f("fk_progress_player_id_players"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("player_id", name=op.f("pk_progress")),
    )
    op.create_table(
        "personal_bests",
        sa.Column("player_id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("mode_param", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("result_id", sa.Integer, nullable=False),
        sa.Column("wpm", TWO_DECIMALS, nullable=False),
        sa.Column("accuracy", TWO_DECIMALS, nullable=False),
        sa.ForeignKeyConstraint(
            ["player_id"], ["players.id"], name=op.f("fk_personal_bests_player_id_players"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["result_id"], ["results.id"], name=op.f("fk_personal_bests_result_id_results"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("player_id", "mode", "mode_param", name=op.f("pk_personal_bests")),
    )
    op.create_index(op.f("ix_personal_bests_result_id"), "personal_bests", ["result_id"])
    # The identity backups, restores and dry runs compare: created once, with the store.
    op.bulk_insert(
        store_identity,
        [{"id": 1, "identity_uuid": str(uuid.uuid4()), "created_at": datetime.now(timezone.utc)}],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_personal_bests_result_id"), table_name="personal_bests")
    op.drop_table("personal_bests")
    op.drop_table("progress")
    op.drop_index("ix_results_leaderboard", table_name="results")
    op.drop_table("results")
    op.drop_table("players")
    op.drop_table("store_identity")
