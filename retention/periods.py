"""Calendar periods of the grandfather-father-son tiers, computed in a policy's time zone.

Each tier maps a backup's local time (its ``created_at`` converted to the policy's IANA time zone) to a
period key. Two backups belong to the same period exactly when their keys are equal:

- ``hourly``: local date, local wall-clock hour AND the UTC offset in force. On a fall-back day the
  repeated hour (in Europe/Berlin 02:00-03:00 happens twice, first at +02:00 then at +01:00) is therefore
  TWO hourly periods, each one real hour long; every hourly period is a contiguous stretch of real time of
  at most one hour. On a spring-forward day the skipped hour simply has no period.
- ``daily``: local calendar date (a day of 23 or 25 hours on a daylight-saving change is still one day).
- ``weekly``: ISO 8601 week, ``isocalendar()`` year and week number (weeks run Monday to Sunday; the days
  around New Year may belong to week 52 or 53 of the previous ISO year or week 1 of the next).
- ``monthly``: local year and month.
- ``yearly``: local year.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TIERS: tuple[str, ...] = ("hourly", "daily", "weekly", "monthly", "yearly")
"""The calendar tiers, in the order the planner applies them."""


def load_timezone(name: str, *, field: str = "timezone") -> ZoneInfo:
    """Return the IANA time zone called ``name``.

    Args:
        name: An IANA time zone name such as ``"UTC"`` or ``"Europe/Berlin"``.
        field: Name of the setting it came from, used in error messages.

    Returns:
        The :class:`zoneinfo.ZoneInfo`.

    Raises:
        ValueError: If ``name`` is not a known IANA time zone; the message names ``field``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{field} must be an IANA time zone name such as 'UTC' or 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(
            f"{field}: unknown IANA time zone {name!r} (use a name such as 'UTC' or 'Europe/Berlin')"
        ) from exc


def _hourly(local: datetime) -> Hashable:
    return (local.year, local.month, local.day, local.hour, local.utcoffset())


def _daily(local: datetime) -> Hashable:
    return (local.year, local.month, local.day)


def _weekly(local: datetime) -> Hashable:
    iso = local.isocalendar()
    return (iso.year, iso.week)


def _monthly(local: datetime) -> Hashable:
    return (local.year, local.month)


def _yearly(local: datetime) -> Hashable:
    return local.year


PERIOD_KEYS: dict[str, Callable[[datetime], Hashable]] = {
    "hourly": _hourly,
    "daily": _daily,
    "weekly": _weekly,
    "monthly": _monthly,
    "yearly": _yearly,
}
"""For each tier, the function from an aware local datetime to its period key."""


def _format_offset(offset: timedelta | None) -> str:
    if offset is None:
        return ""
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def period_label(tier: str, local: datetime) -> str:
    """Describe the period of ``tier`` that contains ``local``, for reasons and reports.

    Args:
        tier: One of :data:`TIERS`.
        local: An aware datetime already converted to the policy's time zone.

    Returns:
        ``"2026-10-25 02:00+01:00"`` (hourly), ``"2026-11-27"`` (daily), ``"2026-W48"`` (weekly),
        ``"2026-11"`` (monthly) or ``"2026"`` (yearly).

    Raises:
        KeyError: If ``tier`` is not a calendar tier.
    """
    if tier == "hourly":
        return f"{local:%Y-%m-%d %H}:00{_format_offset(local.utcoffset())}"
    if tier == "daily":
        return f"{local:%Y-%m-%d}"
    if tier == "weekly":
        iso = local.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    if tier == "monthly":
        return f"{local:%Y-%m}"
    if tier == "yearly":
        return f"{local:%Y}"
    raise KeyError(tier)
