"""Post the migration check's Markdown report on the pull request: one comment per pull
request, edited on each push (found by a hidden marker line), a new one the first time.

Run by the action's comment step (ci/github/action.yml) with the runner's own variables:
GITHUB_API_URL (https://api.github.com, or a GitHub Enterprise server's), GITHUB_REPOSITORY
(owner/name), and the step's GH_TOKEN, PR_NUMBER and REPORT. Python's standard library
only: the runner has no `integrity` requirement for this step.

A comment that cannot be posted (a pull request from a fork gets a read-only token) is a
warning, exit 0: the job's verdict is the check's exit code, and the report is in the
step summary either way. Missing settings are exit 2.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

MARKER = "<!-- integrity migration check -->"
PAGES = 10  # at most 1,000 comments looked through for the previous report


def main() -> int:
    missing = [name for name in ("GH_TOKEN", "GITHUB_REPOSITORY", "PR_NUMBER", "REPORT") if not os.environ.get(name)]
    if missing:
        print(f"Error: {', '.join(missing)} not set; the action's comment step sets them", file=sys.stderr)
        return 2
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    issue = f"{api}/repos/{os.environ['GITHUB_REPOSITORY']}/issues/{os.environ['PR_NUMBER']}"
    try:
        with open(os.environ["REPORT"], encoding="utf-8") as file:
            body = f"{file.read().rstrip()}\n\n{MARKER}\n"
    except OSError as exc:
        print(f"Error: cannot read the report {os.environ['REPORT']}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        previous = _previous_comment(issue)
        if previous is None:
            _request("POST", f"{issue}/comments", {"body": body})
            print(f"posted the report on pull request #{os.environ['PR_NUMBER']}")
        else:
            _request("PATCH", previous, {"body": body})
            print(f"updated the report on pull request #{os.environ['PR_NUMBER']}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else str(exc)
        print(f"::warning title=integrity migration check::could not post the report on the pull request ({reason}); "
              "it is in the job summary. A pull request from a fork gets a read-only token.")
    return 0


def _previous_comment(issue: str) -> str | None:
    """The API URL of this check's earlier comment on the pull request, if any."""
    for page in range(1, PAGES + 1):
        comments = _request("GET", f"{issue}/comments?per_page=100&page={page}")
        for comment in comments:
            if MARKER in (comment.get("body") or ""):
                return comment["url"]
        if len(comments) < 100:
            return None
    return None


def _request(method: str, url: str, document: dict | None = None):
    request = urllib.request.Request(url, method=method, data=None if document is None else json.dumps(document).encode())
    request.add_header("Authorization", f"Bearer {os.environ['GH_TOKEN']}")
    request.add_header("Accept", "application/vnd.github+json")
    request.add_header("X-GitHub-Api-Version", "2022-11-28")
    if document is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


if __name__ == "__main__":
    sys.exit(main())
