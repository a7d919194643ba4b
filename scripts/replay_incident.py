#!/usr/bin/env python3
"""Replay the incident this project exists for, end to end, through the real command lines.

    .venv/bin/python scripts/replay_incident.py                       # SQLite, in a new temp dir
    .venv/bin/python scripts/replay_incident.py --engine postgresql \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/incident   # an EMPTY database
    ... --workdir DIR --json-summary PATH
    .venv/bin/python scripts/replay_incident.py --pitr                # SQLite, Litestream replicating
    .venv/bin/python scripts/replay_incident.py --pitr --engine postgresql   # a throwaway cluster, pgBackRest

The story (DESIGN.md section 1), each step a real `typing-game`, `integrity` or `alembic`
process with a private XDG_DATA_HOME and INTEGRITY_* environment:

1. The game is played (simulate, then line-mode play), a good backup is taken and deeply
   verified.
2. The backup job is misconfigured the way real teams do it: on PostgreSQL a `pg_dump`
   wrapper first on PATH adds `--schema-only`, and a job points at a stale copy of the
   database; on SQLite jobs point at an emptied copy and at an old copy of the file. All
   carry the store's identity; each backup must come out suspect (exit 3).
3. More play; then a revision "to optimise retrieval" (levels as text, wpm rounded to
   whole numbers in a rebuilt table, missed characters of time tests dropped) written
   into a copy of the migration history. `integrity migrate dry-run` fails it; it is
   applied anyway with a hand-written alembic.ini and plain `alembic upgrade head`. The
   game tries to keep writing.
4. Detection: status, probe (and its metric), audit, and the alert rules in alerts/
   through `promtool test rules` on the metrics file those commands wrote. The audit
   refuses the revision this code does not know (exit 4, naming it, the head and the
   fix) instead of judging tables it does not understand; its failed run is an alert.
5. Recovery: a first restore is killed after its safety backup; `restore latest` must
   still pick the good backup (never a suspect or safety one); `--keep-newer` salvages
   every result written since that can be rebuilt (rounded wpm recomputed from counts).
6. Afterwards audit, probe and drill pass, and the rows lost are exactly the ones nothing
   can rebuild (the time tests whose missed characters the migration dropped), counted.

With --pitr (SQLite; issue 16), point-in-time recovery is on from the start: `integrity pitr
replicate` (Litestream) runs in the background from right after `integrity init`, waited on
until `integrity pitr status` exits 0; the recovery act then runs `integrity pitr last-clean`
and `integrity restore --last-clean --keep-newer` instead of `restore latest --keep-newer`,
and the books hold that nothing is lost: the moment found lies within one resolution step of
the bad revision's application (the plain-alembic step's start), and every player and result
written before it is back with the values the game wrote. The replicator is stopped with
SIGTERM at the end whatever happened. On PostgreSQL the server at 127.0.0.1:5432 is never
reconfigured: --pitr starts a throwaway cluster of its own with WAL archiving through
pgBackRest (tests/pg_cluster.py's ThrowawayCluster; archive_command set as `integrity pitr
config` names it), runs the stanza-create and full backup commands `integrity pitr config`
prints right after `integrity init`, plays the story in a database of that cluster, and
removes the cluster at the end.

Each step prints its command, exit code and a few key lines. The script exits 1 when any
step does not behave as the story expects, and writes what it saw to --json-summary.
It reads the database directly only to keep its own books (which results existed before
and after), never to change it: every change goes through the programs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
# The replicator is a real background process whoever runs the script's other steps
# (tests/test_incident.py swaps the module `subprocess` for an in-process stand-in).
from subprocess import DEVNULL, STDOUT, Popen, TimeoutExpired

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: typing-game, integrity, alembic
REVISION = "0002_optimise_retrieval"
PLAYERS, TESTS_PER_PLAYER = 200, 10  # before the good backup
LATE_PLAYERS, LATE_TESTS = 12, 5  # after it, before the migration
KILLED = -9  # a subprocess killed by SIGKILL
# Deadlines of the --pitr waits (conditions polled, never a fixed sleep): the replica caught
# up, the replicator gone after SIGTERM.
REPLICA_DEADLINE_SECONDS, STOP_DEADLINE_SECONDS = 90, 30
LAG_OBJECTIVE_SECONDS = 10  # [pitr] lag_objective_seconds's default, which the story keeps
# PostgreSQL: the throwaway cluster's archive_timeout (and [pitr] archive_timeout_seconds),
# under the lag objective so that `pitr status` can say it is met while the story runs.
ARCHIVE_TIMEOUT_SECONDS = 5

REVISION_SOURCE = '''"""Optimise data retrieval: levels as labels, whole-number wpm, lean time tests.

