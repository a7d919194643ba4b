"""Notifications without Alertmanager (issue 19): `[notify] targets` are Apprise URLs; a
real HTTP server on 127.0.0.1 stands in for a webhook (Apprise's `json://` posts a JSON
document: title, message, type).

A failing job notifies once, however many runs fail, and "resolved" once when it passes;
a dirty audit, a failed drill and a corrupt backup each notify; a target that refuses
(HTTP 500, connection refused) never changes a run's outcome and is reported; no secret
of a target URL appears in any output, log, the ledger or the metrics.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import subprocess
import threading
from pathlib import Path

import pytest

from backup_helpers import INTEGRITY, BackupEnv, execute, fill_database, flip_byte, one_error
from scheduler_helpers import free_port

SECRET = "s3cretTok"  # in every target's path and password: must never be shown


class Webhook:
    """A local http.server recording every POST as (path, JSON body, Authorization); a path
    containing '/refuse' is answered 500."""

    def __init__(self):
        self.received: list[tuple[str, dict, str | None]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                received.append((self.path, body, self.headers.get("Authorization")))
                self.send_response(500 if "/refuse" in self.path else 200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "hook") -> str:
        return f"json://user:{SECRET}pw@127.0.0.1:{self.port}/{path}-{SECRET}"

    def bodies(self, path: str = "hook") -> list[dict]:
        return [body for where, body, _ in self.received if where.startswith(f"/{path}-")]

    def titles(self, path: str = "hook") -> list[str]:
        return [body["title"] for body in self.bodies(path)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhook():
    server = Webhook()
    yield server
    server.close()


@pytest.fixture
def hook(webhook, request):
    """This test's own path on the shared server (`<test name>-<secret>`)."""
    name = request.node.name.replace("[", "_").replace("]", "")[:60]
    webhook.received.clear()
    return name


def notifying(tmp_path: Path, url: str, *targets: str, **extra: str) -> BackupEnv:
    return BackupEnv(tmp_path, url, extra_env={"INTEGRITY_NOTIFY__TARGETS": " ".join(targets), **extra})


def missing_database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'missing.db'}"


# ---------------------------------------------------------------- job failures


def test_a_failing_job_notifies_once_and_resolved_once_when_it_passes(tmp_path, sqlite_url, webhook, hook):
    target = webhook.url(hook)
    broken = notifying(tmp_path, missing_database(tmp_path), target)
    working = notifying(tmp_path, sqlite_url, target)

    assert broken.invoke("backup", "create").returncode == 4
    [first] = webhook.bodies(hook)
    assert first["title"] == "[integrity] job backup is failing" and first["type"] == "failure"
    assert "ended with exit 4 (precondition)" in first["message"] and "missing.db does not exist" in first["message"]

    assert broken.invoke("backup", "create").returncode == 4  # still failing: told already
    assert webhook.titles(hook) == ["[integrity] job backup is failing"]

    assert working.invoke("backup", "create").returncode == 0
    assert working.invoke("backup", "create").returncode == 0  # still passing: told already
    assert webhook.titles(hook) == ["[integrity] job backup is failing", "[integrity] resolved: job backup"]
    assert webhook.bodies(hook)[1]["type"] == "success"

    assert broken.invoke("backup", "create").returncode == 4  # failing again: a new incident
    assert webhook.titles(hook)[2:] == ["[integrity] job backup is failing"]
    # The webhook's credentials reached it (Apprise sends them as Basic auth).
    assert {auth for _, _, auth in webhook.received} == {"Basic dXNlcjpzM2NyZXRUb2twdw=="}


def test_a_scheduled_job_that_fails_notifies_through_the_scheduler_path(tmp_path, sqlite_url, webhook, hook):
    """The daemon's run of a job (integrity.scheduler.runner.run_job, as `schedule run`
    fires it) is recorded through the same recorder and notifies alike."""
    from integrity import api
    from integrity.scheduler.runner import run_job

    env = notifying(tmp_path, missing_database(tmp_path), webhook.url(hook))
    settings = env.settings()
    outcome = run_job(settings, "verify", perform=api.perform_job)
    assert outcome.exit_code == 4, outcome
    assert webhook.titles(hook) == ["[integrity] job verify is failing"]
    assert run_job(settings, "verify", perform=api.perform_job).exit_code == 4
    assert webhook.titles(hook) == ["[integrity] job verify is failing"]


