"""A scratch PostgreSQL cluster: a data directory filled by a point-in-time restore
(pgBackRest), started on its own, waited on until recovery has ended, always stopped and
removed (DESIGN.md section 7).

How it is kept apart from everything else:
- Its folder in the state directory's scratch is claimed (`integrity.db.claims`): a killed
  run's folder is removed by the next run, after the server still running in it (if any)
  has been stopped. A watcher in a session of its own also stops the server once the run
  that started it is gone, so a killed run never leaves a server behind for long.
- It listens on no TCP address at all: only a Unix socket in a private directory (mode
  0700, owned by the server's OS user), with `trust` for local connections only. The copy
  holds production data; `trust` on 127.0.0.1 would hand it to every local user. The
  restored pg_hba.conf is not used (it may ask for passwords we do not have).
- Settings that would make it act as the production server are overridden on the command
  line: archive_mode=off (it must never push into the archive), shared_buffers (a copy of
  production's 8 GB setting would start a second 8 GB server), ssl=off, listen_addresses.
  max_connections and the other settings recovery requires to be at least the primary's
  are left as restored.

PostgreSQL refuses to run as root: when we are root, the server and every tool that
writes its files run as the data directory's OS user through `runuser`, as in
tests/pg_cluster.py. When we are neither root nor that user, it cannot work at all and
says so.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from game_core.db import DatabaseTarget, create_engine
from game_core.errors import DatabaseUnreachable, PreconditionFailed
from integrity.db.claims import CLAIM_SUFFIX, claimed_path
from integrity.db.scratch import RestoreFailed, ScratchCopy

CLUSTER_PREFIX = "pitr-cluster-"  # every scratch cluster's folder name starts so
SOCKET_PORT = 5432  # the socket's number; the socket directory is private, so it never collides
POLL_SECONDS = 0.1
SCRATCH_SERVER_SETTINGS = {
    "listen_addresses": "''",
    "archive_mode": "off",
    "shared_buffers": "128MB",
    "ssl": "off",
    "logging_collector": "off",
    "cluster_name": "integrity-scratch",
}


class WrongOsUser(PreconditionFailed):
    """The server's files belong to another OS user, and we cannot act as that user."""


# ---------------------------------------------------------------- the server's OS user


def owner_of(path: Path) -> str:
    """The OS user owning `path` (a data directory): the user its server and tools run as."""
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except FileNotFoundError:
        raise PreconditionFailed(f"{path} does not exist; set [pitr] pg_data_dir to the cluster's data directory") from None
    except KeyError:
        raise PreconditionFailed(f"{path} belongs to uid {path.stat().st_uid}, which has no user name") from None


def as_os_user(argv: list[str], user: str) -> list[str]:
    """`argv` run as `user`: as is when we are that user, through runuser when we are root."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    if me == user:
        return argv
    if os.geteuid() == 0:
        return ["runuser", "-u", user, "--", *argv]
    raise WrongOsUser(f"{Path(argv[0]).name} must run as {user}, the cluster's OS user; run integrity as {user} or as root")


def give_to(path: Path, user: str) -> None:
    """Hand a directory we made to the server's OS user (when we are root and it is another)."""
    if os.geteuid() == 0 and user != "root":
        shutil.chown(path, user)


def server_bindir(data_dir: Path, configured: str = "") -> Path:
    """The server binaries for `data_dir`: the configured directory, else Debian's
    directory of the data directory's major version, else `pg_config --bindir`."""
    if configured:
        return Path(configured)
    version_file = data_dir / "PG_VERSION"
    if version_file.is_file():
        debian = Path("/usr/lib/postgresql") / version_file.read_text().strip() / "bin"
        if (debian / "postgres").exists():
            return debian
    try:
        found = subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise PreconditionFailed("cannot find the PostgreSQL server binaries: set [pitr] pg_bindir, or install "
                                 "postgresql (pg_config --bindir)") from None
    return Path(found)


# ---------------------------------------------------------------- the scratch cluster


