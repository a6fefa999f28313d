"""The one error type of the deployment path: its message is a single line a user can act on."""
from __future__ import annotations

import sys


class DeployError(RuntimeError):
    """Bad model file, bad input or missing engine: `str(e)` names the culprit and what to do."""


def print_note(message: str) -> None:
    """Where the runtime's one-line notes go unless the caller passes its own `note` (the CLI does)."""
    print(message, file=sys.stderr)
