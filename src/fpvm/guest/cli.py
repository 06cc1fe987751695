"""`fpvm` subcommands of this area (placeholder until the area's commands land)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this area's subcommands to the top-level parser."""
