"""Library messages on the command line: the ``beyondkd`` logger, shown on stderr.

The library never prints; it logs to ``logging.getLogger("beyondkd")`` (silent unless the
application configures logging). The CLI shows those records on stderr, warnings prefixed with
``warning:``, beside its own rich output on stdout.
"""

from __future__ import annotations

import logging
import sys


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (tests swap it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


def show_library_messages(level: int = logging.INFO) -> None:
    """Send the ``beyondkd`` logger's records of ``level`` and above to stderr (once per process)."""
    log = logging.getLogger("beyondkd")
    if any(isinstance(h, _StderrHandler) for h in log.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(_Format())
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(level)
