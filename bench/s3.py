"""Backups on S3-compatible object storage, side by side with `rclone`, in one run.

    .venv/bin/python bench/s3.py                       # 1 GB database: 100,000 players x 65 tests
    .venv/bin/python bench/s3.py --players 10000       # a quicker look (130 MB)

The server is moto in server mode (`ThreadedMotoServer`) on 127.0.0.1 over HTTP, in its
own child process (its CPU is not the measured commands'), reached by both clients at the
same endpoint. Every measured command is a child process (`integrity ...`, `rclone ...`),
timed from spawn to exit, its peak resident memory from wait4's rusage; the kinds of one
comparison run interleaved (a, b, c, a, b, c, ...) after one warm-up round, so load from
elsewhere on the machine falls on all alike; the figure is the median of --repeat rounds.

1. `integrity backup create` to S3 (copy, compress, hash, counts, read-back check in the
   local staging directory, then upload with boto3: 16 MiB parts, 4 threads, SHA-256 per
   part, manifest last) against the anchor `rclone copy` (Debian's rclone, default
   settings, `--s3-no-check-bucket`) of the same compressed data file (from a local create,
   zstd level 3) to the same endpoint. Throughput of both: bytes of that compressed file
   per second of the whole command (goal: create >= 0.8 of rclone's). Also shown: the
   database bytes per second of create, and where its time goes: the same create into a
   local directory, and a bare boto3 `upload_file` of the file with create's settings.
2. `integrity backup copy latest --to NAME` between two buckets (download into local
   staging while hashing, upload, manifest last, quick verify reading it back) against
   `rclone copy` of the backup's objects between the same buckets. rclone copies between
   two buckets of one remote server-side (CopyObject: no byte passes through it); also
   shown, rclone forced to stream them through itself (`--disable Copy`). Goal >= 0.8.
3. Encryption (age, one X25519 recipient) on S3: create and quick verify with and without
   (goal <= 1.15x).
4. Peak resident memory of create, copy and quick verify on S3 (goal < 200 MB each).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE.parent))

from bench.common import build_sqlite_database, machine_line  # noqa: E402

ACCESS_KEY = "bench-key"
SECRET_KEY = "bench-secret"
BUCKETS = ("bench-create", "bench-sealed", "bench-rclone", "bench-copy", "bench-rclone-copy")

SERVER = """
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
server.stop()
"""

UPLOAD = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
from integrity.storage.s3 import CONCURRENCY, PART_SIZE
config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=CONCURRENCY,
                        use_threads=True)
boto3.client("s3").upload_file(sys.argv[1], sys.argv[2], sys.argv[3], ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                               Config=config)
"""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


class Measured:
    """Seconds and peak resident memory (MB) of every measured run of one kind."""

    def __init__(self):
        self.seconds: list[float] = []
        self.peak_mb: list[float] = []

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak(self) -> float:
        return max(self.peak_mb)


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds from spawn to exit and the child's peak RSS in MB (wait4)."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{errors.read().decode(errors='replace')}")
    return elapsed, usage.ru_maxrss / 1024


def rounds(kinds: dict, repeat: int) -> dict[str, Measured]:
    """`kinds`: name -> (prepare, command, env). One warm-up round, then `repeat` rounds,
    each kind prepared (not timed) right before its timed run."""
    results = {name: Measured() for name in kinds}
    for round_number in range(repeat + 1):
        for name, (prepare, command, env) in kinds.items():
            prepare()
            seconds, peak = timed(command, env)
            if round_number:
                results[name].seconds.append(seconds)
                results[name].peak_mb.append(peak)
    return results


