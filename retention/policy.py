"""The retention planner: a pure function from (rules, backups, now) to a keep-or-delete plan.

Nothing here touches storage, Prefect or the clock: the caller lists the committed backups (from their
manifests), passes ``now`` explicitly and carries out the plan. The semantics are those of borg's
``prune`` (1.2 and later):

1. ``keep_within``: every backup strictly younger than the duration (``now - created_at < keep_within``)
   is kept; a backup exactly that old is not.
2. ``keep_last``, ``hourly``, ``daily``, ``weekly``, ``monthly``, ``yearly``, in this order, each a "tier"
   with a count N. Walking the backups newest first, a tier looks at the newest backup of each of its
   periods (for ``keep_last`` every backup is its own period, so it counts backups, not seconds). If that
   backup is already kept by an earlier rule, the period is passed over and does not count; otherwise the
   tier keeps it and counts the period. The tier stops once it has counted N periods. Periods without
   backups do not exist, so they never count. If the tier runs out of backups before it has counted N,
   it also keeps the oldest backup, unless that one is already kept (borg 1.2+: the first backup ever made
   keeps ageing until a newer one can take its place).
3. Safety, applied on top of the rules (they do not change what the tiers count): a locked backup is
   always kept (``"locked"``), the newest backup is always kept (``"newest"``), and if fewer than
   ``min_keep`` backups would be kept, the newest not-yet-kept backups are kept until ``min_keep`` is
   reached (``"min_keep"``).

A policy with no rule at all (no ``keep_within`` and every count ``None`` or 0) keeps everything.

Order: backups are ordered by ``created_at``; among backups with the same ``created_at`` the one with the
greater ``backup_id`` counts as the newer. The plan therefore does not depend on input order.

Periods are computed in the policy's IANA time zone; see :mod:`prefect_db_backup.retention.periods` for
how daylight-saving changes are handled. If local dates ever go backwards (a zone that falls back across
midnight), a period is still one period: only its newest backup can be kept by the tier.

Re-planning: planning again over exactly the kept backups with the same rules and the same ``now`` keeps
every one of them, for the same reasons (the plan is a fixed point), and planning again over the kept
backups plus any part of the planned deletions (an interrupted run) keeps the same set and deletes the rest.
Why: every period a tier visits has its newest backup kept, so it survives with the same period, newest
backup and "already kept" status; the tier stops at the same place, or runs out and keeps the same (kept)
oldest backup; safety rules see the same locked, newest and min_keep candidates. With a later ``now`` a
second run may of course delete more: backups age out of ``keep_within`` and, once newer backups exist,
out of the tiers' windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from operator import attrgetter

from prefect_db_backup.retention.durations import format_duration
from prefect_db_backup.retention.periods import PERIOD_KEYS, TIERS, load_timezone, period_label

REASON_LOCKED = "locked"
REASON_NEWEST = "newest"
REASON_MIN_KEEP = "min_keep"
REASON_NO_RULES = "no retention rules (keep everything)"
REASON_DELETE = "no rule keeps it"

COUNT_FIELDS: tuple[str, ...] = ("keep_last", *TIERS)
"""The count rules, in the order the planner applies them (after ``keep_within``)."""


def _is_aware(value: datetime) -> bool:
    return value.tzinfo is not None and value.tzinfo.utcoffset(value) is not None


@dataclass(frozen=True)
class BackupRecord:
    """One committed backup, identified by its manifest.

    Attributes:
        backup_id: Stable, unique identifier (the caller uses the backup file's path).
        created_at: Timezone-aware time the backup started, from its manifest (never a storage mtime).
        locked: True when the backup is locked; a locked backup is never planned for deletion.

    Raises:
        ValueError: If ``backup_id`` is empty or ``created_at`` is not a timezone-aware datetime.
    """

    backup_id: str
    created_at: datetime
    locked: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.backup_id, str) or not self.backup_id:
            raise ValueError(f"backup_id must be a non-empty string, got {self.backup_id!r}")
        if not isinstance(self.created_at, datetime) or not _is_aware(self.created_at):
            raise ValueError(
                f"created_at of backup {self.backup_id!r} must be a timezone-aware datetime, "
                f"got {self.created_at!r}"
            )


@dataclass(frozen=True)
class Decision:
    """What the plan does with one backup, and why.

    Attributes:
        backup: The backup.
        keep: True to keep it, False to delete it.
        reasons: For a kept backup, every rule that keeps it, deciding rule first: at most one of
            ``"keep_within 7d"``, ``"keep_last #2"``, ``"daily 2026-11-27"`` (a tier and its period;
            ``"... [oldest]"`` when kept as the oldest backup of a tier that ran out), or the no-rules reason;
            then any of ``"locked"``, ``"newest"``, ``"min_keep"``. For a deleted backup
            ``("no rule keeps it",)``.
    """

    backup: BackupRecord
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RetentionPlan:
    """The outcome of :func:`plan_retention`.

    Attributes:
        decisions: One decision for every input backup, exactly once, newest first.
    """

    decisions: tuple[Decision, ...]

    @property
    def keep(self) -> tuple[BackupRecord, ...]:
        """The backups to keep, newest first."""
        return tuple(d.backup for d in self.decisions if d.keep)

    @property
    def delete(self) -> tuple[BackupRecord, ...]:
        """The backups to delete, newest first."""
        return tuple(d.backup for d in self.decisions if not d.keep)


@dataclass(frozen=True)
class RetentionRules:
    """The pure-data form of a retention policy (what :class:`RetentionPolicy.rules` returns).

    Attributes:
        keep_last: Keep the N newest backups (not already kept by ``keep_within``).
        keep_within: Keep every backup strictly younger than this duration.
        hourly: Keep the newest backup of each of the last N hours that have backups.
        daily: Keep the newest backup of each of the last N days that have backups.
        weekly: Keep the newest backup of each of the last N ISO weeks that have backups.
        monthly: Keep the newest backup of each of the last N months that have backups.
        yearly: Keep the newest backup of each of the last N years that have backups.
        min_keep: Never keep fewer backups than this (as long as that many exist).
        timezone: IANA time zone in which hours, days, weeks, months and years are counted.

    A count of ``None`` or 0 disables its rule. With no rule at all the policy keeps everything.

    Raises:
        ValueError: If a count is negative or not an integer, ``keep_within`` is not a positive
            timedelta, or ``timezone`` is unknown; the message names the field.
    """

    keep_last: int | None = None
    keep_within: timedelta | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    min_keep: int = 1
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        for name in (*COUNT_FIELDS, "min_keep"):
            value = getattr(self, name)
            if value is None and name != "min_keep":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value}")
        if self.keep_within is not None and (
            not isinstance(self.keep_within, timedelta) or self.keep_within <= timedelta(0)
        ):
            raise ValueError(f"keep_within must be a positive duration, got {self.keep_within!r}")
        load_timezone(self.timezone)

    @property
    def is_noop(self) -> bool:
        """True when no rule is set, so the policy keeps every backup."""
        return self.keep_within is None and not any(getattr(self, name) for name in COUNT_FIELDS)

    def describe(self) -> str:
        """Summarise the rules in one line, e.g. ``"keep_last=7, daily=7, min_keep=1, timezone=UTC"``."""
        if self.is_noop:
            return f"keep everything (no retention rules), timezone={self.timezone}"
        parts = []
        if self.keep_within is not None:
            parts.append(f"keep_within={format_duration(self.keep_within)}")
        parts.extend(f"{name}={getattr(self, name)}" for name in COUNT_FIELDS if getattr(self, name))
        parts.append(f"min_keep={self.min_keep}")
        parts.append(f"timezone={self.timezone}")
        return ", ".join(parts)


_BY_ID = attrgetter("backup_id")
_BY_TIME = attrgetter("created_at")
_DELETE_REASONS = (REASON_DELETE,)


def _apply_keep_last(n: int, rule_reason: list[str | None]) -> None:
    """Keep the ``n`` newest backups not already kept (each backup is its own period)."""
    count = 0
    for index, reason in enumerate(rule_reason):
        if count == n:
            return
        if reason is None:
            count += 1
            rule_reason[index] = f"keep_last #{count}"
    # Running out of backups here means every backup is kept, the oldest included: nothing more to do.


def _apply_tier(tier: str, n: int, local: list[datetime], rule_reason: list[str | None]) -> None:
    """Apply one calendar tier in place (see the module docstring for the exact rule)."""
    key_of = PERIOD_KEYS[tier]
    seen: set[object] = set()
    count = 0
    for index, when in enumerate(local):
        key = key_of(when)
        if key in seen:
            continue  # not the newest backup of its period
        seen.add(key)
        if rule_reason[index] is not None:
            continue  # period passed over: an earlier rule already keeps its newest backup
        rule_reason[index] = f"{tier} {period_label(tier, when)}"
        count += 1
        if count == n:
            return
    oldest = len(local) - 1
    if oldest >= 0 and rule_reason[oldest] is None:
        rule_reason[oldest] = f"{tier} {period_label(tier, local[oldest])} [oldest]"


def plan_retention(rules: RetentionRules, backups: Iterable[BackupRecord], now: datetime) -> RetentionPlan:
    """Decide which backups to keep and which to delete.

    Pure and deterministic: the result depends only on the arguments, never on their order, the clock or
    storage. See the module docstring for the semantics.

    Args:
        rules: The retention rules.
        backups: Every committed backup of one job on one destination.
        now: The reference time for ``keep_within``; timezone-aware.

    Returns:
        A plan with one decision per backup, newest first. An empty input gives an empty plan.

    Raises:
        ValueError: If ``now`` is naive, a backup is not a :class:`BackupRecord`, or two backups share a
            ``backup_id``.
    """
    if not isinstance(now, datetime) or not _is_aware(now):
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")
    items = list(backups)
    ids: set[str] = set()
    for backup in items:
        if not isinstance(backup, BackupRecord):
            raise ValueError(f"expected BackupRecord, got {type(backup).__name__}")
        if backup.backup_id in ids:
            raise ValueError(f"duplicate backup_id {backup.backup_id!r}: each backup must appear once")
        ids.add(backup.backup_id)
    # Newest first; among equal created_at the greater backup_id first (two stable sorts measured
    # faster than one sort on a tuple key).
    order = sorted(sorted(items, key=_BY_ID, reverse=True), key=_BY_TIME, reverse=True)

    rule_reason: list[str | None] = [None] * len(order)
    if rules.is_noop:
        rule_reason = [REASON_NO_RULES] * len(order)
    else:
        if rules.keep_within is not None:
            label = f"keep_within {format_duration(rules.keep_within)}"
            try:
                limit: datetime | None = now - rules.keep_within
            except OverflowError:  # the window reaches before year 1: every backup is within it
                limit = None
            for index, backup in enumerate(order):
                if limit is not None and backup.created_at <= limit:
                    break  # newest first: every later backup is at least as old
                rule_reason[index] = label
        if rules.keep_last:
            _apply_keep_last(rules.keep_last, rule_reason)
        tiers = [(tier, getattr(rules, tier)) for tier in TIERS if getattr(rules, tier)]
        if tiers:
            zone = load_timezone(rules.timezone)
            local = [backup.created_at.astimezone(zone) for backup in order]
            for tier, n in tiers:
                _apply_tier(tier, n, local, rule_reason)

    why: list[tuple[str, ...] | None] = [None if r is None else (r,) for r in rule_reason]
    for index, backup in enumerate(order):
        if backup.locked:
            why[index] = (*(why[index] or ()), REASON_LOCKED)
    if order:
        why[0] = (*(why[0] or ()), REASON_NEWEST)
    missing = min(rules.min_keep, len(order)) - (len(order) - why.count(None))
    index = 0
    while missing > 0:  # terminates: fewer kept than min(min_keep, len) means some index is unkept
        if why[index] is None:
            why[index] = (REASON_MIN_KEEP,)
            missing -= 1
        index += 1

    return RetentionPlan(
        decisions=tuple(
            Decision(backup, reason is not None, reason or _DELETE_REASONS)
            for backup, reason in zip(order, why, strict=True)
        )
    )


def rules_fields() -> tuple[str, ...]:
    """Names of the :class:`RetentionRules` fields, in declaration order (for the block's mapping)."""
    return tuple(f.name for f in fields(RetentionRules))


__all__ = [
    "COUNT_FIELDS",
    "REASON_DELETE",
    "REASON_LOCKED",
    "REASON_MIN_KEEP",
    "REASON_NEWEST",
    "REASON_NO_RULES",
    "BackupRecord",
    "Decision",
    "RetentionPlan",
    "RetentionRules",
    "plan_retention",
    "rules_fields",
]