@contextmanager
def scratch_cluster(scratch_dir: Path, name: str, *, os_user: str, fill: Callable[[Path], None],
                    username: str, database: str, bindir: str = "", description: str,
                    timeout_seconds: float = 3600.0) -> Iterator[ScratchCopy]:
    """A claimed folder `scratch_dir/CLUSTER_PREFIX+name` whose `data` directory `fill`
    writes (a restore, as `os_user`), started and waited on until recovery has ended; yields
    the ScratchCopy of `database` on it (connecting as `username`). Stopped and removed on
    exit, whatever happens inside."""
    scratch_dir.mkdir(parents=True, exist_ok=True)
    stop_orphan_servers(scratch_dir)
    with claimed_path(scratch_dir, CLUSTER_PREFIX + name) as folder:
        folder.mkdir(mode=0o700)
        give_to(folder, os_user)
        data = folder / "data"
        data.mkdir(mode=0o700)
        give_to(data, os_user)
        _require_reachable(data, os_user)
        fill(data)
        with _running(folder, data, os_user=os_user, bindir=server_bindir(data, bindir), username=username,
                      database=database, timeout_seconds=timeout_seconds) as (target, note):
            yield ScratchCopy(target, description + note)


@contextmanager
def _running(folder: Path, data: Path, *, os_user: str, bindir: Path, username: str, database: str,
             timeout_seconds: float) -> Iterator[tuple[DatabaseTarget, str]]:
    socket_dir = Path(tempfile.mkdtemp(prefix="integrity-pitr-"))  # short: a socket path has ~100 bytes
    try:
        socket_dir.chmod(0o700)
        give_to(socket_dir, os_user)
        _write_owned(folder / "pg_hba.conf", "local all all trust\n", os_user)
        _write_owned(folder / "pg_ident.conf", "", os_user)
        if not (data / "postgresql.conf").exists():  # Debian keeps it in /etc: not in the backup
            _write_owned(data / "postgresql.conf", "", os_user)
        settings = {**SCRATCH_SERVER_SETTINGS, "port": str(SOCKET_PORT), "unix_socket_directories": str(socket_dir),
                    "hba_file": str(folder / "pg_hba.conf"), "ident_file": str(folder / "pg_ident.conf")}
        options = " ".join(f"-c {key}={_quoted(value)}" for key, value in settings.items())
        pg_ctl = str(bindir / "pg_ctl")
        log = folder / "server.log"
        _stop_when_gone(os.getpid(), pg_ctl, data, socket_dir, os_user)
        target = DatabaseTarget(URL.create("postgresql+psycopg", username=username, host=str(socket_dir),
                                           port=SOCKET_PORT, database=database))

        def start() -> None:
            started = subprocess.run(
                as_os_user([pg_ctl, "-D", str(data), "-w", "-t", str(int(timeout_seconds)), "-l", str(log), "-o",
                            options, "start"], os_user),
                capture_output=True, text=True,
            )
            if started.returncode != 0:
                raise RestoreFailed(f"the restored cluster did not start: {_why(log, started.stderr)}")
            _wait_until_promoted(target, data, log, time.monotonic() + timeout_seconds)

        try:
            note = ""
            try:
                start()
            except RestoreFailed:
                end = _end_of_replay(log)
                if end is None:
                    raise
                # No commit after the target time is archived: the state at that time is
                # the end of what was replayed. Stop exactly there, even if more WAL has been
                # archived since (its commits are after the target).
                _retarget_to_lsn(data / "postgresql.auto.conf", end)
                start()
                note = f"; no commit archived after the target: replayed to the archive's end at {end}"
            yield target, note
        finally:
            _stop(pg_ctl, data, os_user)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


TARGET_NOT_REACHED = "recovery ended before configured recovery target was reached"
_TARGET_KEYS = ("recovery_target ", "recovery_target=", "recovery_target_time", "recovery_target_xid",
                "recovery_target_name", "recovery_target_lsn")


