"""Property-based tests of the retention planner over random histories and policies (hypothesis).

Besides the safety promises, the planner is compared with an independent, deliberately naive model of
borg's prune written here from its documented behaviour (strftime period strings, newest first, a
"last period" variable, the 1.2+ keep-oldest rule). The model differs from the planner in style on purpose;
the two must agree on every keep set and every deciding rule.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect_db_backup.retention.periods import TIERS
from prefect_db_backup.retention.policy import (
    REASON_DELETE,
    REASON_LOCKED,
    REASON_MIN_KEEP,
    REASON_NEWEST,
    BackupRecord,
    RetentionRules,
    plan_retention,
)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]

# Instants near which histories cluster: daylight-saving changes and New Year, so that random histories
# often straddle them.
ANCHORS = [
    (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "Europe/Berlin"),  # spring forward
    (datetime(2026, 10, 25, 1, 0, tzinfo=UTC), "Europe/Berlin"),  # fall back
    (datetime(2026, 11, 1, 6, 0, tzinfo=UTC), "America/New_York"),  # fall back
    (datetime(2026, 4, 4, 15, 0, tzinfo=UTC), "Australia/Lord_Howe"),  # fall back by 30 minutes
    (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), "Asia/Kathmandu"),  # New Year, ISO week 53, +05:45
]

MINUTES = 60
DAYS = 24 * 60


@st.composite
def histories(
    draw: st.DrawFn,
    anchor: datetime | None = None,
    spreads: tuple[int, ...] = (2 * 60, 12 * 60, 3 * DAYS, 800 * DAYS),
) -> list[BackupRecord]:
    if anchor is None:
        anchor = draw(st.sampled_from(ANCHORS))[0]
    # How far the history spreads around the anchor: within hours (every backup near the DST change,
    # where hourly tiers reach it), days (several per day) or years (gaps of days, weeks and months).
    spread = draw(st.sampled_from(spreads))
    offset = st.one_of(
        st.integers(-spread, spread),
        st.integers(-spread // 30, spread // 30).map(lambda m: m * 30),  # on the half hour: ties
    )
    minutes = draw(st.lists(offset, max_size=40))
    locked = draw(
        st.lists(st.integers(0, 5).map(lambda x: x == 0), min_size=len(minutes), max_size=len(minutes))
    )
    ids = [f"job/b{i:03d}" for i in range(len(minutes))]
    draw(st.randoms(use_true_random=False)).shuffle(ids)  # ids do not follow time: ties must still be stable
    return [
        BackupRecord(backup_id=i, created_at=anchor + timedelta(minutes=m), locked=lock)
        for i, m, lock in zip(ids, minutes, locked, strict=True)
    ]


counts = st.one_of(st.none(), st.integers(0, 6))


def rules_in(zones: st.SearchStrategy[str]) -> st.SearchStrategy[RetentionRules]:
    return st.builds(
        RetentionRules,
        keep_last=counts,
        keep_within=st.one_of(st.none(), st.integers(1, 400 * DAYS).map(lambda m: timedelta(minutes=m))),
        hourly=counts,
        daily=counts,
        weekly=counts,
        monthly=counts,
        yearly=counts,
        min_keep=st.integers(0, 6),
        timezone=zones,
    )


Scenario = tuple[RetentionRules, list[BackupRecord], datetime]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Rules, a history and now; the history usually clusters around a DST change of the rules' zone."""
    anchor, zone = draw(st.sampled_from(ANCHORS))
    rules = draw(rules_in(st.one_of(st.just(zone), st.sampled_from(ZONES))))
    history = draw(histories(anchor))
    return rules, history, now_for(history, draw(now_offsets))


@st.composite
def dst_hour_scenarios(draw: st.DrawFn) -> Scenario:
    """Every backup within two hours of a DST change, hourly tier on, periods in that change's zone."""
    anchor, zone = draw(st.sampled_from(ANCHORS))
    rules = draw(rules_in(st.just(zone)))
    rules = replace(rules, hourly=draw(st.integers(1, 8)))
    history = draw(histories(anchor, spreads=(2 * 60,)))
    return rules, history, now_for(history, draw(now_offsets))


def now_for(history: list[BackupRecord], minutes_after: int) -> datetime:
    newest = max((b.created_at for b in history), default=ANCHORS[0][0])
    return newest + timedelta(minutes=minutes_after)