def test_only_the_configured_conditions_notify(tmp_path, webhook, hook):
    env = notifying(tmp_path, missing_database(tmp_path), webhook.url(hook), INTEGRITY_NOTIFY__CONDITIONS="audit_dirty")
    assert env.invoke("backup", "create").returncode == 4
    assert webhook.received == []


def test_a_job_that_is_off_does_not_notify(tmp_path, webhook, hook):
    env = notifying(tmp_path, missing_database(tmp_path), webhook.url(hook), INTEGRITY_SCHEDULE__BACKUP="off")
    assert env.invoke("backup", "create").returncode == 4
    assert webhook.received == []


# ---------------------------------------------------------------- audits, drills, backups


def test_a_dirty_audit_notifies_and_resolves_when_a_full_audit_is_clean(tmp_path, sqlite_url, webhook, hook):
    fill_database(sqlite_url, players=3, results_per_player=5)
    env = notifying(tmp_path, sqlite_url, webhook.url(hook))
    assert env.invoke("audit").returncode == 0
    assert webhook.received == []  # clean from the start: nothing started, nothing to resolve

    execute(sqlite_url, "UPDATE progress SET level = level + 3 WHERE player_id = (SELECT MIN(player_id) FROM progress)")
    assert env.invoke("audit").returncode == 3
    [dirty] = webhook.bodies(hook)  # one notification: the audit job's exit 3 is the dirty audit's
    assert dirty["title"] == "[integrity] the audits found bad rows in live" and dirty["type"] == "failure"
    assert "progress.level_matches_xp" in dirty["message"] and "runbooks/audit-findings.md" in dirty["message"]
    assert env.invoke("audit").returncode == 3
    assert len(webhook.received) == 1

    assert env.invoke("repair", "progress", "--yes").returncode == 0
    assert env.invoke("audit").returncode == 0
    assert webhook.titles(hook)[1:] == ["[integrity] resolved: the live data's audit"]


def test_a_failed_drill_notifies_and_names_the_corrupt_backup(tmp_path, sqlite_url, webhook, hook):
    fill_database(sqlite_url, players=3, results_per_player=5)
    env = notifying(tmp_path, sqlite_url, webhook.url(hook))
    backup_id = env.create()
    data = env.repo / backup_id / env.repository().read_manifest(backup_id).files[0].name
    flip_byte(data, random.Random(5))

    assert env.invoke("drill").returncode == 5
    by_title = {body["title"]: body for body in webhook.bodies(hook)}
    assert set(by_title) == {"[integrity] a restore drill failed", f"[integrity] backup {backup_id} is not restorable"}
    assert f"drill of {backup_id}" in by_title["[integrity] a restore drill failed"]["message"]
    assert "corrupt" in by_title[f"[integrity] backup {backup_id} is not restorable"]["message"]

    # A drill that cannot run at all (nothing restorable now) is the drill job failing: a
    # third condition; the two above are told already.
    assert env.invoke("drill").returncode == 4
    assert webhook.titles(hook)[2:] == ["[integrity] job drill is failing"]


def test_a_corrupt_backup_notifies_once_and_resolves_when_it_leaves_the_repository(tmp_path, sqlite_url, webhook, hook):
    fill_database(sqlite_url, players=3, results_per_player=5)
    env = notifying(tmp_path, sqlite_url, webhook.url(hook))
    good, bad = env.create(), env.create()
    data = env.repo / bad / env.repository().read_manifest(bad).files[0].name
    flip_byte(data, random.Random(7))

    assert env.invoke("backup", "verify", "--all").returncode == 5
    [body] = webhook.bodies(hook)  # the verify job's exit 5 is this backup's condition
    assert body["title"] == f"[integrity] backup {bad} is not restorable"
    assert "corrupt" in body["message"] and data.name in body["message"]
    assert env.invoke("backup", "verify", bad).returncode == 5
    assert env.invoke("backup", "list").returncode == 0
    assert len(webhook.received) == 1

    import shutil

    shutil.rmtree(env.repo / bad)  # what an operator does with a corrupt backup
    assert env.invoke("backup", "verify", good).returncode == 0
    assert webhook.titles(hook)[1:] == [f"[integrity] resolved: backup {bad}"]
    assert "no longer in the repository" in webhook.bodies(hook)[1]["message"]


