"""The configured repositories by name: `primary` ([backups] repository) and its copies
(`[[repositories]]`), each opened as either kind with the same signing and checks."""

from __future__ import annotations

from dataclasses import replace

from game_core.errors import InvalidInput
from integrity.settings import PRIMARY_REPOSITORY, Settings


def repository_names(settings: Settings) -> list[str]:
    return [PRIMARY_REPOSITORY, *(entry.name for entry in settings.repositories)]


def settings_for(settings: Settings, name: str) -> Settings:
    """The settings as if `name` were the repository: every command (drill, verify, list)
    then works on a copy unchanged."""
    if name == PRIMARY_REPOSITORY:
        return settings
    for entry in settings.repositories:
        if entry.name == name:
            return replace(settings, backups=replace(settings.backups, repository=entry.location, s3=entry.s3))
    configured = ", ".join(repository_names(settings))
    raise InvalidInput(f"no repository named {name!r}; configured: {configured} (add copies as [[repositories]] "
                       "in integrity.toml)")


def open_repository(settings: Settings, name: str = PRIMARY_REPOSITORY):
    """The repository `name` (a Repository or an ObjectRepository: the same interface)."""
    from integrity.backups.repository import Repository

    return Repository.of(settings_for(settings, name))


def all_repositories(settings: Settings) -> list[tuple[str, object]]:
    return [(name, open_repository(settings, name)) for name in repository_names(settings)]