now_offsets = st.integers(-2 * DAYS, 500 * DAYS)  # "now" may even precede the newest backups (clock skew)


# --- an independent model of borg's prune -----------------------------------------------------------------

PATTERNS = {
    "hourly": "%Y-%m-%d %H %z",
    "daily": "%Y-%m-%d",
    "weekly": "%G-%V",
    "monthly": "%Y-%m",
    "yearly": "%Y",
}


def model(rules: RetentionRules, backups: list[BackupRecord], now: datetime) -> dict[str, str]:
    """Map each kept backup id to the name of the rule that keeps it (borg's kept_because), safety last."""
    archives = sorted(backups, key=lambda b: (b.created_at, b.backup_id), reverse=True)
    because: dict[str, str] = {}
    if rules.is_noop:
        because = {b.backup_id: "all" for b in archives}
    if rules.keep_within is not None:
        for b in archives:
            if b.created_at > now - rules.keep_within:
                because[b.backup_id] = "keep_within"
    schedule = [("keep_last", None, rules.keep_last)]
    schedule += [(tier, PATTERNS[tier], getattr(rules, tier)) for tier in TIERS]
    zone = ZoneInfo(rules.timezone)
    for rule, pattern, n in schedule:
        if not n:
            continue
        last = None
        kept = 0
        a = None
        for a in archives:
            period = a.backup_id if pattern is None else a.created_at.astimezone(zone).strftime(pattern)
            if period != last:
                last = period
                if a.backup_id not in because:
                    kept += 1
                    because[a.backup_id] = rule
                    if kept == n:
                        break
        if a is not None and kept < n and a.backup_id not in because:
            because[a.backup_id] = rule + "[oldest]"
    for b in archives:
        if b.locked:
            because.setdefault(b.backup_id, "locked")
    if archives:
        because.setdefault(archives[0].backup_id, "newest")
    for b in archives:
        if len(because) >= rules.min_keep:
            break
        because.setdefault(b.backup_id, "min_keep")
    return because


def deciding_rule(reasons: tuple[str, ...]) -> str:
    first = reasons[0]
    if first.startswith("no retention rules"):
        return "all"
    name = first.split(" ")[0]
    return name + "[oldest]" if first.endswith("[oldest]") else name


def ids(backups: tuple[BackupRecord, ...]) -> list[str]:
    return [b.backup_id for b in backups]


# --- properties -------------------------------------------------------------------------------------------


@SETTINGS
@given(scenario=scenarios())
def test_planner_agrees_with_an_independent_model_of_borg_prune(scenario: Scenario) -> None:
    rules, history, now = scenario
    plan = plan_retention(rules, history, now)
    expected = model(rules, history, now)
    assert {d.backup.backup_id: deciding_rule(d.reasons) for d in plan.decisions if d.keep} == expected


@SETTINGS
@given(scenario=dst_hour_scenarios())
def test_planner_agrees_with_the_model_around_daylight_saving_changes(scenario: Scenario) -> None:
    rules, history, now = scenario
    plan = plan_retention(rules, history, now)
    expected = model(rules, history, now)
    assert {d.backup.backup_id: deciding_rule(d.reasons) for d in plan.decisions if d.keep} == expected


@SETTINGS
@given(scenario=scenarios())
def test_safety_promises(scenario: Scenario) -> None:
    rules, history, now = scenario
    plan = plan_retention(rules, history, now)
    # Every input exactly once, newest first (ties: greater id first).
    assert sorted(ids(tuple(d.backup for d in plan.decisions))) == sorted(b.backup_id for b in history)
    order = [(d.backup.created_at, d.backup.backup_id) for d in plan.decisions]
    assert order == sorted(order, reverse=True)
    kept = set(ids(plan.keep))
    assert {b.backup_id for b in history if b.locked} <= kept
    if history:
        assert plan.decisions[0].keep and REASON_NEWEST in plan.decisions[0].reasons
    assert len(kept) >= min(rules.min_keep, len(history))
    for d in plan.decisions:
        assert d.reasons, d
        assert d.keep == (d.reasons != (REASON_DELETE,))
        assert (REASON_LOCKED in d.reasons) == d.backup.locked
    # min_keep only ever tops up: without it the plan would have kept fewer than min_keep.
    topped_up = [d for d in plan.decisions if d.reasons == (REASON_MIN_KEEP,)]
    if topped_up:
        assert len(kept) == min(rules.min_keep, len(history))