(The change of the incident. Every line of it reads reasonably in a review.)
"""
from alembic import op
import sqlalchemy as sa

revision = "0002_optimise_retrieval"
down_revision = "0001_initial_schema"
branch_labels = None
depends_on = None


def upgrade():
    # The profile shows the level as a label: store it as one (a rebuilt table).
    with op.batch_alter_table("progress", recreate="always") as batch:
        batch.alter_column("level", type_=sa.Text(), existing_type=sa.Integer(), existing_nullable=False,
                           postgresql_using="level::text")
    # Leaderboards sort whole numbers faster than decimals.
    op.execute("UPDATE results SET wpm = ROUND(wpm)")
    with op.batch_alter_table("results") as batch:
        batch.alter_column("wpm", type_=sa.Integer(), existing_type=sa.Numeric(7, 2), existing_nullable=False)
        batch.alter_column("missed_chars", nullable=True, existing_type=sa.Integer())
    # A time test has no end of the prompt to miss: nobody reads its missed characters.
    op.execute("UPDATE results SET missed_chars = NULL WHERE mode = 'time'")


def downgrade():
    op.execute("UPDATE results SET missed_chars = 0 WHERE missed_chars IS NULL")
    with op.batch_alter_table("results") as batch:
        batch.alter_column("missed_chars", nullable=False, existing_type=sa.Integer())
        batch.alter_column("wpm", type_=sa.Numeric(7, 2), existing_type=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table("progress", recreate="always") as batch:
        batch.alter_column("level", type_=sa.Integer(), existing_type=sa.Text(), existing_nullable=False,
                           postgresql_using="level::integer")
'''


@dataclass
class Step:
    act: int
    command: str
    exit_code: int
    expected: list[int] | None  # None: any (shown, not judged)
    ok: bool
    lines: list[str]
    problem: str = ""


@dataclass
class Story:
    engine: str
    workdir: Path
    url: str
    quiet: bool = False
    steps: list[Step] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    act: int = 0
    extra_path: str | None = None
    pitr: bool = False
    replicator: Popen | None = None
    cluster: object | None = None  # --pitr on PostgreSQL: tests/pg_cluster.py's ThrowawayCluster
    pg_home: Path | None = None  # its integrity state and pgBackRest repository, reachable by the server's OS user

    # ------------------------------------------------------------------ output

    def say(self, text: str = "") -> None:
        if not self.quiet:
            print(self.shorten(text), flush=True)

    def shorten(self, text: str) -> str:
        """Paths under the work directory as $WORK, the database URL as $DATABASE_URL:
        the same story reads the same wherever it ran."""
        text = text.replace(str(self.workdir), "$WORK")
        if self.pg_home is not None:
            text = text.replace(str(self.pg_home), "$PITR_HOME")
        if self.cluster is not None:
            text = text.replace(str(self.cluster.directory), "$CLUSTER")
        if self.engine == "postgresql" and self.url:
            text = text.replace(self.url, "$DATABASE_URL")
        return text

    def heading(self, act: int, title: str) -> None:
        self.act = act
        self.say()
        self.say(f"== {act}. {title}")

    def fail(self, problem: str) -> None:
        self.failures.append(f"act {self.act}: {problem}")
        self.say(f"   !! {problem}")

    def check(self, condition: bool, problem: str) -> bool:
        if not condition:
            self.fail(problem)
        return condition

    # ------------------------------------------------------------------ processes

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRITY_") and k != "GAME_DATABASE_URL"}
        env.update(
            XDG_DATA_HOME=str(self.workdir / "xdg"),
            COLUMNS="130",
            # The project first: an old editable install may map a package elsewhere.
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        if self.engine == "postgresql":
            env.update(INTEGRITY_DATABASE_URL=self.url, GAME_DATABASE_URL=self.url)
        if self.pitr:
            env.update(INTEGRITY_PITR__ENABLED="true", INTEGRITY_PITR__LAG_OBJECTIVE_SECONDS=str(LAG_OBJECTIVE_SECONDS))
        if self.pitr and self.cluster is not None:
            env.update(INTEGRITY_STATE__DIR=str(self.state_dir), INTEGRITY_PITR__REPOSITORY=str(self.pg_home / "repo"),
                       INTEGRITY_PITR__PG_DATA_DIR=str(self.cluster.data),
                       INTEGRITY_PITR__ARCHIVE_TIMEOUT_SECONDS=str(ARCHIVE_TIMEOUT_SECONDS))
        env.update(extra)
        return env

    def run(self, argv: list[str], expect: tuple[int, ...] | None, *, keep: str | None = None, show: int = 4,
            always: str | None = r"^Error:", stdin: str | None = None, env: dict[str, str] | None = None,
            prefix: str = "") -> subprocess.CompletedProcess:
        """Run one program of the story; print the command, its exit code and the first
        `show` lines matching `keep` (a regex; else the first `show` lines), plus every
        line matching `always` (a verdict)."""
        program = argv[0]
        command = [str(BIN / program), *argv[1:]]
        shown = prefix + " ".join(argv)
        self.say(f"$ {shown}")
        started = time.monotonic()
        completed = subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=self.workdir,
                                   env=env or self.environ(), timeout=300)
        seconds = time.monotonic() - started
        output = (completed.stdout + completed.stderr).splitlines()
        # Every run names its database and config on stderr: known, and noise here.
        output = [line.rstrip() for line in output if line.strip() and not re.match(r"^(database|config)\s*[:=]", line)]
        shown_lines = [line for line in output if re.search(keep, line)] if keep else output
        chosen = set(shown_lines[:show]) | {line for line in output if always and re.search(always, line)}
        lines = [line for line in output if line in chosen]
        for line in lines:
            self.say("  " + line)
        self.say(f"  -> exit {completed.returncode}  ({seconds:.1f}s)")
        ok = expect is None or completed.returncode in expect
        step = Step(self.act, self.shorten(shown), completed.returncode, list(expect) if expect else None, ok,
                    [self.shorten(line) for line in lines])
        if "Traceback (most recent call last)" in completed.stdout + completed.stderr:
            step.ok = False
            step.problem = "printed a traceback"
            self.fail(f"`{step.command}` printed a traceback")
        if not ok:
            step.problem = f"expected exit {' or '.join(map(str, expect))}, got {completed.returncode}"
            self.fail(f"`{step.command}`: {step.problem}")
            for line in output[-8:]:
                self.say("     | " + line)
        self.steps.append(step)
        completed.output_lines = output
        return completed

    def integrity(self, *args: str, expect: tuple[int, ...] | None = (0,), **kwargs) -> subprocess.CompletedProcess:
        return self.run(["integrity", *args], expect, **kwargs)

    def game(self, *args: str, expect: tuple[int, ...] | None = (0,), **kwargs) -> subprocess.CompletedProcess:
        return self.run(["typing-game", *args], expect, **kwargs)

    def integrity_json(self, *args: str) -> dict:
        """A read whose output the script needs (not a step of the story)."""
        completed = subprocess.run([str(BIN / "integrity"), "--json", *args], capture_output=True, text=True,
                                   cwd=self.workdir, env=self.environ(), timeout=300)
        try:
            return json.loads(completed.stdout)
        except json.JSONDecodeError:
            self.fail(f"`integrity --json {' '.join(args)}` printed no JSON (exit {completed.returncode}): "
                      f"{completed.stderr.strip()[-300:]}")
            return {}

    # ------------------------------------------------------------------ the database, read for the books

    @property
    def live_url(self) -> str:
        return self.url if self.engine == "postgresql" else f"sqlite:///{self.sqlite_path}"

    @property
    def state_dir(self) -> Path:
        if self.pg_home is not None:
            return self.pg_home / "state"
        return self.workdir / "xdg" / "typing-game" / "state"

    @property
    def sqlite_path(self) -> Path:
        return self.workdir / "xdg" / "typing-game" / "game.db"

    def query(self, sql: str, url: str | None = None) -> list[tuple]:
        import sqlalchemy as sa

        engine = sa.create_engine(url or self.live_url)
        try:
            with engine.connect() as connection:
                return [tuple(row) for row in connection.execute(sa.text(sql))]
        finally:
            engine.dispose()

    def results_by_key(self) -> dict[tuple, tuple]:
        """{(username, started_at): (wpm, missed_chars, mode)} of every result in live."""
        rows = self.query(
            "SELECT p.username, r.started_at, r.wpm, r.missed_chars, r.mode "
            "FROM results r JOIN players p ON p.id = r.player_id"
        )
        return {(u, str(s)): (float(w), m, mode) for u, s, w, m, mode in rows}

    def usernames(self) -> set[str]:
        return {name for (name,) in self.query("SELECT username FROM players")}


# ---------------------------------------------------------------------- helpers


def typed_words(count: int, seed: int, typo_at: int | None = None) -> str:
    """What a player types for the game's prompt of `count` words with this seed."""
    from game_core.typing_test import prompt_words

    words = prompt_words(count, seed=seed)
    if typo_at is not None:
        words[typo_at] = words[typo_at][::-1] if len(words[typo_at]) > 1 else words[typo_at] + "x"
    return " ".join(words) + "\n"


