"""Durations for ``keep_within``: a small, explicit text grammar and its inverse.

Grammar (whitespace between terms is allowed, letters are case-insensitive)::

    duration := term { term }
    term     := integer unit
    unit     := "h"  (hour)
              | "d"  (day = 24 hours)
              | "w"  (week = 7 days)
              | "y"  (year = 365 days)

Examples: ``"36h"``, ``"7d"``, ``"2w"``, ``"1y"``, ``"1d12h"``. Months are deliberately not a unit: ``"m"``
is ambiguous (minutes or months) and a month has no fixed length; write ``"31d"`` or ``"4w"`` instead.
The total must be positive. Days and years are fixed lengths of elapsed time (a day is 24 hours even on a
daylight-saving change, a year is 365 days), so ``keep_within`` never depends on a time zone.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_HOURS = {"h": 1, "d": 24, "w": 24 * 7, "y": 24 * 365}
_TERM = re.compile(r"\s*(\d+)\s*([a-zA-Z]+)\s*")

GRAMMAR_HINT = "use a number and a unit h, d, w or y, e.g. '36h', '7d', '2w', '1y' or '1d12h'"


def parse_duration(text: str, *, field: str = "keep_within") -> timedelta:
    """Parse a duration written in the grammar of this module.

    Args:
        text: The duration, e.g. ``"7d"`` or ``"1d12h"``.
        field: Name of the setting it came from, used in error messages.

    Returns:
        The duration as a positive :class:`~datetime.timedelta`.

    Raises:
        ValueError: If the text does not follow the grammar, uses an unknown unit, is zero, or is too
            large to represent; the message names ``field``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{field} must be a duration ({GRAMMAR_HINT}), got {text!r}")
    hours = 0
    position = 0
    while position < len(text):
        match = _TERM.match(text, position)
        if match is None:
            raise ValueError(f"{field}: cannot parse {text!r} as a duration ({GRAMMAR_HINT})")
        number, unit = match.group(1), match.group(2).lower()
        if unit == "m":
            raise ValueError(
                f"{field}: unit 'm' in {text!r} is ambiguous (minutes or months); "
                "write days ('31d') or weeks ('4w') instead"
            )
        if unit not in _UNIT_HOURS:
            raise ValueError(f"{field}: unknown unit {unit!r} in {text!r} ({GRAMMAR_HINT})")
        hours += int(number) * _UNIT_HOURS[unit]
        position = match.end()
    if hours <= 0:
        raise ValueError(f"{field} must be a positive duration, got {text!r}")
    try:
        return timedelta(hours=hours)
    except OverflowError as exc:
        raise ValueError(f"{field}: duration {text!r} is too large") from exc


def format_duration(value: timedelta) -> str:
    """Render a duration compactly, in the grammar of this module when it is a whole number of hours.

    ``format_duration(parse_duration(s))`` gives a canonical form of ``s`` (weeks and years are written as
    days, e.g. ``"2w"`` -> ``"14d"``). Durations that are not whole hours fall back to ``str(value)``.

    Args:
        value: The duration.

    Returns:
        For example ``"7d"``, ``"1d12h"``, ``"36h"`` is ``"1d12h"``, or ``"0:30:00"``.
    """
    if value % timedelta(hours=1) or value <= timedelta(0):
        return str(value)
    total_hours = value // timedelta(hours=1)
    days, hours = divmod(total_hours, 24)
    parts = []
    if days:
        parts.append(f"{days}d")
    if hours:
        parts.append(f"{hours}h")
    return "".join(parts)
