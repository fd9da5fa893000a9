"""What every CLI module shares: exit codes, the usage error, and how output is written."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_OK, EXIT_ALERT, EXIT_USAGE, EXIT_BROKER = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input from the operator: exit code 2 with a message that says what to do."""


def emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    """One JSON document with --json, else the text."""
    print(json.dumps(payload, indent=2, default=str) if args.json else text)