def parse_int(text: str) -> int:
    return int(text.replace(",", ""))


def backup_ids(story: Story) -> dict[str, dict]:
    document = story.integrity_json("backup", "list")
    return {b["id"]: b for b in document.get("result", {}).get("backups", [])}


def created_id(story: Story, completed) -> str | None:
    for line in completed.output_lines:
        match = re.match(r"backup (\S+) (created|written)", line.strip())
        if match:
            return match.group(1)
    match = re.search(r"backup (\d{8}T\d{6}Z-[0-9a-f]{6})", "\n".join(completed.output_lines))
    return match.group(1) if match else None


def write_pg_dump_wrapper(story: Story) -> Path:
    """The misconfigured job's `pg_dump`: someone added --schema-only "to make backups
    faster" in a wrapper that comes first on the job's PATH."""
    from integrity.db.pg_tools import find_tool

    real = find_tool("pg_dump")  # the real one, found before the wrapper is on PATH
    if real is None:
        raise SystemExit("pg_dump not found: install the PostgreSQL client tools")
    folder = story.workdir / "job-bin"
    folder.mkdir(exist_ok=True)
    wrapper = folder / "pg_dump"
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        # backup job wrapper: schema only, the data "is in the replicas anyway"
        case "$1" in --version|-V) exec {real} "$@";; esac
        exec {real} --schema-only "$@"
        """))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite file (the backup API: the live file is in WAL mode)."""
    src, dst = sqlite3.connect(f"file:{source}?mode=ro", uri=True), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def pg_admin_url(url: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).set(database="postgres").render_as_string(hide_password=False)


