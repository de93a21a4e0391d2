"""Durations written as a number and a unit (90s, 15m, 24h, 7d), for the live commands and the
HTTP parameters over a post store alike."""

from __future__ import annotations

import re
from datetime import timedelta

from hepta.errors import HeptaError


def parse_duration(text: str, flag: str) -> timedelta:
    """A duration such as 90s, 15m, 24h or 7d; the error names `flag`, the option or parameter it came from."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not match:
        raise HeptaError(f"{flag} {text!r} is not a duration; write a number and s, m, h or d, such as 15m or 24h")
    number, unit = float(match.group(1)), match.group(2)
    return timedelta(seconds=number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])