def _end_of_replay(log: Path) -> str | None:
    """The LSN where replay ended, when the server stopped because the archive holds
    nothing after the recovery target (PostgreSQL 13+ refuses to promote then)."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    fatal = [line for line in lines if "FATAL:" in line]
    if not fatal or TARGET_NOT_REACHED not in fatal[-1]:
        return None
    done = [line for line in lines if "redo done at " in line]
    return done[-1].split("redo done at ", 1)[1].split()[0] if done else None


def _retarget_to_lsn(auto_conf: Path, lsn: str) -> None:
    """Replace the restore's recovery target with `lsn` (inclusive: PostgreSQL's default)."""
    kept = [line for line in auto_conf.read_text().splitlines() if not line.strip().startswith(_TARGET_KEYS)]
    auto_conf.write_text("\n".join([*kept, f"recovery_target_lsn = '{lsn}'"]) + "\n")  # keeps its owner


def _wait_until_promoted(target: DatabaseTarget, data: Path, log: Path, deadline: float) -> None:
    """Until the server answers and is out of recovery. A server that stops meanwhile (its
    recovery failed: "recovery ended before configured recovery target was reached") is
    RestoreFailed naming its log's FATAL line."""
    while True:
        if not (data / "postmaster.pid").exists():
            raise RestoreFailed(f"the restored cluster stopped during recovery: {_why(log, '')}")
        try:
            engine = create_engine(target, read_only=True)
            try:
                with engine.connect() as connection:
                    if not connection.execute(sa.text("SELECT pg_is_in_recovery()")).scalar():
                        return
            finally:
                engine.dispose()
        except (DatabaseUnreachable, sa.exc.DBAPIError):
            pass  # still starting, or stopping after a failed recovery: the next turn says which
        if time.monotonic() > deadline:
            raise RestoreFailed(f"the restored cluster was still recovering after the time allowed: {_why(log, '')}")
        time.sleep(POLL_SECONDS)


def _why(log: Path, stderr: str) -> str:
    """The server log's last FATAL or PANIC line, else the tool's last line."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    fatal = [line for line in lines if "FATAL:" in line or "PANIC:" in line]
    if fatal:
        return fatal[-1].split("FATAL:", 1)[-1].split("PANIC:", 1)[-1].strip()
    tail = (stderr.strip().splitlines() or lines or ["no message"])[-1]
    return tail.strip()


def _stop(pg_ctl: str, data: Path, os_user: str) -> None:
    """Stop at once: nothing in a scratch copy is worth a shutdown checkpoint."""
    if (data / "postmaster.pid").exists():
        subprocess.run(as_os_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], os_user),
                       capture_output=True)


def _stop_when_gone(owner: int, pg_ctl: str, data: Path, socket_dir: Path, os_user: str) -> None:
    """A watcher in a session of its own: once `owner` is gone (a SIGKILL skips every
    `finally`) it stops the server and removes the socket directory; it ends by itself
    when the data directory is removed first (the normal way out)."""
    stop = shlex.join(as_os_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], os_user))
    quoted = shlex.quote(str(data))
    script = (f"while kill -0 {owner} 2>/dev/null && [ -d {quoted} ]; do sleep 1; done; "
              f"[ -f {quoted}/postmaster.pid ] && {stop} >/dev/null 2>&1; rm -rf {shlex.quote(str(socket_dir))}")
    subprocess.Popen(["sh", "-c", script], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_orphan_servers(scratch_dir: Path) -> list[str]:
    """Stop the servers still running in scratch clusters whose run is gone (their claim
    is free), so that the claims' sweep removes a stopped directory; return their names."""
    import fcntl

    stopped = []
    for folder in sorted(scratch_dir.glob(CLUSTER_PREFIX + "*")):
        if folder.name.endswith(CLAIM_SUFFIX) or not (folder / "data" / "postmaster.pid").exists():
            continue
        try:
            descriptor = os.open(folder.with_name(folder.name + CLAIM_SUFFIX), os.O_RDWR)
        except OSError:
            continue  # unclaimed: kept on purpose, not ours to stop
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its run is alive
        finally:
            os.close(descriptor)  # the sweep in claimed_path takes the claim again to remove it
        data = folder / "data"
        try:
            _stop(str(server_bindir(data) / "pg_ctl"), data, owner_of(data))
            stopped.append(folder.name)
        except PreconditionFailed:
            continue  # a sweep must never fail the run that makes it
    return stopped


def _require_reachable(data: Path, os_user: str) -> None:
    """The server's OS user must reach the data directory through every parent (a scratch
    directory under a 0700 home or pytest's tmp dirs is not reachable by `postgres`)."""
    if subprocess.run(as_os_user(["test", "-w", str(data)], os_user), capture_output=True).returncode != 0:
        raise PreconditionFailed(f"{data.parent.parent} is not reachable by {os_user}, the cluster's OS user: a parent "
                                 "directory is closed to it; put [state] dir where that user can reach it")


def _quoted(value: str) -> str:
    """A -c value as pg_ctl's shell reads it ('' stays the empty string)."""
    return value if value == "''" else shlex.quote(value)


def _write_owned(path: Path, text: str, os_user: str) -> None:
    path.write_text(text)
    if os.geteuid() == 0 and os_user != "root":
        shutil.chown(path, os_user)
