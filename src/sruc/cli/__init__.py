"""The command line: a thin click layer over the library (one module per command)."""

from sruc.cli.main import cli, main

__all__ = ["cli", "main"]
