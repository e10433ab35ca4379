"""The error every layer may raise for a user's mistake: ``dastudy`` (study/cli.py) prints it as one line,
without a traceback. It lives below all layers so that a reader (study/view/) or a command can raise it without
importing the CLI above it."""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""
