"""The typing game: its schema, metrics, store API and terminal program."""

__version__ = "0.1.0"