def test_a_corrupt_backup_in_a_copy_notifies_and_an_unreadable_copy_clears_nothing(tmp_path, sqlite_url, webhook, hook):
    fill_database(sqlite_url, players=3, results_per_player=5)
    env = notifying(tmp_path, sqlite_url, webhook.url(hook))
    config = env.data_home / "typing-game" / "integrity.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[[repositories]]\nname = "usb"\nlocation = "{tmp_path / "usb"}"\n', encoding="utf-8")
    assert env.invoke("--no-input", "init").returncode == 0
    backup_id = env.create("--copy")
    copied = tmp_path / "usb" / backup_id
    flip_byte(copied / env.repository().read_manifest(backup_id).files[0].name, random.Random(3))
    assert env.invoke("backup", "--repository", "usb", "verify", backup_id).returncode == 5
    [body] = webhook.bodies(hook)
    assert body["title"] == f"[integrity] backup {backup_id} in repository usb is not restorable"
    # The primary's copy of it is fine: no condition for it, and none cleared by reading it.
    assert env.invoke("backup", "verify", backup_id).returncode == 0
    assert len(webhook.received) == 1
    # The copy cannot be read (moved away): its condition stays, nothing is "resolved".
    (tmp_path / "usb").rename(tmp_path / "usb-away")
    assert env.invoke("backup", "verify", backup_id).returncode == 0
    assert len(webhook.received) == 1
    (tmp_path / "usb-away").rename(tmp_path / "usb")
    import shutil

    shutil.rmtree(copied)
    assert env.invoke("backup", "verify", backup_id).returncode == 0
    assert webhook.titles(hook)[1:] == [f"[integrity] resolved: backup {backup_id} in repository usb"]


def test_a_suspect_backup_notifies(tmp_path, sqlite_url, webhook, hook):
    """A backup of a table that lost most of its rows since the previous one is suspect."""
    fill_database(sqlite_url, players=10, results_per_player=10)
    env = notifying(tmp_path, sqlite_url, webhook.url(hook))
    env.create()
    execute(sqlite_url, "DELETE FROM players WHERE id > (SELECT MIN(id) FROM players)")
    suspect = env.create(suspect=True)
    [body] = webhook.bodies(hook)  # exit 3 of `backup create` is the suspect backup's, not a job failure
    assert body["title"] == f"[integrity] backup {suspect} is not restorable"
    assert "suspect: " in body["message"]


# ---------------------------------------------------------------- targets that refuse


def test_a_refusing_target_never_changes_the_outcome_and_is_reported(tmp_path, sqlite_url, webhook, hook):
    refused = f"json://127.0.0.1:{free_port()}/gone-{SECRET}"  # nothing listens there
    env = notifying(tmp_path, missing_database(tmp_path), webhook.url(f"refuse-{hook}"), refused, webhook.url(hook))

    result = env.invoke("backup", "create")
    assert result.returncode == 4  # the job's own failure, not the notification's
    assert one_error(result).endswith("does not exist; nothing to back up (check --database-url)")
    assert webhook.titles(hook) == ["[integrity] job backup is failing"]  # the good target got it
    assert len(webhook.bodies(f"refuse-{hook}")) == 1
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING: notification")]
    port = webhook.port
    assert warnings == [
        f"WARNING: notification 'job_failed:backup' (problem) not delivered to target 1 (json://127.0.0.1:{port}/***): "
        "Failed to send JSON POST notification: Internal server error., error=500 (the run's outcome is unchanged; "
        "see `integrity notify status`)",
        f"WARNING: notification 'job_failed:backup' (problem) not delivered to target 2 (json://127.0.0.1:{refused.split(':')[2].split('/')[0]}/***): "
        "A Connection error occurred sending JSON notification to 127.0.0.1 (the run's outcome is unchanged; "
        "see `integrity notify status`)",
    ]
    code, document = env.invoke_json("notify", "status")
    assert code == 0
    [row] = document["result"]["rows"]
    assert row["key"] == "job_failed:backup" and row["active"] is True
    assert "target 1 (json://127.0.0.1:" in row["last_error"] and "error=500" in row["last_error"]
    assert "target 2 (json://127.0.0.1:" in row["last_error"] and "Connection error" in row["last_error"]


