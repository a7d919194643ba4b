"""Directories built once per module by running commands, and copied into each test.

`integrity init` and `backup create` cost 0.3 to 0.7 s a test under load, and many tests
only need their result to start from. `DataDirTemplate.build` runs the commands once in
a directory laid out like a test's tmp_path; `copy_into(tmp_path)` gives a test its own
copy of everything there, as if it had run them itself.

Two kinds of file written there hold absolute paths, and are rewritten to the copy's:
`integrity.toml` (init writes the database URL into it) and each backup's
`manifest.json` (its source, with manifest.sha256 recomputed), so that a backup the test
takes next has the same source as the previous one, as it would have. Nothing else the
commands write holds them (the ledger, the journal, the metrics file and the lock files
were searched for the template's path). Signed manifests are not supported: their
signature would no longer match.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


class DataDirTemplate:
    """A directory after some `integrity` commands ran in it, to copy into tests."""

    def __init__(self, root: Path, outputs: list) -> None:
        self.root = root
        self.outputs = outputs  # each command's CliRunner result, in order

    @classmethod
    def build(cls, root: Path, environ: dict[str, str], *commands: list[str]) -> DataDirTemplate:
        """Run each command (`integrity --no-input ARGS`, in this process, from `root`)
        with exactly the INTEGRITY_* variables of `environ` (and its others); each must
        exit 0. The paths in `environ` should lie under `root`."""
        from cli_runner import CliRunner
        from integrity.cli import app

        env = {name: None for name in os.environ if name.startswith("INTEGRITY_")}
        env.update({"COLUMNS": "250", **environ})
        outputs = []
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(root)  # as a test runs: in its own directory
            for args in commands:
                result = CliRunner().invoke(app, ["--no-input", *args], env=env, input="", catch_exceptions=False)
                assert result.exit_code == 0, (args, result.output)
                outputs.append(result)
        for database in root.rglob("*.db"):  # a copy of the file alone must be whole
            for suffix in ("-wal", "-journal"):
                pending = database.with_name(database.name + suffix)
                assert not pending.exists() or pending.stat().st_size == 0, pending
        return cls(root, outputs)

    def copy_into(self, tmp_path: Path) -> None:
        """Everything under the template's root, copied to tmp_path (over what is there),
        with the root's path replaced by tmp_path where the files hold it."""
        from integrity.backups.format import MANIFEST, MANIFEST_HASH, MANIFEST_SIGNATURE, sha256_bytes

        for path in self.root.rglob("*.db"):  # SQLite's files of an older state must not pair with the copy
            for suffix in ("-wal", "-shm", "-journal"):
                (tmp_path / path.relative_to(self.root)).with_name(path.name + suffix).unlink(missing_ok=True)
        shutil.copytree(self.root, tmp_path, symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.db-wal", "*.db-shm", "*.db-journal"))
        old, new = f"{self.root}/".encode(), f"{tmp_path}/".encode()
        for config in tmp_path.rglob("integrity.toml"):
            config.write_bytes(config.read_bytes().replace(old, new))
        for manifest in tmp_path.rglob(MANIFEST):
            assert not (manifest.parent / MANIFEST_SIGNATURE).exists(), "a signed manifest cannot be re-pointed"
            data = manifest.read_bytes().replace(old, new)
            manifest.write_bytes(data)
            (manifest.parent / MANIFEST_HASH).write_text(f"{sha256_bytes(data)}  {MANIFEST}\n")