@SETTINGS
@given(scenario=scenarios())
def test_each_tier_keeps_only_newest_backups_of_distinct_periods_at_most_n(scenario: Scenario) -> None:
    rules, history, now = scenario
    plan = plan_retention(rules, history, now)
    zone = ZoneInfo(rules.timezone)
    for tier in TIERS:
        decided = [d for d in plan.decisions if d.keep and d.reasons[0].split(" ")[0] == tier]
        regular = [d for d in decided if not d.reasons[0].endswith("[oldest]")]
        oldest = [d for d in decided if d.reasons[0].endswith("[oldest]")]
        assert len(regular) <= (getattr(rules, tier) or 0)
        assert len(oldest) <= 1
        if oldest:
            assert oldest[0].backup == plan.decisions[-1].backup
        periods = [d.backup.created_at.astimezone(zone).strftime(PATTERNS[tier]) for d in regular]
        assert len(set(periods)) == len(periods)
        for d, period in zip(regular, periods, strict=True):
            newer_same_period = [
                b
                for b in history
                if (b.created_at, b.backup_id) > (d.backup.created_at, d.backup.backup_id)
                and b.created_at.astimezone(zone).strftime(PATTERNS[tier]) == period
            ]
            assert not newer_same_period, (tier, d)


@SETTINGS
@given(scenario=scenarios(), seed=st.integers(0, 2**32))
def test_plan_is_deterministic_whatever_the_input_order(scenario: Scenario, seed: int) -> None:
    rules, history, now = scenario
    shuffled = list(history)
    random.Random(seed).shuffle(shuffled)
    assert plan_retention(rules, shuffled, now) == plan_retention(rules, history, now)
    assert plan_retention(rules, iter(shuffled), now) == plan_retention(rules, history, now)


@SETTINGS
@given(scenario=scenarios())
def test_planning_again_over_the_kept_backups_deletes_nothing_more(scenario: Scenario) -> None:
    rules, history, now = scenario
    first = plan_retention(rules, history, now)
    second = plan_retention(rules, first.keep, now)
    # The exact statement that holds: with the same rules and the same now, the kept set is a fixed
    # point -- nothing more is deleted, and every backup is kept for the same reasons as before.
    assert second.delete == ()
    assert second.decisions == tuple(d for d in first.decisions if d.keep)


@SETTINGS
@given(history=histories(), after=now_offsets, min_keep=st.integers(0, 6), zone=st.sampled_from(ZONES))
def test_policy_without_rules_keeps_all(
    history: list[BackupRecord], after: int, min_keep: int, zone: str
) -> None:
    rules = RetentionRules(daily=0, keep_last=0, min_keep=min_keep, timezone=zone)
    plan = plan_retention(rules, history, now_for(history, after))
    assert plan.delete == ()
    assert len(plan.keep) == len(history)


def test_later_now_may_delete_more_which_is_not_a_contradiction() -> None:
    # Documented limit of the fixed-point property: it holds for the SAME now. A later run legitimately
    # deletes backups that have aged out of keep_within (or of a tier's window once newer backups exist).
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    history = [BackupRecord(f"b{i}", t0 + timedelta(hours=i)) for i in range(5)]
    rules = RetentionRules(keep_within=timedelta(hours=3))
    first = plan_retention(rules, history, t0 + timedelta(hours=4, minutes=30))
    assert ids(first.keep) == ["b4", "b3", "b2"]
    assert plan_retention(rules, first.keep, t0 + timedelta(hours=4, minutes=30)).delete == ()
    later = plan_retention(rules, first.keep, t0 + timedelta(hours=6, minutes=30))
    assert ids(later.delete) == ["b3", "b2"]


@SETTINGS
@given(scenario=scenarios(), seed=st.integers(0, 2**32))
def test_interrupted_deletion_converges_to_the_same_keep_set(scenario: Scenario, seed: int) -> None:
    # If only some of the planned deletions happened (a run was interrupted), planning again with the same
    # now over what is left keeps exactly the same backups and deletes the rest of the original plan.
    rules, history, now = scenario
    first = plan_retention(rules, history, now)
    rng = random.Random(seed)
    survivors = [b for b in first.delete if rng.random() < 0.5]
    second = plan_retention(rules, [*first.keep, *survivors], now)
    assert set(second.keep) == set(first.keep)
    assert set(second.delete) == set(survivors)