def test_when_no_target_gets_it_the_next_run_tries_again(tmp_path, webhook, hook):
    env = notifying(tmp_path, missing_database(tmp_path), webhook.url(f"refuse-{hook}"))
    assert env.invoke("backup", "create").returncode == 4
    assert env.invoke("backup", "create").returncode == 4
    assert len(webhook.bodies(f"refuse-{hook}")) == 2  # undelivered: not marked as told
    code, document = env.invoke_json("notify", "status")
    [row] = document["result"]["rows"]
    assert row["active"] is False and row["detail"].startswith("not yet notified: job backup failed")
    assert "error=500" in row["last_error"]

    # The target comes back (the same URL without /refuse): the next run tells it, once.
    fixed = notifying(tmp_path, missing_database(tmp_path), webhook.url(hook))
    assert fixed.invoke("backup", "create").returncode == 4
    assert fixed.invoke("backup", "create").returncode == 4
    assert webhook.titles(hook) == ["[integrity] job backup is failing"]


def _notifications_row(env: BackupEnv) -> tuple[str, str] | None:
    code, document = env.invoke_json("status")
    rows = {c["name"]: (c["state"], c["detail"]) for c in document["result"]["checks"]}
    return rows.get("notifications")


def test_a_delivery_failure_is_a_status_problem_until_notify_test_reaches_every_target(tmp_path, sqlite_url, webhook,
                                                                                       hook):
    targets = (webhook.url(f"refuse-{hook}"), webhook.url(hook))
    assert notifying(tmp_path, missing_database(tmp_path), *targets).invoke("backup", "create").returncode == 4
    live = notifying(tmp_path, sqlite_url, *targets)
    assert _notifications_row(BackupEnv(tmp_path, sqlite_url)) is None  # no targets: no row

    state, detail = _notifications_row(live)
    assert state == "problem"
    assert detail.startswith("1 notification(s) did not reach every target of 2 target(s), the newest job_failed:backup at ")
    assert f"target 1 (json://127.0.0.1:{webhook.port}/***): Failed to send JSON POST notification" in detail
    assert detail.endswith("fix [notify] targets, then run `integrity notify test` (it clears these once every target answers)")

    assert live.invoke("notify", "test").returncode == 4  # still refusing: still a problem
    assert _notifications_row(live)[0] == "problem"
    fixed = notifying(tmp_path, sqlite_url, webhook.url(hook))
    assert fixed.invoke("notify", "test").returncode == 0
    assert _notifications_row(fixed) == ("ok", "1 target(s); every notification reached every target")


# ---------------------------------------------------------------- notify test


def test_notify_test_sends_to_every_target(tmp_path, sqlite_url, webhook, hook):
    env = notifying(tmp_path, sqlite_url, webhook.url(hook))
    result = env.invoke("notify", "test")
    assert result.returncode == 0, result.output
    assert result.stdout.splitlines() == [
        "sent '[integrity] test notification' to 1 target(s)",
        f"  target 1 (json://127.0.0.1:{webhook.port}/***): ok",
    ]
    [body] = webhook.bodies(hook)
    assert body["title"] == "[integrity] test notification" and body["type"] == "success"


