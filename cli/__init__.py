"""The composition root: the `promptrec` commands, and the gateway wired with its embedded
worker."""

from promptrec.cli.main import main

__all__ = ["main"]