def pg_execute(url: str, *statements: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


# ---------------------------------------------------------------------- point-in-time recovery (--pitr)


def start_replicator(story: Story) -> None:
    """`integrity pitr replicate` in the background (it runs and restarts Litestream), its
    output in $WORK/pitr-replicate.log; then wait until the replica is caught up."""
    story.integrity("pitr", "config", keep=r"^point-in-time engine|^\s+(replicate|restore):", show=3)
    log = (story.workdir / "pitr-replicate.log").open("ab")
    story.say("$ integrity pitr replicate &  (in the background; its output: $WORK/pitr-replicate.log)")
    # A session of its own: the stop below can reach Litestream too if the replicator hangs.
    story.replicator = Popen([str(BIN / "integrity"), "pitr", "replicate"], stdout=log, stderr=STDOUT, stdin=DEVNULL, cwd=story.workdir, env=story.environ(), start_new_session=True)
    log.close()
    story.facts["pitr"] = {"replicator_pid": story.replicator.pid}
    story.say(f"  pid {story.replicator.pid}")
    wait_until_caught_up(story)


def shipped_apart_from_the_migration(story: Story) -> None:
    """Before the bad revision: every write so far shipped, and the clock into the next
    whole second. The archive lists its files by the second, and Litestream ships what one
    sync interval gathered as one file: writes shipped with the damage, or in the same
    listed second, cannot be restored without it, and those the migration damaged cannot be
    salvaged either (43 results were lost that way once, the revision applied within a
    second of alice's last game). In the story, as in life, a revision is written and
    applied a while after the last game; this keeps that true on a fast machine."""
    wait_until_caught_up(story, everything=True)
    time.sleep(1 - time.time() % 1)  # the first file of the damage is listed a second later


def wait_until_caught_up(story: Story, *, everything: bool = False) -> None:
    """Poll `integrity pitr status` until it exits 0 (something restorable, lag within the
    objective) and, with `everything`, says it is caught up (nothing written waits to be
    shipped: the damage is in the archive); with a deadline. The last reading is shown as a
    step of the story."""
    deadline = time.monotonic() + REPLICA_DEADLINE_SECONDS
    polls, first, nudged = 0, None, 0
    while True:
        polls += 1
        completed = subprocess.run([str(BIN / "integrity"), "pitr", "status"], capture_output=True, text=True,
                                   cwd=story.workdir, env=story.environ(), timeout=120)
        first = first or completed
        if completed.returncode == 0 and (not everything or "(caught up" in completed.stdout):
            break
        if time.monotonic() > deadline:
            break
        if story.replicator is not None and story.replicator.poll() is not None:
            break  # the replicator is gone: waiting longer cannot help
        if story.cluster is not None:
            # An idle server never reaches archive_timeout (it switches only after WAL it
            # counts as activity): right after the full backup nothing newer than the
            # backup's stop would be archived for a minute. A checkpoint is such WAL; the
            # switch archives its segment now.
            pg_execute(pg_admin_url(story.url), "CHECKPOINT", "SELECT pg_switch_wal()")
            nudged += 1
        time.sleep(0.5)
    waited = f"{polls} reading(s)"
    if first.returncode != 0:  # why it was not yet
        why = [line.strip() for line in (first.stdout + first.stderr).splitlines() if re.match(r"\s*(lag|Error|error)", line)]
        waited += f"; the first exited {first.returncode}" + (f": {why[0]}" if why else "")
    if nudged:
        waited += f"; CHECKPOINT and pg_switch_wal() after {nudged} of them"
    story.say(story.shorten(f"(waited for `integrity pitr status` to exit 0: {waited})"))
    reading = story.integrity("pitr", "status", keep=r"^(oldest|newest|lag)", show=3)
    if everything:
        story.check(any("(caught up" in line for line in reading.output_lines),
                    "the archive never caught up with the writes before the deadline")


def start_archiving_cluster(story: Story) -> None:
    """--pitr on PostgreSQL: a throwaway cluster with WAL archiving on (a restart-only
    setting, so never the shared server's), an empty `incident` database in it for the
    story, and a home for integrity's state and the pgBackRest repository that the server's
    OS user can reach (in memory when it can: pgBackRest fsyncs every file it restores)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_cluster import ThrowawayCluster

    if not shutil.which("pgbackrest"):
        raise SystemExit("Error: pgbackrest not found: install Debian's pgbackrest package (apt-get install pgbackrest)")
    story.pg_home = Path(tempfile.mkdtemp(prefix="incident-pitr-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    story.pg_home.chmod(0o755)
    # archive_command comes later, once `integrity pitr config` has named it (a reload).
    story.cluster = ThrowawayCluster.start(settings={"archive_mode": "on", "wal_level": "replica",
                                                     "archive_timeout": str(ARCHIVE_TIMEOUT_SECONDS)})
    story.url = story.cluster.url("incident")
    pg_execute(pg_admin_url(story.url), 'CREATE DATABASE "incident"')
    story.say(f"(a throwaway cluster archiving WAL: $CLUSTER, port {story.cluster.port}; archive_timeout "
              f"{ARCHIVE_TIMEOUT_SECONDS}s; the story's database: $DATABASE_URL; integrity's state and the pgBackRest "
              "repository: $PITR_HOME)")


def start_archiving(story: Story) -> None:
    """The cluster archives through pgBackRest as `integrity pitr config` says: its
    archive_command set (ALTER SYSTEM and a reload), then its stanza-create and a full
    backup run as the printed commands, as the server's OS user."""
    from integrity.db.scratch_cluster import as_os_user, owner_of

    config = story.integrity("pitr", "config", keep=r"^point-in-time engine|^\s+(stanza-create|archive_command)", show=3)
    printed = {}
    for line in config.output_lines:
        match = re.match(r"^\s*(archive_command) = (.+)$|^\s*(stanza-create|backup): (.+)$", line)
        if match and not (match.group(3) == "backup" and not line.endswith("--type=full")):
            printed[match.group(1) or match.group(3)] = match.group(2) or match.group(4)
    if not story.check(set(printed) == {"archive_command", "stanza-create", "backup"},
                       f"`integrity pitr config` did not name archive_command, stanza-create and a full backup: {printed}"):
        raise SystemExit(1)
    quoted = printed["archive_command"].replace("'", "''")
    pg_execute(pg_admin_url(story.url), f"ALTER SYSTEM SET archive_command = '{quoted}'", "SELECT pg_reload_conf()")
    story.say(f"(ALTER SYSTEM SET archive_command = '{printed['archive_command']}'; SELECT pg_reload_conf())")
    deadline = time.monotonic() + REPLICA_DEADLINE_SECONDS
    while "archive-push" not in story.query("SHOW archive_command")[0][0]:  # the reload is signalled, not awaited
        if time.monotonic() > deadline:
            story.fail("the cluster never took the new archive_command")
            raise SystemExit(1)
        time.sleep(0.2)
    user = owner_of(story.cluster.data)
    for step in ("stanza-create", "backup"):
        argv = as_os_user(printed[step].split(), user)
        story.run([shutil.which(argv[0]) or argv[0], *argv[1:]], (0,), keep=r"ERROR|WARN", show=2,
                  prefix="")
    wait_until_caught_up(story)


def stop_replicator(story: Story) -> None:
    """SIGTERM to the replicator (it stops Litestream cleanly), waited on; if it outlives the
    deadline, its whole session is killed. Its exit code goes into the summary."""
    replicator = story.replicator
    if replicator is None:
        return
    facts = story.facts.setdefault("pitr", {})
    if replicator.poll() is not None:
        facts["replicator_exit"] = replicator.returncode
        story.fail(f"the replicator had already stopped (exit {replicator.returncode}): see $WORK/pitr-replicate.log")
        return
    replicator.send_signal(signal.SIGTERM)
    try:
        replicator.wait(timeout=STOP_DEADLINE_SECONDS)
    except TimeoutExpired:
        os.killpg(replicator.pid, signal.SIGKILL)
        replicator.wait()
        story.fail(f"the replicator did not stop within {STOP_DEADLINE_SECONDS}s of SIGTERM: killed")
    facts["replicator_exit"] = replicator.returncode
    story.say(f"(the replicator, pid {replicator.pid}, stopped by SIGTERM: exit {replicator.returncode})")
    story.check(replicator.returncode == 0, f"the replicator exited {replicator.returncode} on SIGTERM, expected 0")


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_moment(text: str) -> datetime:
    """`2026-12-07 13:06:52Z` or `2026-12-07T13:06:52Z` as printed by `integrity`."""
    return datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00"))


# ---------------------------------------------------------------------- the acts


def act_1_play_and_back_up(story: Story) -> None:
    story.heading(1, "The game is played; a good backup is taken and deeply verified")
    story.integrity("init", keep=r"^(schema|repository)")
    if story.pitr and story.engine == "postgresql":
        start_archiving(story)
    elif story.pitr:
        start_replicator(story)
    story.game("simulate", "--players", str(PLAYERS), "--tests-per-player", str(TESTS_PER_PLAYER), "--seed", "1",
               keep=r"^(players|results) ")
    # The old copy the misconfigured job will back up later: the store as it was then.
    if story.engine == "sqlite":
        (story.workdir / "old").mkdir(exist_ok=True)
        sqlite_copy(story.sqlite_path, story.workdir / "old" / "game.db")
    else:
        import sqlalchemy as sa

        live = sa.make_url(story.url).database
        story.facts["stale_database"] = f"{live}_stale_copy"
        pg_execute(pg_admin_url(story.url), f'DROP DATABASE IF EXISTS "{live}_stale_copy"',
                   f'CREATE DATABASE "{live}_stale_copy" TEMPLATE "{live}"')
    story.game("play", "--player", "alice", "--mode", "words", "--words", "12", "--seed", "3", "--duration-ms", "7300",
               stdin=typed_words(12, 3, typo_at=4), prefix='echo "<12 words, one typo>" | ', keep=r"^\s+(wpm|accuracy) ")
    story.integrity("probe", keep=r"success|objective", show=2)  # the canaries exist before any damage
    good = story.integrity("backup", "create", keep=r"created|rows:")
    story.facts["good_backup"] = created_id(story, good)
    story.integrity("backup", "verify", "--deep", keep=r"deep|clean|ok", show=3)
    story.facts["results_in_good_backup"] = sorted(map(list, story.results_by_key()))


def act_2_misconfigured_backups(story: Story) -> None:
    story.heading(2, "The backup job is misconfigured: an empty and a stale backup, both suspect")
    suspects = []
    if story.engine == "postgresql":
        job_bin = write_pg_dump_wrapper(story)
        story.say("(the job's PATH starts with $WORK/job-bin, whose pg_dump runs the real one with --schema-only)")
        env = story.environ(PATH=f"{job_bin}{os.pathsep}{os.environ.get('PATH', '')}")
        completed = story.integrity("backup", "create", "--label", "nightly", expect=(3,), env=env,
                                    prefix="PATH=$WORK/job-bin:$PATH ", keep=r"SUSPECT|suspect|no data|schema-only", show=3)
        suspects.append(created_id(story, completed))
        stale_url = story.url.rsplit("/", 1)[0] + "/" + story.facts["stale_database"]
        env = story.environ(INTEGRITY_DATABASE_URL=stale_url)
        completed = story.integrity("backup", "create", "--label", "nightly", expect=(3,), env=env,
                                    prefix=f"INTEGRITY_DATABASE_URL=.../{story.facts['stale_database']} ",
                                    keep=r"SUSPECT|suspect|stale|taken from", show=3)
        suspects.append(created_id(story, completed))
    else:
        emptied = story.workdir / "emptied" / "game.db"
        emptied.parent.mkdir(exist_ok=True)
        sqlite_copy(story.sqlite_path, emptied)
        connection = sqlite3.connect(emptied)
        with connection:  # an "anonymised" copy for staging: every row but the store's identity gone
            for table in ("personal_bests", "progress", "results", "players"):
                connection.execute(f"DELETE FROM {table}")
        connection.close()
        for copy in (emptied, story.workdir / "old" / "game.db"):
            env = story.environ(INTEGRITY_DATABASE_URL=str(copy))
            completed = story.integrity("backup", "create", "--label", "nightly", expect=(3,), env=env,
                                        prefix=f"INTEGRITY_DATABASE_URL=$WORK/{copy.parent.name}/game.db ",
                                        keep=r"SUSPECT|suspect|stale|taken from|->", show=3)
            suspects.append(created_id(story, completed))
    story.facts["suspect_backups"] = suspects
    listed = backup_ids(story)
    for backup_id in suspects:
        if story.check(backup_id in listed, f"suspect backup {backup_id} not in `backup list`"):
            state = json.dumps(listed[backup_id]).lower()
            story.check("suspect" in state, f"backup {backup_id} is not listed as suspect: {listed[backup_id]}")
    story.integrity("backup", "list", keep=r"suspect|nightly|\d{8}T", show=4)


def write_revision(story: Story) -> tuple[Path, Path]:
    """The revision in a copy of the project's migration history, an alembic.ini for it
    (what the developer dry-runs), and the hand-written one with production's URL."""
    from game_core.migrations import MIGRATIONS_DIR

    history = story.workdir / "project" / "migrations"
    if history.exists():
        shutil.rmtree(history)
    shutil.copytree(MIGRATIONS_DIR, history, ignore=shutil.ignore_patterns("__pycache__"))
    (history / "versions" / f"{REVISION}.py").write_text(REVISION_SOURCE)
    project_ini = story.workdir / "project" / "alembic.ini"
    project_ini.write_text(f"[alembic]\nscript_location = {history}\n")
    hand_ini = story.workdir / "hand" / "alembic.ini"
    hand_ini.parent.mkdir(exist_ok=True)
    hand_ini.write_text(f"[alembic]\nscript_location = {history}\nsqlalchemy.url = {story.live_url}\n")
    return project_ini, hand_ini


def act_3_unchecked_migration(story: Story) -> None:
    story.heading(3, 'More play; a revision "to optimise retrieval" fails its dry run and is applied anyway')
    story.game("simulate", "--players", str(LATE_PLAYERS), "--tests-per-player", str(LATE_TESTS), "--seed", "2",
               keep=r"^(players|results) ")
    story.game("play", "--player", "alice", "--mode", "time", "--seconds", "15", "--seed", "4", "--duration-ms", "15000",
               stdin=typed_words(11, 4), prefix='echo "<11 words>" | ', keep=r"^\s+(wpm|accuracy) ")
    story.game("play", "--player", "bob", "--mode", "words", "--words", "15", "--seed", "5", "--duration-ms", "9100",
               stdin=typed_words(15, 5, typo_at=2), prefix='echo "<15 words, one typo>" | ', keep=r"^\s+(wpm|accuracy) ")
    story.facts["results_before_migration"] = {"|".join(k): v for k, v in story.results_by_key().items()}
    story.facts["players_before_migration"] = sorted(story.usernames())

    if story.pitr:
        shipped_apart_from_the_migration(story)

    project_ini, hand_ini = write_revision(story)
    story.say(f"(revision {REVISION} written into a copy of the history: $WORK/project/migrations)")
    story.integrity("migrate", "dry-run", "--alembic-config", str(project_ini), expect=(3,),
                    keep=r"^error", show=5, always=r"^dry run")
    # Its application time is the anchor point-in-time recovery is judged against (--pitr).
    started = datetime.now(UTC)
    story.run(["alembic", "-c", str(hand_ini), "upgrade", "head"], (0,), keep=r"Running upgrade", show=2)
    finished = datetime.now(UTC)
    story.facts["bad_revision_applied"] = {"started_at": utc_text(started), "finished_at": utc_text(finished)}
    # The game keeps being used: on a damaged schema it must now refuse, in one line.
    story.game("play", "--player", "carol", "--mode", "words", "--words", "12", "--seed", "6", "--duration-ms", "8000",
               stdin=typed_words(12, 6), prefix='echo "<12 words>" | ', expect=(4,), keep=r"^Error", show=0)
    story.game("simulate", "--players", "5", "--tests-per-player", "3", "--seed", "3", expect=(4,),
               keep=r"^Error", show=0)


def act_4_detection(story: Story) -> None:
    story.heading(4, "Detection: status, probe, audit and the alert rules fire")
    status = story.integrity("status", expect=(3, 4, 5), keep=r"^│ (schema|suspect)", show=2)
    story.check(re.search(r"unchecked|no (passing )?dry run|without (a )?dry run", "\n".join(status.output_lines), re.I)
                is not None, "status does not say the migration was applied without a dry run")
    story.integrity("probe", expect=(3,), keep=r"success|objective|wrong-type|mismatch|missing-row|exception", show=5)
    metrics_path = story.workdir / "xdg" / "typing-game" / "state" / "metrics.prom"
    ratio = _metric(metrics_path, "integrity_probe_success_ratio")
    story.facts["probe_success_ratio"] = ratio
    story.say(f"  metrics file: integrity_probe_success_ratio {ratio}")
    story.check(ratio is not None and ratio < 1, f"integrity_probe_success_ratio is {ratio}, expected < 1")
    # Rules written for this code's tables are not run on a revision it does not know:
    # refused in one line (integrity.guarded), a failed audit run that IntegrityJobFailed pages on.
    audit = story.integrity("audit", expect=(4,), keep=r"^Error", show=1)
    story.check(any(f"is at revision {REVISION}, which this code does not know" in line for line in audit.output_lines),
                f"integrity audit does not name the unknown revision {REVISION}")
    evaluate_alerts(story, metrics_path, firing=True)


def _metric(path: Path, name: str) -> float | None:
    if not path.exists():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.split()[-1])
    return None