def test_notify_test_is_exit_4_naming_the_target_that_failed(tmp_path, sqlite_url, webhook, hook):
    env = notifying(tmp_path, sqlite_url, webhook.url(hook), webhook.url(f"refuse-{hook}"))
    result = env.invoke("notify", "test")
    assert result.returncode == 4
    assert one_error(result) == (
        f"1 of 2 notification target(s) failed, the first: target 2 (json://127.0.0.1:{webhook.port}/***): "
        "Failed to send JSON POST notification: Internal server error., error=500; "
        "fix it in [notify] targets and run `integrity notify test` again")
    assert len(webhook.bodies(hook)) == 1  # the good target still got its test


def test_notify_test_without_targets_or_with_a_url_apprise_does_not_know(tmp_path, sqlite_url):
    env = BackupEnv(tmp_path, sqlite_url)
    result = env.invoke("notify", "test")
    assert result.returncode == 4
    assert one_error(result) == ('no [notify] targets are configured; add targets = ["json://host/path"] to [notify] '
                                 "in integrity.toml (or set INTEGRITY_NOTIFY__TARGETS)")
    odd = notifying(tmp_path, sqlite_url, f"nosuchscheme://{SECRET}/x")
    result = odd.invoke("notify", "test")
    assert result.returncode == 4
    assert one_error(result).startswith("1 of 1 notification target(s) failed, the first: target 1 (nosuchscheme://***): "
                                        "Apprise does not understand this URL")


