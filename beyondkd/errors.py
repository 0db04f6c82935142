"""User-facing errors.

Everything a user can get wrong (a config key, a model name, a missing dataset, a class-count
mismatch, a non-finite loss) raises :class:`BeyondKDError` with a single line that names the
problem and the fix. The CLI prints that line and exits with status 2; it never shows a stack
trace for these.
"""

from __future__ import annotations


class BeyondKDError(Exception):
    """An error caused by the user's input, with a one-line message naming the fix."""

    def __init__(self, message: str) -> None:
        # Keep the message on one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))


class ConfigError(BeyondKDError):
    """A configuration file or override is invalid."""


class DataError(BeyondKDError):
    """A dataset is missing or malformed."""


class NonFiniteLossError(BeyondKDError):
    """A loss term became NaN or infinite during training."""


def suggest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