# IntegrityAuditErrorRulesFailing is not among them: the audit refuses the unknown revision
# (exit 4) rather than counting failing rows on it; IntegrityJobFailed{job_name="audit_full"} pages.
INCIDENT_ALERTS = ("IntegrityRetrievalDrop", "IntegritySchemaUnchecked", "IntegrityBackupSuspect")


def evaluate_alerts(story: Story, metrics_path: Path, *, firing: bool) -> None:
    """`promtool test rules` on the metrics file the commands just wrote, with the
    input-series helper of tests/test_alert_rules.py: the incident's alerts fire (or,
    after the recovery, the live-damage ones are quiet)."""
    promtool = shutil.which("promtool")
    what = "fire" if firing else "are quiet"
    if promtool is None:
        story.say("$ promtool test rules ...  (skipped: promtool not installed; Debian's prometheus package)")
        story.facts.setdefault("promtool", "missing")
        return
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import test_alert_rules as rules_test
    except ImportError as exc:
        story.fail(f"cannot import tests/test_alert_rules.py for its input-series helper: {exc}")
        return
    text = metrics_path.read_text(encoding="utf-8")
    values = rules_test.samples(text)
    failed_jobs = sorted(dict(labels)["job_name"] for (name, labels), value in values.items()
                         if name == "integrity_job_last_exit_code" and value != 0)
    now = rules_test.NOW_MINUTES
    if firing:
        names = [*INCIDENT_ALERTS, "IntegrityJobFailed"]
        cases = [(now, name, rules_test.expect(name, {})) for name in INCIDENT_ALERTS]
        cases.append((now, "IntegrityJobFailed",
                      rules_test.expect("IntegrityJobFailed", *({"job_name": j} for j in failed_jobs))))
    else:
        names = ["IntegrityRetrievalDrop", "IntegrityAuditErrorRulesFailing", "IntegritySchemaUnchecked",
                 "IntegrityDrillFailed"]
        cases = [(now, name, []) for name in names]
    folder = story.workdir / f"promtool-{'incident' if firing else 'after'}"
    folder.mkdir(exist_ok=True)
    story.say(f"$ promtool test rules alerts/  (on the metrics file: {', '.join(names)} {what})")
    wrong: list[str] = []
    try:
        rules_test.run_promtool(promtool, folder, text, cases)
    except AssertionError as exc:
        # promtool names each alert whose outcome differed from the expectation.
        wrong = sorted(set(re.findall(r"alertname: (\w+)", str(exc)))) or ["(promtool failed: see its output)"]
        (folder / "promtool-output.txt").write_text(str(exc))
        story.say(f"  (promtool's input and output: {folder})")
    right = [name for name in names if name not in wrong]
    if firing:
        story.facts["alerts_firing"] = right
        story.facts["alerts_not_firing"] = wrong
        story.facts["jobs_failed"] = failed_jobs
        story.say(f"  fire: {', '.join(right) or 'none'}" + (f" (IntegrityJobFailed for {', '.join(failed_jobs)})"
                                                          if "IntegrityJobFailed" in right else ""))
    else:
        story.facts["alerts_quiet_after"] = right
        story.facts["alerts_firing_after"] = wrong
        story.say(f"  quiet: {', '.join(right) or 'none'}")
    if wrong:
        story.fail(f"promtool: {', '.join(wrong)} {'did not fire' if firing else 'still fire'}")


