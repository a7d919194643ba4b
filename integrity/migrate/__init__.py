"""Schema-change dry runs: rehearse Alembic revisions on a snapshot copy and prove they
keep the data (`integrity migrate lint|rules|dry-run|apply`)."""
