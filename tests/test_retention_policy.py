"""Hand-built calendars for the retention planner, with the expected keep sets written out."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from prefect_db_backup.retention.durations import format_duration, parse_duration
from prefect_db_backup.retention.periods import load_timezone, period_label
from prefect_db_backup.retention.policy import (
    REASON_DELETE,
    REASON_NO_RULES,
    BackupRecord,
    RetentionPlan,
    RetentionRules,
    _apply_tier,
    plan_retention,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)  # far after every calendar below, so keep_within never interferes


def at(stamp: str, *, locked: bool = False) -> BackupRecord:
    """A backup whose id is its UTC start time ('2026-11-27T10:00'), so keep sets read as times."""
    return BackupRecord(
        backup_id=stamp, created_at=datetime.fromisoformat(stamp).replace(tzinfo=UTC), locked=locked
    )


def kept(plan: RetentionPlan) -> list[str]:
    return [b.backup_id for b in plan.keep]


def reasons(plan: RetentionPlan) -> dict[str, tuple[str, ...]]:
    return {d.backup.backup_id: d.reasons for d in plan.decisions}


def plan(rules: RetentionRules, stamps: list[str], now: datetime = NOW) -> RetentionPlan:
    backups = [at(s) for s in stamps]
    random.Random(0).shuffle(backups)  # input order must not matter
    return plan_retention(rules, backups, now)


# --- basics -----------------------------------------------------------------------------------------------


def test_empty_input_gives_empty_plan() -> None:
    result = plan_retention(RetentionRules(keep_last=3), [], NOW)
    assert result.decisions == () and result.keep == () and result.delete == ()


def test_decisions_are_newest_first_and_cover_every_backup_once() -> None:
    stamps = ["2026-11-03T10:00", "2026-11-01T10:00", "2026-11-05T10:00", "2026-11-02T10:00"]
    result = plan(RetentionRules(keep_last=2), stamps)
    assert [d.backup.backup_id for d in result.decisions] == sorted(stamps, reverse=True)
    assert kept(result) == ["2026-11-05T10:00", "2026-11-03T10:00"]
    assert [b.backup_id for b in result.delete] == ["2026-11-02T10:00", "2026-11-01T10:00"]
    assert reasons(result) == {
        "2026-11-05T10:00": ("keep_last #1", "newest"),
        "2026-11-03T10:00": ("keep_last #2",),
        "2026-11-02T10:00": (REASON_DELETE,),
        "2026-11-01T10:00": (REASON_DELETE,),
    }


def test_duplicate_backup_ids_are_refused() -> None:
    a = at("2026-11-01T10:00")
    b = BackupRecord(backup_id=a.backup_id, created_at=a.created_at + timedelta(hours=1))
    with pytest.raises(ValueError, match="duplicate backup_id '2026-11-01T10:00'"):
        plan_retention(RetentionRules(keep_last=1), [a, b], NOW)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="created_at of backup 'x' must be a timezone-aware"):
        BackupRecord(backup_id="x", created_at=datetime(2026, 11, 1, 10, 0))
    with pytest.raises(ValueError, match="now must be a timezone-aware"):
        plan_retention(RetentionRules(keep_last=1), [at("2026-11-01T10:00")], datetime(2026, 11, 2))
    with pytest.raises(ValueError, match="backup_id must be a non-empty string"):
        BackupRecord(backup_id="", created_at=NOW)


def test_created_at_in_any_offset_is_compared_as_an_instant() -> None:
    # 10:30 at +05:00 is 05:30 UTC: older than 06:00 UTC although its wall clock reads later.
    east = BackupRecord("east", datetime(2026, 11, 1, 10, 30, tzinfo=timezone(timedelta(hours=5))))
    utc = BackupRecord("utc", datetime(2026, 11, 1, 6, 0, tzinfo=UTC))
    result = plan_retention(RetentionRules(keep_last=1), [east, utc], NOW)
    assert kept(result) == ["utc"]


def test_ties_in_created_at_are_broken_by_backup_id() -> None:
    when = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    backups = [BackupRecord(name, when) for name in ("job/b", "job/a", "job/c")]
    for order in (backups, backups[::-1]):
        result = plan_retention(RetentionRules(keep_last=1), order, NOW)
        assert [d.backup.backup_id for d in result.decisions] == ["job/c", "job/b", "job/a"]
        assert kept(result) == ["job/c"]


# --- keep_within and keep_last ----------------------------------------------------------------------------


def test_keep_within_boundary_exactly_equal_age_is_not_kept() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    stamps = [
        "2026-11-28T11:00:00",
        "2026-11-26T12:00:00.000001",  # age 2 days minus 1 microsecond: kept
        "2026-11-26T12:00:00",  # age exactly 2 days: NOT kept
        "2026-11-20T12:00:00",
    ]
    result = plan(RetentionRules(keep_within=timedelta(days=2)), stamps, now)
    assert kept(result) == ["2026-11-28T11:00:00", "2026-11-26T12:00:00.000001"]
    assert reasons(result)["2026-11-26T12:00:00.000001"] == ("keep_within 2d",)
    assert reasons(result)["2026-11-26T12:00:00"] == (REASON_DELETE,)


def test_keep_within_keeps_backups_from_the_future() -> None:
    # A clock a little ahead on the backup host must not get the newest backups deleted.
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    result = plan(
        RetentionRules(keep_within=timedelta(hours=1)), ["2026-11-28T12:05", "2026-11-28T12:01"], now
    )
    assert kept(result) == ["2026-11-28T12:05", "2026-11-28T12:01"]


def test_keep_within_longer_than_the_calendar_keeps_everything() -> None:
    result = plan(
        RetentionRules(keep_within=parse_duration("9000y")), ["2026-11-28T11:00", "0001-01-02T00:00"]
    )
    assert kept(result) == ["2026-11-28T11:00", "0001-01-02T00:00"]


def test_keep_last_counts_backups_not_seconds_or_days() -> None:
    # Three backups in the same second and two more on the same day: keep_last=4 keeps four backups.
    stamps = ["2026-11-27T10:00:00", "2026-11-27T10:00:00.5", "2026-11-27T10:00:00.7", "2026-11-27T08:00"]
    stamps.append("2026-11-26T08:00")
    result = plan(RetentionRules(keep_last=4), stamps)
    assert kept(result) == [
        "2026-11-27T10:00:00.7",
        "2026-11-27T10:00:00.5",
        "2026-11-27T10:00:00",
        "2026-11-27T08:00",
    ]


def test_keep_within_backups_do_not_count_toward_keep_last() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    stamps = [
        "2026-11-28T10:00",
        "2026-11-28T06:00",
        "2026-11-27T10:00",
        "2026-11-26T10:00",
        "2026-11-25T10:00",
    ]
    result = plan(RetentionRules(keep_within=timedelta(hours=12), keep_last=2), stamps, now)
    assert reasons(result) == {
        "2026-11-28T10:00": ("keep_within 12h", "newest"),
        "2026-11-28T06:00": ("keep_within 12h",),
        "2026-11-27T10:00": ("keep_last #1",),
        "2026-11-26T10:00": ("keep_last #2",),
        "2026-11-25T10:00": (REASON_DELETE,),
    }


# --- daily: several backups per day, gaps, running out, passing over --------------------------------------


def test_daily_keeps_newest_backup_of_each_day_with_several_per_day() -> None:
    stamps = [f"2026-11-{day:02d}T{hour:02d}:00" for day in (24, 25, 26, 27) for hour in (2, 11, 23)]
    result = plan(RetentionRules(daily=3), stamps)
    assert kept(result) == ["2026-11-27T23:00", "2026-11-26T23:00", "2026-11-25T23:00"]
    assert reasons(result)["2026-11-26T23:00"] == ("daily 2026-11-26",)


def test_daily_days_without_backups_do_not_count() -> None:
    stamps = [
        "2026-11-10T03:00",
        "2026-11-09T03:00",
        "2026-11-05T03:00",
        "2026-11-02T03:00",
        "2026-11-01T03:00",
    ]
    result = plan(RetentionRules(daily=3), stamps)
    # The last 3 days WITH backups are the 10th, 9th and 5th, not the 10th, 9th and (empty) 8th.
    assert kept(result) == ["2026-11-10T03:00", "2026-11-09T03:00", "2026-11-05T03:00"]


def test_tier_that_runs_out_also_keeps_the_oldest_backup() -> None:
    stamps = [
        "2026-11-03T20:00",
        "2026-11-03T08:00",
        "2026-11-02T20:00",
        "2026-11-01T20:00",
        "2026-11-01T08:00",
    ]
    result = plan(RetentionRules(daily=7), stamps)
    # Only three days have backups (< 7): the newest of each day, and the oldest backup overall.
    assert kept(result) == ["2026-11-03T20:00", "2026-11-02T20:00", "2026-11-01T20:00", "2026-11-01T08:00"]
    assert reasons(result)["2026-11-01T08:00"] == ("daily 2026-11-01 [oldest]",)
    assert reasons(result)["2026-11-03T08:00"] == (REASON_DELETE,)


def test_tier_that_reaches_its_count_does_not_keep_the_oldest() -> None:
    stamps = ["2026-11-03T20:00", "2026-11-02T20:00", "2026-11-01T20:00", "2026-11-01T08:00"]
    result = plan(RetentionRules(daily=3), stamps)
    assert kept(result) == ["2026-11-03T20:00", "2026-11-02T20:00", "2026-11-01T20:00"]


def test_oldest_is_kept_once_even_when_several_tiers_run_out() -> None:
    stamps = ["2026-11-03T20:00", "2026-11-02T20:00", "2026-11-02T08:00"]
    result = plan(RetentionRules(daily=5, weekly=5, monthly=5), stamps)
    assert reasons(result) == {
        "2026-11-03T20:00": ("daily 2026-11-03", "newest"),
        "2026-11-02T20:00": ("daily 2026-11-02",),
        "2026-11-02T08:00": ("daily 2026-11-02 [oldest]",),
    }


def test_period_already_kept_by_an_earlier_rule_is_passed_over() -> None:
    stamps = [
        "2026-11-10T12:00",
        "2026-11-10T08:00",
        "2026-11-09T12:00",
        "2026-11-08T12:00",
        "2026-11-07T12:00",
    ]
    result = plan(RetentionRules(keep_last=2, daily=2), stamps)
    # keep_last keeps both backups of the 10th; daily passes the 10th over (its newest backup is already
    # kept) and keeps the 9th and the 8th instead of counting the 10th as one of its two days.
    assert reasons(result) == {
        "2026-11-10T12:00": ("keep_last #1", "newest"),
        "2026-11-10T08:00": ("keep_last #2",),
        "2026-11-09T12:00": ("daily 2026-11-09",),
        "2026-11-08T12:00": ("daily 2026-11-08",),
        "2026-11-07T12:00": (REASON_DELETE,),
    }


def test_passed_over_period_is_not_revisited_for_its_older_backups() -> None:
    # The newest backup of the 10th is kept by keep_last; daily must not then keep an OLDER backup of the
    # 10th: the period is passed over as a whole.
    stamps = ["2026-11-10T12:00", "2026-11-10T08:00", "2026-11-09T12:00"]
    result = plan(RetentionRules(keep_last=1, daily=1), stamps)
    assert kept(result) == ["2026-11-10T12:00", "2026-11-09T12:00"]


# --- month, year and ISO week boundaries ------------------------------------------------------------------


def test_monthly_across_month_and_year_boundaries() -> None:
    stamps = [
        "2026-02-10T09:00",
        "2026-02-01T00:00",
        "2026-01-31T23:59",
        "2026-01-01T00:00",
        "2025-12-31T23:59:59",
        "2025-12-01T00:00",
        "2025-11-30T23:00",
    ]
    result = plan(RetentionRules(monthly=3), stamps)
    assert kept(result) == ["2026-02-10T09:00", "2026-01-31T23:59", "2025-12-31T23:59:59"]
    assert reasons(result)["2025-12-31T23:59:59"] == ("monthly 2025-12",)


def test_yearly_uses_calendar_years_not_iso_years() -> None:
    # 2027-01-01 is in ISO week 2026-W53 but in calendar year 2027.
    stamps = [
        "2027-01-02T10:00",
        "2027-01-01T10:00",
        "2026-12-31T10:00",
        "2026-06-01T10:00",
        "2025-12-31T23:00",
    ]
    result = plan(RetentionRules(yearly=2), stamps)
    assert kept(result) == ["2027-01-02T10:00", "2026-12-31T10:00"]
    assert reasons(result)["2026-12-31T10:00"] == ("yearly 2026",)


def test_weekly_iso_week_53_spans_new_year() -> None:
    # 2026 has 53 ISO weeks: 2026-W53 runs from Monday 2026-12-28 to Sunday 2027-01-03.
    stamps = [
        "2027-01-05T10:00",  # Tue, 2027-W01
        "2027-01-04T10:00",  # Mon, 2027-W01
        "2027-01-03T10:00",  # Sun, 2026-W53 (newest of that week)
        "2027-01-01T10:00",  # Fri, 2026-W53
        "2026-12-28T10:00",  # Mon, 2026-W53
        "2026-12-27T10:00",  # Sun, 2026-W52
        "2026-12-20T10:00",  # Sun, 2026-W51
    ]
    result = plan(RetentionRules(weekly=3), stamps)
    assert reasons(result) == {
        "2027-01-05T10:00": ("weekly 2027-W01", "newest"),
        "2027-01-04T10:00": (REASON_DELETE,),
        "2027-01-03T10:00": ("weekly 2026-W53",),
        "2027-01-01T10:00": (REASON_DELETE,),
        "2026-12-28T10:00": (REASON_DELETE,),
        "2026-12-27T10:00": ("weekly 2026-W52",),
        "2026-12-20T10:00": (REASON_DELETE,),
    }


def test_weekly_week_1_starts_in_the_previous_calendar_year() -> None:
    # 2025-12-29 (Monday) already belongs to ISO week 2026-W01; 2025-12-28 (Sunday) to 2025-W52.
    stamps = ["2026-01-02T10:00", "2025-12-29T10:00", "2025-12-28T10:00", "2025-12-22T10:00"]
    result = plan(RetentionRules(weekly=2), stamps)
    assert kept(result) == ["2026-01-02T10:00", "2025-12-28T10:00"]
    assert reasons(result)["2025-12-28T10:00"] == ("weekly 2025-W52",)


def test_grandfather_father_son_over_two_months() -> None:
    # One backup a day at 01:00 UTC from 2026-10-01 to 2026-11-30 (Mondays: Oct 5, 12, 19, 26, Nov 2, ...).
    start = datetime(2026, 10, 1, 1, 0, tzinfo=UTC)
    stamps = [(start + timedelta(days=i)).strftime("%Y-%m-%dT%H:%M") for i in range(61)]
    result = plan(RetentionRules(daily=3, weekly=2, monthly=3), stamps)
    assert reasons(result) | {} == {
        **{s: (REASON_DELETE,) for s in stamps},
        "2026-11-30T01:00": ("daily 2026-11-30", "newest"),  # Monday, 2026-W49
        "2026-11-29T01:00": ("daily 2026-11-29",),  # Sunday, 2026-W48: week passed over
        "2026-11-28T01:00": ("daily 2026-11-28",),
        "2026-11-22T01:00": ("weekly 2026-W47",),  # W49 and W48 passed over (kept by daily)
        "2026-11-15T01:00": ("weekly 2026-W46",),
        # monthly: November passed over (its newest is kept by daily), October, then runs out -> oldest.
        "2026-10-31T01:00": ("monthly 2026-10",),
        "2026-10-01T01:00": ("monthly 2026-10 [oldest]",),
    }


# --- time zones and daylight-saving changes (Europe/Berlin) ------------------------------------------------


def test_months_begin_in_the_policy_time_zone() -> None:
    stamps = ["2026-02-01T10:00", "2026-01-31T23:30", "2026-01-31T20:00", "2026-01-15T10:00"]
    # 2026-01-31T23:30Z is 2026-02-01 00:30 in Berlin (CET, +01:00): February there, January in UTC.
    berlin = plan(RetentionRules(monthly=2, timezone="Europe/Berlin"), stamps)
    utc = plan(RetentionRules(monthly=2, timezone="UTC"), stamps)
    assert kept(berlin) == ["2026-02-01T10:00", "2026-01-31T20:00"]
    assert kept(utc) == ["2026-02-01T10:00", "2026-01-31T23:30"]


def test_hourly_on_spring_forward_day_berlin() -> None:
    # 2026-03-29: at 02:00 CET clocks jump to 03:00 CEST; local 02:xx does not exist.
    stamps = [
        "2026-03-29T02:30",  # 04:30 +02:00
        "2026-03-29T02:00",  # 04:00 +02:00
        "2026-03-29T01:30",  # 03:30 +02:00
        "2026-03-29T01:00",  # 03:00 +02:00
        "2026-03-29T00:30",  # 01:30 +01:00
        "2026-03-29T00:00",  # 01:00 +01:00
        "2026-03-28T23:30",  # 00:30 +01:00
    ]
    result = plan(RetentionRules(hourly=3, timezone="Europe/Berlin"), stamps)
    assert reasons(result) == {
        "2026-03-29T02:30": ("hourly 2026-03-29 04:00+02:00", "newest"),
        "2026-03-29T02:00": (REASON_DELETE,),
        "2026-03-29T01:30": ("hourly 2026-03-29 03:00+02:00",),
        "2026-03-29T01:00": (REASON_DELETE,),
        "2026-03-29T00:30": ("hourly 2026-03-29 01:00+01:00",),
        "2026-03-29T00:00": (REASON_DELETE,),
        "2026-03-28T23:30": (REASON_DELETE,),
    }


def test_hourly_on_fall_back_day_berlin_repeated_hour_is_two_periods() -> None:
    # 2026-10-25: at 03:00 CEST clocks go back to 02:00 CET; local 02:00-03:00 happens twice.
    stamps = [
        "2026-10-25T02:00",  # 03:00 +01:00
        "2026-10-25T01:30",  # 02:30 +01:00 (second 02 o'clock)
        "2026-10-25T01:00",  # 02:00 +01:00
        "2026-10-25T00:30",  # 02:30 +02:00 (first 02 o'clock)
        "2026-10-25T00:00",  # 02:00 +02:00
        "2026-10-24T23:30",  # 01:30 +02:00
    ]
    result = plan(RetentionRules(hourly=3, timezone="Europe/Berlin"), stamps)
    assert reasons(result) == {
        "2026-10-25T02:00": ("hourly 2026-10-25 03:00+01:00", "newest"),
        "2026-10-25T01:30": ("hourly 2026-10-25 02:00+01:00",),
        "2026-10-25T01:00": (REASON_DELETE,),
        "2026-10-25T00:30": ("hourly 2026-10-25 02:00+02:00",),
        "2026-10-25T00:00": (REASON_DELETE,),
        "2026-10-24T23:30": (REASON_DELETE,),
    }


def test_daily_on_daylight_saving_days_berlin() -> None:
    # Spring forward (23-hour day) and fall back (25-hour day) are each one local day.
    stamps = [
        "2026-10-25T22:59",  # 23:59 +01:00, Oct 25
        "2026-10-24T22:30",  # 00:30 +02:00, Oct 25 (the 25-hour day starts at 22:00Z on the 24th)
        "2026-10-24T21:30",  # 23:30 +02:00, Oct 24
        "2026-03-29T21:30",  # 23:30 +02:00, Mar 29
        "2026-03-28T23:30",  # 00:30 +01:00, Mar 29 (the 23-hour day starts at 23:00Z on the 28th)
        "2026-03-28T22:30",  # 23:30 +01:00, Mar 28
    ]
    result = plan(RetentionRules(daily=4, timezone="Europe/Berlin"), stamps)
    assert kept(result) == ["2026-10-25T22:59", "2026-10-24T21:30", "2026-03-29T21:30", "2026-03-28T22:30"]
    assert reasons(result)["2026-10-24T21:30"] == ("daily 2026-10-24",)
    # In UTC the same backups fall on different days.
    assert kept(plan(RetentionRules(daily=4), stamps)) == [
        "2026-10-25T22:59",
        "2026-10-24T22:30",
        "2026-03-29T21:30",
        "2026-03-28T23:30",
    ]


def test_period_is_one_period_even_if_local_dates_go_backwards() -> None:
    # No IANA zone does this today, but an offset change across midnight could make local dates go
    # Jan 1 -> Jan 2 -> Jan 1 while walking newest first. Jan 1 must stay ONE period (only its newest
    # backup can be kept by the tier): compare sets of periods, not just neighbours.
    minus_one = timezone(timedelta(hours=-1))
    local_newest_first = [
        datetime(2020, 1, 1, 23, 50, tzinfo=minus_one),  # 00:50Z Jan 2, local Jan 1
        datetime(2020, 1, 2, 0, 20, tzinfo=UTC),  # 00:20Z Jan 2, local Jan 2
        datetime(2020, 1, 1, 23, 10, tzinfo=UTC),  # 23:10Z Jan 1, local Jan 1 again
        datetime(2019, 12, 31, 12, 0, tzinfo=UTC),  # Dec 31
    ]
    assert local_newest_first == sorted(local_newest_first, reverse=True)
    rule_reason: list[str | None] = [None] * 4
    _apply_tier("daily", 3, local_newest_first, rule_reason)
    assert rule_reason == ["daily 2020-01-01", "daily 2020-01-02", None, "daily 2019-12-31"]


# --- safety: locked, newest, min_keep; no rules -----------------------------------------------------------


def test_locked_backups_are_always_kept_and_do_not_change_what_tiers_count() -> None:
    stamps = ["2026-11-05T10:00", "2026-11-04T10:00", "2026-11-03T10:00", "2026-11-02T10:00"]
    backups = [at(s, locked=s in ("2026-11-04T10:00", "2026-11-02T10:00")) for s in stamps]
    result = plan_retention(RetentionRules(keep_last=2), backups, NOW)
    assert reasons(result) == {
        "2026-11-05T10:00": ("keep_last #1", "newest"),
        "2026-11-04T10:00": ("keep_last #2", "locked"),
        "2026-11-03T10:00": (REASON_DELETE,),
        "2026-11-02T10:00": ("locked",),
    }


def test_newest_is_kept_even_when_no_rule_would_keep_it() -> None:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    result = plan(
        RetentionRules(keep_within=timedelta(hours=1)), ["2026-11-01T10:00", "2026-10-01T10:00"], now
    )
    assert reasons(result) == {"2026-11-01T10:00": ("newest",), "2026-10-01T10:00": (REASON_DELETE,)}


def test_min_keep_tops_up_with_the_newest_unkept_backups() -> None:
    stamps = [
        "2026-11-05T10:00",
        "2026-11-04T10:00",
        "2026-11-03T10:00",
        "2026-11-02T10:00",
        "2026-11-01T10:00",
    ]
    backups = [at(s, locked=s == "2026-11-01T10:00") for s in stamps]
    result = plan_retention(RetentionRules(keep_last=1, min_keep=4), backups, NOW)
    assert reasons(result) == {
        "2026-11-05T10:00": ("keep_last #1", "newest"),
        "2026-11-04T10:00": ("min_keep",),
        "2026-11-03T10:00": ("min_keep",),
        "2026-11-02T10:00": (REASON_DELETE,),
        "2026-11-01T10:00": ("locked",),  # counts toward min_keep
    }


def test_min_keep_larger_than_history_keeps_everything() -> None:
    result = plan(RetentionRules(keep_last=1, min_keep=10), ["2026-11-02T10:00", "2026-11-01T10:00"])
    assert kept(result) == ["2026-11-02T10:00", "2026-11-01T10:00"]


@pytest.mark.parametrize("rules", [RetentionRules(), RetentionRules(daily=0, keep_last=0, min_keep=0)])
def test_policy_without_rules_keeps_everything(rules: RetentionRules) -> None:
    assert rules.is_noop
    stamps = ["2026-11-02T10:00", "2026-11-01T10:00", "2020-01-01T00:00"]
    result = plan(rules, stamps)
    assert result.delete == ()
    assert reasons(result)["2020-01-01T00:00"] == (REASON_NO_RULES,)
    assert reasons(result)["2026-11-02T10:00"] == (REASON_NO_RULES, "newest")


# --- rules, periods and durations -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["keep_last", "hourly", "daily", "weekly", "monthly", "yearly", "min_keep"])
def test_rules_refuse_negative_counts_naming_the_field(name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be 0 or more, got -1$"):
        RetentionRules(**{name: -1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^{name} must be a whole number"):
        RetentionRules(**{name: 1.5})  # type: ignore[arg-type]


def test_rules_refuse_bad_keep_within_and_timezone() -> None:
    with pytest.raises(ValueError, match="keep_within must be a positive duration"):
        RetentionRules(keep_within=timedelta(0))
    with pytest.raises(ValueError, match="timezone: unknown IANA time zone 'Europe/Atlantis'"):
        RetentionRules(timezone="Europe/Atlantis")
    with pytest.raises(ValueError, match="timezone: unknown IANA time zone"):
        RetentionRules(timezone="../../etc/passwd")


def test_rules_describe() -> None:
    rules = RetentionRules(keep_within=timedelta(hours=36), keep_last=7, monthly=12, timezone="Europe/Berlin")
    assert (
        rules.describe() == "keep_within=1d12h, keep_last=7, monthly=12, min_keep=1, timezone=Europe/Berlin"
    )
    assert RetentionRules().describe() == "keep everything (no retention rules), timezone=UTC"


def test_period_labels() -> None:
    when = datetime(2026, 1, 1, 5, 0, tzinfo=UTC).astimezone(load_timezone("Asia/Kathmandu"))  # +05:45
    assert period_label("hourly", when) == "2026-01-01 10:00+05:45"
    assert period_label("daily", when) == "2026-01-01"
    assert period_label("weekly", when) == "2026-W01"
    assert period_label("monthly", when) == "2026-01"
    assert period_label("yearly", when) == "2026"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("36h", timedelta(hours=36)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(days=14)),
        ("1y", timedelta(days=365)),
        ("1d12h", timedelta(hours=36)),
        (" 2W 3D ", timedelta(days=17)),
        ("0d1h", timedelta(hours=1)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7m", "ambiguous"),
        ("7", "cannot parse"),
        ("d", "cannot parse"),
        ("7 days", "unknown unit 'days'"),
        ("1.5d", "cannot parse"),
        ("-1d", "cannot parse"),
        ("0h", "must be a positive duration"),
        ("", "must be a duration"),
        ("99999999999999y", "too large"),
    ],
)
def test_parse_duration_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^keep_within.*{message}"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for text, canonical in [("36h", "1d12h"), ("2w", "14d"), ("5h", "5h"), ("1y", "365d")]:
        assert format_duration(parse_duration(text)) == canonical
        assert parse_duration(canonical) == parse_duration(text)
    assert format_duration(timedelta(minutes=30)) == "0:30:00"