def act_5_recovery(story: Story) -> None:
    story.heading(5, "Recovery: the last clean moment of the point-in-time archive; salvage brings back what came after"
                  if story.pitr else "Recovery: latest is the good backup; salvage brings back what can be rebuilt")
    good = story.facts.get("good_backup")
    # The first attempt dies after its safety backup (the on-call laptop lost its VPN):
    # that safety backup holds the damaged data and must never become `latest`.
    killed = story.integrity("--no-input", "restore", "latest", "--yes", expect=(KILLED,),
                    env=story.environ(INTEGRITY_CRASH_AT="restore:safety-backup-taken"),
                    prefix="INTEGRITY_CRASH_AT=restore:safety-backup-taken ", keep=r"crash point|safety", show=2)
    safety = re.search(r"safety-backup\s+[\d.]+s\s+(\S+)", "\n".join(killed.output_lines))
    story.facts["killed_restore_safety_backup"] = safety and safety.group(1)
    story.check(safety is not None, "the killed restore did not report its safety backup")
    dry = story.integrity("restore", "latest", "--dry-run", keep=r"^restore plan|^\s+backup |^\s+changes", show=3)
    chosen = next((m.group(1) for line in dry.output_lines if (m := re.match(r"restore plan for backup (\S+)", line))), None)
    story.facts["dry_run_chose"] = chosen
    story.check(chosen == good, f"restore latest --dry-run chose {chosen}, not the good backup {good}")
    if story.pitr:
        restore_last_clean(story)
    else:
        restore_latest(story)


def restore_latest(story: Story) -> None:
    good = story.facts.get("good_backup")
    before = story.results_by_key()
    restore = story.integrity("--no-input", "restore", "latest", "--yes", "--keep-newer",
                              *(["--terminate-connections"] if story.engine == "postgresql" else []),
                              keep=r"^restored backup|^salvage from|recomputed \d|^audit|│ results|│ players", show=8)
    text = re.sub(r"\s+", " ", " ".join(restore.output_lines))  # rich wraps long lines at COLUMNS
    chosen = re.search(r"restored backup (\S+) over", text)
    story.facts["restore_chose"] = chosen and chosen.group(1)
    story.check(story.facts["restore_chose"] == good,
                f"restore latest restored {story.facts['restore_chose']}, not the good backup {good}")
    read_salvage(story, restore, text)
    story.facts["_before_restore"], story.facts["_after_restore"] = before, story.results_by_key()


def read_salvage(story: Story, restore, text: str) -> None:
    """The salvage summary and the rows it left out, from a `--keep-newer` restore's output."""
    # With nothing re-applied the line stops after the counts (no "(N as is, recomputed N)").
    salvage = re.search(r"re-applied ([\d,]+) players and ([\d,]+) results(?: \(([\d,]+) as is, recomputed ([\d,]+)\))?",
                        text)
    if story.check(salvage is not None, "no salvage summary line in the restore's output"):
        players, results, as_is, recomputed = (parse_int(group or "0") for group in salvage.groups())
        story.facts["salvage"] = {"players": players, "results": results, "as_is": as_is, "recomputed": recomputed}
    left_out = {}
    for line in restore.output_lines:
        row = re.match(r"│\s*(\w+)\s*│\s*(.+?)\s*│\s*([\d,]+)\s*│", line)
        if row:
            left_out[f"{row.group(1)}:{row.group(2)}"] = parse_int(row.group(3))
    story.facts["left_out"] = left_out


