"""The scheduler behind `integrity schedule run` / `schedule list`.

`triggers`: `[schedule]` values as triggers and fire times; `records`: claims, skips,
missed fires and heartbeats in the ledger; `runner`: one job run, recorded as its command
would record it; `pings`: healthchecks.io heartbeats; `daemon`: the BlockingScheduler.
"""
