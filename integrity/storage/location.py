"""A repository's location: a file system path, or `s3://bucket/prefix`.

Parsed here without importing any client library, so settings and `--help` stay light.
"""

from __future__ import annotations

import re

S3_SCHEME = "s3://"
# S3's bucket naming rules (3-63 characters, lower-case letters, digits, dots and hyphens,
# starting and ending with a letter or digit): a typo is refused here, not by the server.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9!_.*'()-]+$")


class S3Url(str):
    """`s3://bucket/prefix`, validated: the value of a repository setting on object storage."""

    def __new__(cls, text: str) -> "S3Url":
        problem = s3_url_problem(text)
        if problem:
            raise ValueError(problem)
        return super().__new__(cls, text.rstrip("/"))

    @property
    def bucket(self) -> str:
        return self[len(S3_SCHEME):].partition("/")[0]

    @property
    def prefix(self) -> str:
        """The key prefix with its trailing slash ('' for the bucket's root)."""
        rest = self[len(S3_SCHEME):].partition("/")[2].strip("/")
        return f"{rest}/" if rest else ""


def is_s3_url(text: object) -> bool:
    return isinstance(text, str) and text.startswith(S3_SCHEME)


def s3_url_problem(text: str) -> str | None:
    """What is wrong with an `s3://` location, or None."""
    if not is_s3_url(text):
        return "an s3://bucket/prefix URL"
    bucket, _, prefix = text[len(S3_SCHEME):].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        return "s3://BUCKET/prefix with a valid bucket name (3-63 lower-case letters, digits, dots and hyphens)"
    parts = prefix.strip("/").split("/") if prefix.strip("/") else []
    if any(part in (".", "..") or not _PREFIX_PART.match(part) for part in parts):
        return "s3://bucket/PREFIX whose parts are plain names (letters, digits and -_.!*'(), no empty part, . or ..)"
    return None