def restore_last_clean(story: Story) -> None:
    """`pitr last-clean` (the search, a dry run), then `restore --last-clean --keep-newer`;
    the moment found is held against the bad revision's application."""
    wait_until_caught_up(story, everything=True)  # the damage is shipped: the search's upper bound holds it
    facts = story.facts.setdefault("pitr", {})
    search = story.integrity("pitr", "last-clean", keep=r"^(engine|search|restores|last clean|rows after|  left out|next)",
                             show=8)
    text = "\n".join(search.output_lines)
    found = re.search(r"last clean moment: (\S+ \S+) \(first dirty: (\S+ \S+)\)", text)
    resolution = re.search(r"resolution ([\d.]+)s", text)
    bound = re.search(r"restores: (\d+) \(at most (\d+) for (\d+) steps\)", text)
    if not story.check(found is not None and resolution is not None, "pitr last-clean printed no last clean moment"):
        return
    moment, first_dirty = parse_moment(found.group(1)), parse_moment(found.group(2))
    step = float(resolution.group(1))
    facts.update(moment=utc_text(moment), first_dirty=utc_text(first_dirty), resolution_seconds=step,
                 probes=bound and int(bound.group(1)), probe_bound=bound and int(bound.group(2)))

    before = story.results_by_key()
    restore = story.integrity("--no-input", "restore", "--last-clean", "--keep-newer", "--yes",
                              *(["--terminate-connections"] if story.engine == "postgresql" else []),
                              keep=r"^restored |^last clean moment|^salvage from|recomputed \d|^audit|│ results|│ players",
                              show=8)
    text = re.sub(r"\s+", " ", " ".join(restore.output_lines))  # rich wraps long lines at COLUMNS
    restored = re.search(r"last clean moment: (\S+ \S+) \(first dirty", text)
    facts["restore_moment"] = restored and utc_text(parse_moment(restored.group(1)))
    story.check(facts["restore_moment"] == facts["moment"],
                f"restore --last-clean restored {facts['restore_moment']}, pitr last-clean found {facts['moment']}")
    read_salvage(story, restore, text)
    story.facts["_before_restore"], story.facts["_after_restore"] = before, story.results_by_key()

    # The moment against the bad revision: clean at the moment, dirty one step later, so
    # the damage was shipped inside (moment, moment + step]; it was committed after alembic
    # started, so the moment is less than one step before that start. Shipping waits at
    # most the lag objective (the status read before the search met it).
    applied = story.facts.get("bad_revision_applied", {})
    started, finished = parse_moment(applied["started_at"]), parse_moment(applied["finished_at"])
    facts["moment_after_revision_started_seconds"] = round((moment - started).total_seconds(), 3)
    facts["moment_after_revision_finished_seconds"] = round((moment - finished).total_seconds(), 3)
    story.say(f"the moment found, {found.group(1)}, against the bad revision's application "
              f"({applied['started_at']} to {applied['finished_at']}): "
              f"{facts['moment_after_revision_started_seconds']:+.3f}s from its start")
    story.check(first_dirty - moment == timedelta(seconds=step),
                f"the first dirty point {facts['first_dirty']} is not one resolution step ({step}s) after {facts['moment']}")
    story.check(moment > started - timedelta(seconds=step),
                f"the moment found {facts['moment']} is more than one resolution step before the bad revision started "
                f"({applied['started_at']})")
    story.check(moment <= finished + timedelta(seconds=LAG_OBJECTIVE_SECONDS),
                f"the moment found {facts['moment']} is later than the bad revision's end ({applied['finished_at']}) "
                f"plus the lag objective ({LAG_OBJECTIVE_SECONDS}s)")


def act_6_afterwards(story: Story) -> None:
    story.heading(6, "Afterwards: the audits are clean, the drill passes, and only what cannot be rebuilt is lost")
    story.integrity("audit", keep=r"clean|FAIL|^audit", show=2)
    story.integrity("probe", keep=r"success|objective", show=2)
    story.integrity("drill", keep=r"^drill of|^predicted|^audit of", show=3)
    metrics_path = story.workdir / "xdg" / "typing-game" / "state" / "metrics.prom"
    evaluate_alerts(story, metrics_path, firing=False)
    tally(story)


def tally(story: Story) -> None:
    """The books: which results existed before the restore and after the salvage."""
    in_backup = {tuple(key) for key in story.facts.pop("results_in_good_backup", [])}
    before_migration = {tuple(k.split("|", 1)): v for k, v in story.facts.pop("results_before_migration", {}).items()}
    players_before_migration = set(story.facts.pop("players_before_migration", []))
    players_lost = players_before_migration - story.usernames()
    before = story.facts.pop("_before_restore", {})
    after = story.facts.pop("_after_restore", {})
    late = {key: value for key, value in before_migration.items() if key not in in_backup}
    # Nothing can rebuild a late result whose missed characters the migration dropped.
    unrecoverable = {key for key in late if before.get(key, (None, None))[1] is None}
    lost = {key for key in before_migration if key not in after}
    wrong = sorted(f"{u} {s}: {after[(u, s)][0]} (was {late[(u, s)][0]})" for (u, s) in late
                   if (u, s) in after and after[(u, s)][0] != late[(u, s)][0])
    changed = {key for key in in_backup if key in before and before[key][:2] != before_migration.get(key, (None,))[:2]}
    recomputed_expected = sum(1 for key in late if key not in unrecoverable and before[key][0] != late[key][0])
    facts = {
        "results_in_good_backup": len(in_backup),
        "results_written_after_it": len(late),
        "late_results_unrecoverable": len(unrecoverable),
        "late_results_recomputable": len(late) - len(unrecoverable),
        "late_results_whose_wpm_the_migration_changed": recomputed_expected,
        "backed_up_results_the_migration_changed": len(changed),
        "results_lost": len(lost),
        "late_results_back_with_another_wpm": len(wrong),
        "players_before_migration": len(players_before_migration),
        "players_lost": len(players_lost),
    }
    story.facts["books"] = facts
    if story.pitr:
        books_after_point_in_time(story, before_migration, before, after, lost, unrecoverable, players_lost)
        return
    salvage = story.facts.get("salvage", {})
    left_out = story.facts.get("left_out", {})
    unrecoverable_left_out = sum(n for reason, n in left_out.items() if reason.startswith("results:") and
                                 reason != "results:changed")
    story.say("the books (the script's own count of results, read before the migration, before the restore and after it):")
    story.say(f"  results in the good backup {len(in_backup):,}; written after it {len(late):,}: "
              f"{len(late) - len(unrecoverable):,} rebuildable, {len(unrecoverable):,} not (missed characters dropped)")
    story.say(f"  salvage: {salvage.get('results', '?')} results back ({salvage.get('recomputed', '?')} recomputed), "
              f"left out {', '.join(f'{k} {v:,}' for k, v in sorted(left_out.items())) or 'nothing'}")
    story.say(f"  results lost: {len(lost):,} (exactly the unrecoverable ones: {lost == unrecoverable})")
    story.check(lost == unrecoverable, f"{len(lost)} results lost, but {len(unrecoverable)} were unrecoverable "
                f"(lost and rebuildable: {sorted(lost - unrecoverable)[:3]}; unrecoverable kept: {sorted(unrecoverable - lost)[:3]})")
    story.check(len(unrecoverable) > 0, "the story produced no unrecoverable result: it proves nothing about them")
    story.check(not wrong, f"late results back with another wpm than the game wrote: {wrong[:3]}")
    story.check(salvage.get("results") == len(late) - len(unrecoverable),
                f"salvage re-applied {salvage.get('results')} results, {len(late) - len(unrecoverable)} can be rebuilt")
    story.check(salvage.get("recomputed") == recomputed_expected,
                f"salvage recomputed {salvage.get('recomputed')} results, the migration changed the wpm of "
                f"{recomputed_expected} rebuildable late results")
    story.check(unrecoverable_left_out == len(unrecoverable),
                f"salvage left out {unrecoverable_left_out} late results as unrecoverable, expected {len(unrecoverable)}")
    story.check(left_out.get("results:changed", 0) == len(changed),
                f"salvage reports {left_out.get('results:changed', 0)} changed results, the migration changed "
                f"{len(changed)} that the backup holds")