def test_without_the_notify_extra_the_error_says_to_install_it(tmp_path, sqlite_url, webhook, hook):
    """Apprise missing (an `apprise` that cannot be imported, first on the path): `notify
    test` is exit 4 naming the extra; a run that would notify still ends as it would and
    warns with the same hint."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "apprise.py").write_text("raise ImportError(\"No module named 'apprise'\")\n")
    env = notifying(tmp_path, missing_database(tmp_path), webhook.url(hook))
    process_env = env.process_env()
    process_env["PYTHONPATH"] = os.pathsep.join([str(shadow), process_env["PYTHONPATH"]])

    def run(*args):
        return subprocess.run([*INTEGRITY, *args], cwd=tmp_path, env=process_env, capture_output=True, text=True, timeout=60)

    result = run("notify", "test")
    assert result.returncode == 4
    assert one_error(result) == ("[notify] targets are set but Apprise is not installed; install the `notify` extra: "
                                 "pip install 'typing-game-integrity[notify]'")
    result = run("backup", "create")
    assert result.returncode == 4 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("WARNING")] == [
        "WARNING: [notify] targets are set but Apprise is not installed; install the `notify` extra: "
        "pip install 'typing-game-integrity[notify]'; 1 notification(s) not sent: job_failed:backup"]
    assert webhook.received == []
    # Nothing was marked as told: with Apprise back, the next run tells it.
    assert env.invoke("backup", "create").returncode == 4
    assert webhook.titles(hook) == ["[integrity] job backup is failing"]


# ---------------------------------------------------------------- secrets


def test_no_secret_of_a_target_appears_anywhere(tmp_path, sqlite_url, webhook, hook):
    refused = f"json://admin:{SECRET}@127.0.0.1:{free_port()}/{SECRET}/x"
    unknown = f"nosuchscheme://{SECRET}A/{SECRET}B"  # a token where a host would be
    targets = (webhook.url(f"refuse-{hook}"), refused, unknown, webhook.url(hook))
    broken = notifying(tmp_path, missing_database(tmp_path), *targets)
    working = notifying(tmp_path, sqlite_url, *targets)
    outputs = []
    # One real process (its stderr its own, Apprise imported afresh); in-process runs for the rest.
    for env, args, how in ((broken, ("backup", "create"), "run"), (broken, ("--json", "backup", "create"), "invoke"),
                           (working, ("-v", "backup", "create"), "invoke"), (working, ("notify", "test"), "invoke"),
                           (working, ("--json", "notify", "test"), "invoke"), (working, ("notify", "status"), "invoke"),
                           (working, ("--json", "notify", "status"), "invoke"), (working, ("--json", "status"), "invoke"),
                           (working, ("--json", "history"), "invoke")):
        result = getattr(env, how)(*args)
        outputs.append(result.stdout + result.stderr)
    assert any("not delivered to target 3 (nosuchscheme://***)" in text for text in outputs)
    assert webhook.titles(hook) == ["[integrity] job backup is failing", "[integrity] resolved: job backup",
                                    "[integrity] test notification", "[integrity] test notification"]
    for text in outputs:
        assert SECRET not in text, text
    state = working.settings().state.dir
    for path in [*state.rglob("*"), working.settings().metrics.path]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    # The resolved settings (what --json documents and reports carry) mask every target.
    described = working.settings().describe()["notify"]["targets"]
    assert described == [f"json://127.0.0.1:{webhook.port}/***", f"json://127.0.0.1:{refused.split(':')[3].split('/')[0]}/***",
                         "nosuchscheme://***", f"json://127.0.0.1:{webhook.port}/***"]


@pytest.mark.parametrize(("url", "shown"), [
    ("json://user:pw@127.0.0.1:8080/hook/token", "json://127.0.0.1:8080/***"),
    ("jsons://hooks.example.com/services/abc", "jsons://hooks.example.com/***"),
    ("mailto://user:pass@mail.example.com", "mailto://mail.example.com/***"),
    ("json://localhost", "json://localhost"),
    ("slack://TokenA/TokenB/TokenC", "slack://***"),
    ("discord://webhook_id/webhook_token", "discord://***"),
    ("tgram://123456789:AAHbottoken/chat", "tgram://***"),
    ("pover://user@token", "pover://***"),
    ("no scheme at all", "***"),
])
def test_a_target_is_shown_as_its_scheme_and_a_real_host_only(url, shown):
    from integrity.settings import masked_target

    assert masked_target(url) == shown


def test_a_bad_target_in_the_configuration_is_exit_4_without_its_secret(tmp_path, sqlite_url):
    env = notifying(tmp_path, sqlite_url, f"hooks.example.com/{SECRET}")
    result = env.invoke("status")
    assert result.returncode == 4
    assert one_error(result) == (
        "invalid value ['***'] for INTEGRITY_NOTIFY__TARGETS ([notify] targets); allowed: Apprise URLs (scheme://...), "
        'e.g. ["json://host/path", "slack://..."]')
    assert SECRET not in result.output


# ---------------------------------------------------------------- the ledger's record


@pytest.mark.postgres
def test_a_postgresql_ledger_notifies_once_too(tmp_path, sqlite_url, pg_empty_url, webhook, hook):
    ledger = {"INTEGRITY_STATE__LEDGER_URL": pg_empty_url}
    broken = notifying(tmp_path, missing_database(tmp_path), webhook.url(hook), **ledger)
    working = notifying(tmp_path, sqlite_url, webhook.url(hook), **ledger)
    for env, code in ((broken, 4), (broken, 4), (working, 0), (working, 0)):
        assert env.invoke("backup", "create").returncode == code
    assert webhook.titles(hook) == ["[integrity] job backup is failing", "[integrity] resolved: job backup"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_ledger(request, tmp_path):
    from integrity.ledger import Ledger

    url = "" if request.param == "sqlite" else request.getfixturevalue("pg_empty_url")
    ledger = Ledger.open(tmp_path / "state", url)
    yield ledger
    ledger.close()


def test_two_runs_that_see_the_same_change_notify_it_once(any_ledger):
    """Each change is claimed with a conditional write before it is sent: of two runs that
    read the same state, only the first claim lands (a new key, then a known one)."""
    from integrity.notify import Condition, _claim, read_rows

    failing = Condition("job_failed:backup", "job_failed", True, "job backup failed")
    assert _claim(any_ledger, failing.key, None, failing, "run1") is True
    assert _claim(any_ledger, failing.key, None, failing, "run2") is False
    before = read_rows(any_ledger)[failing.key]
    assert before.active is True and before.run_id == "run1"
    passing = Condition(failing.key, "job_failed", False, "job backup runs again")
    assert _claim(any_ledger, failing.key, before, passing, "run3") is True
    assert _claim(any_ledger, failing.key, before, passing, "run4") is False
    after = read_rows(any_ledger)[failing.key]
    assert (after.active, after.run_id, after.detail) == (False, "run3", "job backup runs again")
