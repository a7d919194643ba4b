#!/usr/bin/env bash
# The migration check of a pull request (or merge request), shared by the GitHub Action
# (ci/github/action.yml) and the GitLab CI job (ci/gitlab/integrity-migrations.yml):
#
#   1. lint: `integrity migrate lint` on the revision files the change adds or modifies
#      (against MIGRATION_BASE_REF; each judged against the schema before it), else on
#      every revision pending after the configured database's revision (else base);
#      output as GitHub workflow-command annotations on GitHub, text elsewhere;
#   2. dry run: `integrity migrate dry-run` on the data MIGRATION_SOURCE names (for example
#      `--from-snapshot snapshot.db` from `integrity snapshot export --sanitize`, or
#      `--from-backup latest`), its Markdown report written to MIGRATION_REPORT for a
#      pull-request comment; without a source the report is the lint's, in Markdown;
#   3. exit: the worst of the two (5, 4, 3, then 0; the exit codes of `integrity`): 3 when
#      a revision would harm data or availability, 4 when the check could not run.
#
# Settings (environment variables; all optional):
#   INTEGRITY                 the command (default: integrity)
#   MIGRATION_ALEMBIC_CONFIG  alembic.ini or pyproject.toml of the project (default:
#                             ./alembic.ini, else ./pyproject.toml with [tool.alembic], else
#                             the game's own history)
#   MIGRATION_SOURCE          dry-run source options, split on spaces (no source: lint only)
#   MIGRATION_REPORT          where the Markdown report goes (default: migration-report.md)
#   MIGRATION_BASE_REF        git ref the change is compared with (GitHub: origin/$GITHUB_BASE_REF;
#                             GitLab: $CI_MERGE_REQUEST_DIFF_BASE_SHA)
#   MIGRATION_ANNOTATIONS     github or text (default: github when GITHUB_ACTIONS=true)
#   MIGRATION_FAIL_ON         error (default) or warning
#   MIGRATION_EXTRA_ARGS      more dry-run options, split on spaces (e.g. --limit 5)
set -u

integrity=${INTEGRITY:-integrity}
report=${MIGRATION_REPORT:-migration-report.md}
fail_on=${MIGRATION_FAIL_ON:-error}
annotations=${MIGRATION_ANNOTATIONS:-}
if [ -z "$annotations" ]; then
    if [ "${GITHUB_ACTIONS:-}" = "true" ]; then annotations=github; else annotations=text; fi
fi
project_config=${MIGRATION_ALEMBIC_CONFIG:-}
if [ -z "$project_config" ]; then  # the repository's own Alembic project, when it has one at its root
    if [ -f alembic.ini ]; then
        project_config=alembic.ini
    elif [ -f pyproject.toml ] && grep -q '^\[tool\.alembic\]' pyproject.toml; then
        project_config=pyproject.toml
    fi
fi
config=()
if [ -n "$project_config" ]; then config=(--alembic-config "$project_config"); fi

# The revision files the change adds or modifies (none when there is no base to compare with).
changed=()
if [ -n "${MIGRATION_BASE_REF:-}" ]; then
    if ! listing=$(git diff --name-only --diff-filter=AM "${MIGRATION_BASE_REF}...HEAD" 2>&1); then
        echo "Error: git cannot compare with MIGRATION_BASE_REF=${MIGRATION_BASE_REF}: ${listing}; fetch it (actions/checkout with fetch-depth: 0, or GIT_DEPTH: 0 on GitLab)" >&2
        exit 4
    fi
    while IFS= read -r file; do
        case "$file" in
            */versions/*.py|versions/*.py) [ -f "$file" ] && changed+=("$file") ;;
        esac
    done <<< "$listing"
fi

# 1. lint
echo "== integrity migrate lint ${changed[*]:-(pending revisions)}"
if [ -n "${MIGRATION_BASE_REF:-}" ] && [ ${#changed[@]} -eq 0 ]; then
    echo "no revision file added or modified since ${MIGRATION_BASE_REF}: nothing to lint"
    lint_rc=0
else
    "$integrity" migrate lint "${config[@]}" --fail-on "$fail_on" --format "$annotations" "${changed[@]}"
    lint_rc=$?
fi

# 2. dry run (or the lint's Markdown when there is no data to run on)
source_args=()
extra_args=()
read -r -a source_args <<< "${MIGRATION_SOURCE:-}"
read -r -a extra_args <<< "${MIGRATION_EXTRA_ARGS:-}"
mkdir -p "$(dirname -- "$report")"
if [ ${#source_args[@]} -gt 0 ]; then
    echo "== integrity migrate dry-run ${source_args[*]} (Markdown report: $report)"
    errors=$(mktemp)
    "$integrity" migrate dry-run "${config[@]}" "${source_args[@]}" "${extra_args[@]}" --fail-on "$fail_on" --format markdown > "$report" 2> "$errors"
    dry_rc=$?
    cat -- "$errors" >&2
    if [ ! -s "$report" ]; then  # it could not run (exit 4, 2): the comment says why
        { printf '### ⚠️ Migration dry run could not run (exit %s)\n\n```\n' "$dry_rc"; grep -v '^database: ' -- "$errors"; printf '```\n'; } > "$report"
    fi
    rm -f -- "$errors"
else
    echo "== no MIGRATION_SOURCE: no dry run; the report is the lint's (Markdown report: $report)"
    if [ -n "${MIGRATION_BASE_REF:-}" ] && [ ${#changed[@]} -eq 0 ]; then
        printf '### ✅ Migration check\n\nNo revision file added or modified since `%s`.\n' "$MIGRATION_BASE_REF" > "$report"
    else
        "$integrity" migrate lint "${config[@]}" --fail-on "$fail_on" --format markdown "${changed[@]}" > "$report"
    fi
    dry_rc=0
fi
cat -- "$report"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat -- "$report" >> "$GITHUB_STEP_SUMMARY"; fi

# 3. the worst exit code: 5, 4, 3, then anything else non-zero, then 0
worst=0
for rank in 5 4 3; do
    if [ "$lint_rc" -eq "$rank" ] || [ "$dry_rc" -eq "$rank" ]; then worst=$rank; break; fi
done
if [ "$worst" -eq 0 ]; then
    if [ "$lint_rc" -ne 0 ]; then worst=$lint_rc; elif [ "$dry_rc" -ne 0 ]; then worst=$dry_rc; fi
fi
echo "== migration check: lint exit $lint_rc, dry run exit $dry_rc: exit $worst"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
    { echo "exit-code=$worst"; echo "report=$report"; } >> "$GITHUB_OUTPUT"
fi
exit "$worst"
