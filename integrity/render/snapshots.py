"""Text renderer of `integrity snapshot export`."""

from __future__ import annotations

from rich.console import Console


def register(render_text) -> None:
    from integrity.snapshots.export import SnapshotExport

    render_text.register(SnapshotExport, render_export)


def render_export(result, console: Console) -> None:
    plain = {"highlight": False, "markup": False}
    console.print(f"wrote {result.path} ({result.bytes / 1e6:,.1f} MB, {result.format}) in {result.seconds:.2f}s", **plain)
    console.print(f"source    {result.source} at revision {result.revision or 'none'} "
                  f"(store {result.store_identity or 'unknown'})", **plain)
    console.print("rows      " + ", ".join(f"{name} {count:,}" for name, count in result.tables.items()), **plain)
    if not result.sanitized:
        console.print("sanitised no: the file holds the original personal data; keep it where production data may be",
                      **plain)
        return
    console.print(f"sanitised yes, pseudonym key {result.key}", **plain)
    for column in result.columns:
        console.print(f"          {column.column}: {column.rows:,} values replaced ({column.values:,} distinct)", **plain)