class Bench:
    def __init__(self, database: Path, endpoint: str):
        self.database = database
        self.endpoint = endpoint
        self.aws = {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        os.environ.update(self.aws)  # for this process's own client (buckets, emptying)
        self.base = {
            **os.environ, **self.aws,
            "XDG_DATA_HOME": str(WORK / "s3-xdg"), "INTEGRITY_STATE__DIR": str(WORK / "s3-state"),
            "INTEGRITY_CONFIG": str(WORK / "s3-integrity.toml"),  # no copies: create must not copy
        }
        # AWS_CA_BUNDLE (set on some machines) makes rclone's AWS SDK refuse to start; the
        # endpoint is plain HTTP, so no CA matters.
        inherited = {name: value for name, value in os.environ.items() if name != "AWS_CA_BUNDLE"}
        self.rclone_env = {
            **inherited, "RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_PROVIDER": "Other",
            "RCLONE_CONFIG_S3_ENDPOINT": endpoint, "RCLONE_CONFIG_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": SECRET_KEY, "RCLONE_CONFIG_S3_REGION": "us-east-1",
            "RCLONE_CONFIG": os.devnull,
        }
        self.integrity = [sys.executable, "-m", "integrity.cli", "--no-input", "--database-url", f"sqlite:///{database}"]
        import boto3

        self.client = boto3.client("s3")
        for bucket in BUCKETS:
            self.client.create_bucket(Bucket=bucket)
        (WORK / "s3-integrity.toml").write_text("", encoding="utf-8")
        (WORK / "s3-copies.toml").write_text(
            '[[repositories]]\nname = "offsite"\nlocation = "s3://bench-copy/copy"\n'
            f'[repositories.s3]\nendpoint_url = "{endpoint}"\n', encoding="utf-8")
        fresh(WORK / "s3-state")
        fresh(WORK / "s3-xdg")

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.base, **extra}

    def empty(self, bucket: str, prefix: str = "") -> None:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if keys:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        for upload in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", ()):
            self.client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])

    def ensure(self, env: dict[str, str], name: str = "primary") -> None:
        """What `integrity init` does to a repository: an empty one, ready."""
        from integrity.backups.repositories import open_repository
        from integrity.settings import resolve_settings

        settings = resolve_settings(environ=env, cwd=WORK, database_url_option=f"sqlite:///{self.database}")
        open_repository(settings, name).ensure()

    def fresh_s3(self, bucket: str, env: dict[str, str], name: str = "primary", prefix: str = "repo/"):
        def prepare():
            self.empty(bucket, prefix)
            self.ensure(env, name)
        return prepare


def data_file_of(repository: Path) -> Path:
    found = sorted(repository.glob("*/data.*"))
    if len(found) != 1:
        raise SystemExit(f"expected one data file in {repository}, found {found}")
    return found[0]


def make_identity() -> tuple[str, Path]:
    from pyrage import x25519

    identity = x25519.Identity.generate()
    path = WORK / "s3-identity.txt"
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(descriptor, f"{identity}\n".encode())
    os.close(descriptor)
    return str(identity.to_public()), path


def mb_per_s(size: int, seconds: float) -> float:
    return size / 1e6 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--tests-per-player", type=int, default=65)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    print(machine_line())
    print(f"rclone: {subprocess.run(['rclone', 'version'], capture_output=True, text=True).stdout.splitlines()[0]}")
    print(f"start: {load()}", flush=True)
    database = build_sqlite_database(WORK, args.players, args.tests_per_player)
    db_size = database.stat().st_size

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("the moto server did not start")
        run_all(Bench(database, f"http://127.0.0.1:{port}"), db_size, args.repeat)
    finally:
        server.stdin.close()
        server.wait()
        for leftover in ("s3-local", "s3-local-src", "s3-state", "s3-xdg", "s3-integrity.toml", "s3-copies.toml", "s3-identity.txt"):
            path = WORK / leftover
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    print(f"end: {load()}")