def books_after_point_in_time(story: Story, before_migration: dict, before: dict, after: dict, lost: set,
                              unrecoverable: set, players_lost: set) -> None:
    """--pitr: the same books, held to "no row lost": the moment restored precedes the
    damage, so every player and result written before the revision is back, with the
    values the game wrote (the unrecoverable ones of the backup restore included)."""
    facts = story.facts["books"]
    # Every result, not only the late ones: the restore itself must hold the game's values.
    wrong = sorted(f"{u} {s}: {after[(u, s)][:2]} (was {value[:2]})" for (u, s), value in before_migration.items()
                   if (u, s) in after and after[(u, s)][:2] != value[:2])
    facts["results_back_with_other_values"] = len(wrong)
    salvage = story.facts.get("salvage", {})
    left_out = story.facts.get("left_out", {})
    story.say("the books (the script's own count of players and results, read before the migration, before the restore "
              "and after it):")
    story.say(f"  before the migration: {facts['players_before_migration']:,} players, {len(before_migration):,} results "
              f"({facts['results_written_after_it']:,} written after the good backup, {len(unrecoverable):,} of them "
              f"time tests whose missed characters the migration dropped)")
    story.say(f"  salvage: {salvage.get('players', '?')} players and {salvage.get('results', '?')} results back, left out "
              f"{', '.join(f'{k} {v:,}' for k, v in sorted(left_out.items())) or 'nothing'}")
    story.say(f"  lost: {len(players_lost):,} players, {len(lost):,} results; back with other values: {len(wrong):,}")
    story.check(not players_lost, f"{len(players_lost)} players lost: {sorted(players_lost)[:3]}")
    story.check(not lost, f"{len(lost)} results lost ({len(lost & unrecoverable)} of them the time tests the migration "
                f"damaged): {sorted(lost)[:3]}")
    story.check(not wrong, f"results back with other values than the game wrote: {wrong[:3]}")
    story.check(len(unrecoverable) > 0, "the story produced no result the backup restore loses: it proves nothing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--database-url", help="PostgreSQL: an EMPTY database the story may fill, damage and restore")
    parser.add_argument("--workdir", type=Path, help="where the data directory, copies and files go (default: a new temp dir)")
    parser.add_argument("--json-summary", type=Path, help="write every step, fact and failure here as JSON")
    parser.add_argument("--quiet", action="store_true", help="print nothing but the verdict")
    parser.add_argument("--pitr", action="store_true",
                        help="point-in-time recovery on (SQLite: Litestream replicating from the start); recover with "
                             "restore --last-clean")
    args = parser.parse_args(argv)
    if args.pitr and args.engine == "postgresql" and args.database_url:
        print("Error: --pitr --engine postgresql starts a throwaway archiving cluster of its own (archiving is "
              "a restart-only setting of the server): drop --database-url", file=sys.stderr)
        return 2
    if args.engine == "postgresql" and not args.database_url and not args.pitr:
        parser.error("--engine postgresql needs --database-url of an empty database")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="incident-"))).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    story = Story(args.engine, workdir, args.database_url or "", quiet=args.quiet, pitr=args.pitr)
    story.say(f"replaying the incident on {args.engine}{' with point-in-time recovery' if args.pitr else ''} in {workdir}")
    started = time.monotonic()
    try:
        if story.pitr and story.engine == "postgresql":
            start_archiving_cluster(story)
        for act in (act_1_play_and_back_up, act_2_misconfigured_backups, act_3_unchecked_migration,
                    act_4_detection, act_5_recovery, act_6_afterwards):
            act(story)
    finally:
        try:
            stop_replicator(story)
        except BaseException as exc:  # the summary is written whatever happened
            story.fail(f"stopping the replicator: {exc!r}")
        if story.facts.get("stale_database") and story.cluster is None:
            pg_execute(pg_admin_url(story.url), f'DROP DATABASE IF EXISTS "{story.facts["stale_database"]}" WITH (FORCE)')
        if story.cluster is not None:  # with everything in it
            story.cluster.stop()
            story.say("(the throwaway cluster stopped and removed)")
        if story.pg_home is not None:
            shutil.rmtree(story.pg_home, ignore_errors=True)
        for key in [k for k in story.facts if k.startswith("_") or k in ("results_in_good_backup", "results_before_migration")]:
            story.facts.pop(key)
        seconds = time.monotonic() - started
        verdict = "the story held" if not story.failures else f"{len(story.failures)} step(s) did not behave as the story expects"
        story.say()
        story.say(f"== {verdict} ({seconds:.0f}s)")
        for failure in story.failures:
            print(story.shorten(f"   - {failure}"), file=sys.stderr if story.quiet else sys.stdout)
        if args.json_summary:
            args.json_summary.write_text(json.dumps({
                "engine": story.engine, "pitr": story.pitr, "ok": not story.failures, "seconds": round(seconds, 1),
                "steps": [asdict(step) for step in story.steps], "facts": story.facts, "failures": story.failures,
            }, indent=2, default=str))
    return 0 if not story.failures else 1


if __name__ == "__main__":
    sys.exit(main())
