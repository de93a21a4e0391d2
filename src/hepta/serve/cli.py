"""`hepta` commands of the serve layer."""

from __future__ import annotations

import argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds this layer's subcommands to the `hepta` parser."""
