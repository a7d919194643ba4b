"""Point-in-time recovery on the field's own engines: Litestream for SQLite, pgBackRest for
PostgreSQL (issue 16). `engine.py` is the protocol both implement."""
