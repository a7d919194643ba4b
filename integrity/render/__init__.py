"""How results look: JSON documents (`document`), rich text (`text`, with one module per
topic) and Markdown (`migrate`).

The library returns dataclasses and never imports this package; only the CLI layer
(integrity/cli.py, integrity/runtime.py, integrity/commands/) does (tests/test_layering.py
says so). The topic modules import the library's result types, never `text`: the registry
imports them, so nothing here imports its importer back.
"""
