"""The one error type of the deployment path: its message is a single line a user can act on."""
from __future__ import annotations


class DeployError(RuntimeError):
    """Bad model file, bad input or missing engine: `str(e)` names the culprit and what to do."""