def run_all(bench: Bench, db_size: int, repeat: int) -> None:
    recipient, identity = make_identity()
    plain = bench.env(INTEGRITY_BACKUPS__REPOSITORY="s3://bench-create/repo")
    sealed = bench.env(INTEGRITY_BACKUPS__REPOSITORY="s3://bench-sealed/repo", INTEGRITY_BACKUPS__ENCRYPT_TO=recipient,
                       INTEGRITY_BACKUPS__IDENTITY_FILE=str(identity))
    local = bench.env(INTEGRITY_BACKUPS__REPOSITORY=str(WORK / "s3-local"))

    # The compressed file rclone uploads: the data file of a local create of the same database.
    source = bench.env(INTEGRITY_BACKUPS__REPOSITORY=str(fresh(WORK / "s3-local-src")))
    timed([*bench.integrity, "backup", "create"], source)
    data = data_file_of(WORK / "s3-local-src")
    size = data.stat().st_size
    print(f"database {bench.database.name}: {db_size / 1e6:.0f} MB; its backup's data file {data.name}: "
          f"{size / 1e6:.1f} MB (zstd level 3)", flush=True)

    def local_prepare():
        fresh(WORK / "s3-local")

    create = [*bench.integrity, "backup", "create"]
    results = rounds({
        "s3 create": (bench.fresh_s3("bench-create", plain), create, plain),
        "rclone": (lambda: bench.empty("bench-rclone"),
                   ["rclone", "copy", "-q", "--s3-no-check-bucket", str(data), "s3:bench-rclone/anchor/"],
                   bench.rclone_env),
        "local create": (local_prepare, create, local),
        "boto3 upload": (lambda: bench.empty("bench-rclone"),
                         [sys.executable, "-c", UPLOAD, str(data), "bench-rclone", "anchor/" + data.name], bench.base),
        "sealed create": (bench.fresh_s3("bench-sealed", sealed), create, sealed),
    }, repeat)
    ours, anchor = results["s3 create"].median, results["rclone"].median
    ratio = mb_per_s(size, ours) / mb_per_s(size, anchor)
    print(f"\n1. create to S3 ({load()})")
    print(f"   integrity backup create  {ours:7.2f}s  {mb_per_s(size, ours):6.1f} MB/s of the compressed file  "
          f"({mb_per_s(db_size, ours):.1f} MB/s of the database)")
    print(f"   rclone copy (anchor)     {anchor:7.2f}s  {mb_per_s(size, anchor):6.1f} MB/s of the same file")
    print(f"   throughput ratio {ratio:4.2f} (goal >= 0.80)")
    local_s, upload_s = results["local create"].median, results["boto3 upload"].median
    print(f"   where create's time goes: the same create into a local directory {local_s:.2f}s; a bare boto3 "
          f"upload_file of the file (16 MiB x 4, SHA-256) {upload_s:.2f}s ({mb_per_s(size, upload_s):.1f} MB/s); "
          f"the rest {ours - local_s - upload_s:.2f}s (negative: the upload overlaps create's read-back check)")
    print(f"   the anchor paying for the compressed file too (local create + rclone copy): {local_s + anchor:.2f}s, "
          f"create to S3 takes {ours / (local_s + anchor):4.2f} of it", flush=True)

    # 2. copy: the source is the plain backup the last round left in bench-create.
    copy_env = {**plain, "INTEGRITY_CONFIG": str(WORK / "s3-copies.toml")}
    backup_id = next(iter({o["Key"].split("/")[1] for o in bench.client.list_objects_v2(
        Bucket="bench-create", Prefix="repo/").get("Contents", ()) if o["Key"].count("/") == 2 and
        o["Key"].split("/")[1][:1].isdigit()}))
    backup_size = sum(o["Size"] for o in bench.client.list_objects_v2(
        Bucket="bench-create", Prefix=f"repo/{backup_id}/")["Contents"])
    rclone_copy = ["rclone", "copy", "-q", "--s3-no-check-bucket", f"s3:bench-create/repo/{backup_id}/",
                   f"s3:bench-rclone-copy/anchor/{backup_id}/"]
    copies = rounds({
        "copy": (bench.fresh_s3("bench-copy", copy_env, name="offsite", prefix="copy/"),
                 [*bench.integrity, "backup", "copy", "latest", "--to", "offsite"], copy_env),
        "rclone server-side": (lambda: bench.empty("bench-rclone-copy"), rclone_copy, bench.rclone_env),
        "rclone streamed": (lambda: bench.empty("bench-rclone-copy"), [*rclone_copy, "--disable", "Copy"],
                            bench.rclone_env),
    }, repeat)
    ours = copies["copy"].median
    print(f"\n2. copy between two buckets, backup {backup_id} ({backup_size / 1e6:.1f} MB in all its objects) ({load()})")
    print(f"   integrity backup copy    {ours:7.2f}s  {mb_per_s(backup_size, ours):6.1f} MB/s")
    for name, label in (("rclone server-side", "rclone copy (server-side)"),
                        ("rclone streamed", "rclone --disable Copy     ")):
        seconds = copies[name].median
        print(f"   {label}  {seconds:7.2f}s  {mb_per_s(backup_size, seconds):6.1f} MB/s   throughput ratio ours/this "
              f"{seconds / ours:4.2f} (goal >= 0.80)")

    # 3. encryption: create from round 1; quick verify of each kind's last backup.
    verifies = rounds({
        "verify": (lambda: None, [*bench.integrity, "backup", "verify", "--latest"], plain),
        "sealed verify": (lambda: None, [*bench.integrity, "backup", "verify", "--latest"], sealed),
    }, repeat)
    print(f"\n3. encryption on S3 ({load()})")
    for what, a, b in (("create", results["s3 create"], results["sealed create"]),
                       ("quick verify", verifies["verify"], verifies["sealed verify"])):
        print(f"   {what:<13} unencrypted {a.median:7.2f}s  encrypted {b.median:7.2f}s  ratio {b.median / a.median:4.2f} "
              "(goal <= 1.15)")

    print("\n4. peak resident memory on S3 (max over the measured runs; goal < 200 MB each)")
    print(f"   create {results['s3 create'].peak:.0f} MB (encrypted {results['sealed create'].peak:.0f} MB)   "
          f"copy {copies['copy'].peak:.0f} MB   quick verify {verifies['verify'].peak:.0f} MB "
          f"(encrypted {verifies['sealed verify'].peak:.0f} MB)   [rclone upload {results['rclone'].peak:.0f} MB, "
          f"local create {results['local create'].peak:.0f} MB]")
    for bucket in BUCKETS:
        bench.empty(bucket)


if __name__ == "__main__":
    main()
