"""The retention policy block: which committed backups of a job to keep on each destination.

The block only holds and validates configuration; :meth:`RetentionPolicy.rules` turns it into the pure
:class:`~prefect_db_backup.retention.policy.RetentionRules` that
:func:`~prefect_db_backup.retention.policy.plan_retention` evaluates.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect.blocks.core import Block
from prefect_db_backup.retention.durations import GRAMMAR_HINT, parse_duration
from prefect_db_backup.retention.periods import load_timezone
from prefect_db_backup.retention.policy import COUNT_FIELDS, RetentionRules
from pydantic import Field, HttpUrl, field_validator

_COUNT_DESCRIPTION = (
    "Keep the newest backup of each of the last N {period} that have backups "
    "(periods whose newest backup an earlier rule keeps are passed over); empty or 0 disables the rule."
)


class RetentionPolicy(Block):
    """Which committed backups of a job to keep: keep-last, keep-within and grandfather-father-son tiers.

    Semantics are those of borg's ``prune``: rules apply in the order keep_within, keep_last, hourly,
    daily, weekly (ISO weeks), monthly, yearly; a backup is kept when any rule keeps it. Locked backups
    and the newest backup are always kept, and never fewer than ``min_keep``. A policy with no rule at all
    keeps everything (see :attr:`is_noop`).

    Attributes:
        keep_last: Keep the N newest backups.
        keep_within: Keep every backup younger than this duration ("36h", "7d", "2w", "1y", "1d12h").
        hourly: Tier count for hours.
        daily: Tier count for days.
        weekly: Tier count for ISO weeks.
        monthly: Tier count for months.
        yearly: Tier count for years.
        min_keep: Floor on the number of backups kept.
        timezone: IANA time zone for period boundaries.

    Example:
        Load a saved policy and show what it keeps:
        ```python
        from prefect_db_backup.blocks import RetentionPolicy

        policy = RetentionPolicy.load("BLOCK_NAME")
        print(policy.describe())
        ```
    """

    _block_type_name = "DB Backup Retention Policy"
    _documentation_url = HttpUrl("https://github.com/prefect-db-backup/prefect-db-backup#retention")
    _documentation_url = HttpUrl("https://github.com/prefect-db-backup/prefect-db-backup#retention")
    _description = (
        "Which database backups to keep: keep-last, keep-within and hourly, daily, weekly, monthly and "
        "yearly tiers, with locked backups, the newest backup and a minimum count always kept."
    )

    keep_last: int | None = Field(
        default=None,
        description="Keep the N newest backups (not already kept by keep_within); empty or 0 disables it.",
        examples=[7],
    )
    keep_within: timedelta | None = Field(
        default=None,
        description=(
            "Keep every backup strictly younger than this duration: a number and a unit h (hours), "
            "d (days), w (weeks) or y (365 days), e.g. '36h', '7d', '2w', '1y' or '1d12h'."
        ),
        examples=["7d"],
    )
    hourly: int | None = Field(default=None, description=_COUNT_DESCRIPTION.format(period="hours"))
    daily: int | None = Field(default=None, description=_COUNT_DESCRIPTION.format(period="days"))
    weekly: int | None = Field(default=None, description=_COUNT_DESCRIPTION.format(period="ISO weeks"))
    monthly: int | None = Field(default=None, description=_COUNT_DESCRIPTION.format(period="months"))
    yearly: int | None = Field(default=None, description=_COUNT_DESCRIPTION.format(period="years"))
    min_keep: int = Field(
        default=1,
        description="Never keep fewer backups than this, whatever the rules say (the newest is always kept).",
    )
    timezone: str = Field(
        default="UTC",
        description=(
            "IANA time zone in which hours, days, weeks, months and years begin, e.g. 'Europe/Berlin'."
        ),
        examples=["UTC", "Europe/Berlin"],
    )

    @field_validator(*COUNT_FIELDS, "min_keep", mode="before")
    @classmethod
    def _check_count(cls, value: Any, info: Any) -> Any:
        if value is None and info.field_name != "min_keep":
            return None
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{info.field_name} must be a whole number, got {value!r}")
        if value < 0:
            raise ValueError(f"{info.field_name} must be 0 or more, got {value}")
        return value

    @field_validator("keep_within", mode="before")
    @classmethod
    def _parse_keep_within(cls, value: Any) -> Any:
        if value is None or isinstance(value, timedelta):
            return value
        if isinstance(value, bool | int | float):
            raise ValueError(f"keep_within needs a unit: {GRAMMAR_HINT} (got {value!r})")
        if isinstance(value, str):
            text = value.strip()
            if text.upper().startswith(("P", "-P")):
                return text  # ISO 8601 duration, as Prefect stores a saved block: parsed by pydantic
            return parse_duration(text, field="keep_within")
        raise ValueError(f"keep_within must be a duration ({GRAMMAR_HINT}), got {value!r}")

    @field_validator("keep_within")
    @classmethod
    def _check_keep_within_positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError(f"keep_within must be a positive duration, got {value}")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        load_timezone(value, field="timezone")
        return value

    @property
    def is_noop(self) -> bool:
        """True when no rule is set: the policy then keeps every backup."""
        return self.rules().is_noop

    def rules(self) -> RetentionRules:
        """Return the pure-data rules that :func:`~prefect_db_backup.retention.policy.plan_retention` takes.

        Returns:
            A :class:`~prefect_db_backup.retention.policy.RetentionRules` with the same values.
        """
        return RetentionRules(
            keep_last=self.keep_last,
            keep_within=self.keep_within,
            hourly=self.hourly,
            daily=self.daily,
            weekly=self.weekly,
            monthly=self.monthly,
            yearly=self.yearly,
            min_keep=self.min_keep,
            timezone=self.timezone,
        )

    def describe(self) -> str:
        """Summarise the policy in one line (it holds no secret)."""
        return self.rules().describe()


__all__ = ["RetentionPolicy"]
