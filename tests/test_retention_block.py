"""The RetentionPolicy block: validation that names the field, keep_within parsing, mapping to the rules."""

from __future__ import annotations

import json
import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest
from prefect_db_backup.blocks import RetentionPolicy
from prefect_db_backup.retention.policy import BackupRecord, RetentionRules, plan_retention
from pydantic import ValidationError


def error_of(**values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        RetentionPolicy(**values)  # type: ignore[arg-type]
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    return f"{errors[0]['loc'][0]}: {errors[0]['msg']}"


def test_keep_last_seven_as_in_the_backup_flow_issue() -> None:
    policy = RetentionPolicy(keep_last=7)
    assert policy.rules() == RetentionRules(keep_last=7)
    assert not policy.is_noop
    assert policy.describe() == "keep_last=7, min_keep=1, timezone=UTC"


def test_policy_without_rules_is_valid_and_is_noop() -> None:
    assert RetentionPolicy().is_noop
    assert RetentionPolicy(daily=0, keep_last=0).is_noop
    assert not RetentionPolicy(keep_within="1h").is_noop
    assert RetentionPolicy().describe() == "keep everything (no retention rules), timezone=UTC"


@pytest.mark.parametrize("name", ["keep_last", "hourly", "daily", "weekly", "monthly", "yearly", "min_keep"])
def test_negative_counts_are_refused_naming_the_field(name: str) -> None:
    assert error_of(**{name: -3}) == f"{name}: Value error, {name} must be 0 or more, got -3"


@pytest.mark.parametrize("value", [True, 2.5, "seven", [7]])
def test_non_integer_counts_are_refused_naming_the_field(value: object) -> None:
    assert error_of(daily=value).startswith("daily: Value error, daily must be a whole number")


def test_counts_given_as_digit_strings_are_accepted() -> None:
    assert RetentionPolicy(daily="7").daily == 7  # type: ignore[arg-type]
    assert error_of(weekly="-1") == "weekly: Value error, weekly must be 0 or more, got -1"


def test_min_keep_cannot_be_empty() -> None:
    assert error_of(min_keep=None).startswith("min_keep: Value error, min_keep must be a whole number")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("36h", timedelta(hours=36)),
        ("2w", timedelta(weeks=2)),
        ("1y", timedelta(days=365)),
        ("1d12h", timedelta(hours=36)),
        (" 3D ", timedelta(days=3)),
        (timedelta(minutes=90), timedelta(minutes=90)),
        ("P7D", timedelta(days=7)),  # ISO 8601, the form a saved block is stored in
        ("PT36H", timedelta(hours=36)),
    ],
)
def test_keep_within_accepts_the_grammar_a_timedelta_and_iso_8601(given: object, expected: timedelta) -> None:
    assert RetentionPolicy(keep_within=given).keep_within == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("7m", "unit 'm' in '7m' is ambiguous"),
        ("7", "cannot parse '7' as a duration"),
        ("a week", "cannot parse 'a week' as a duration"),
        ("7 days", "unknown unit 'days'"),
        ("0d", "keep_within must be a positive duration"),
        ("-P1D", "keep_within must be a positive duration"),
        (timedelta(0), "keep_within must be a positive duration"),
        (7, "keep_within needs a unit"),
        (1.5, "keep_within needs a unit"),
        ("", "keep_within must be a duration"),
    ],
)
def test_keep_within_refusals_name_the_field(given: object, message: str) -> None:
    text = error_of(keep_within=given)
    assert text.startswith("keep_within: ")
    assert message in text


def test_timezone_is_validated_with_zoneinfo() -> None:
    assert RetentionPolicy(timezone="Europe/Berlin").rules().timezone == "Europe/Berlin"
    assert error_of(timezone="Europe/Atlantis") == (
        "timezone: Value error, timezone: unknown IANA time zone 'Europe/Atlantis' "
        "(use a name such as 'UTC' or 'Europe/Berlin')"
    )
    assert error_of(timezone="").startswith("timezone: Value error, timezone must be an IANA time zone name")


def test_rules_maps_every_field() -> None:
    policy = RetentionPolicy(
        keep_last=1,
        keep_within="2d",
        hourly=3,
        daily=4,
        weekly=5,
        monthly=6,
        yearly=7,
        min_keep=8,
        timezone="America/New_York",
    )
    rules = policy.rules()
    expected = {
        "keep_last": 1,
        "keep_within": timedelta(days=2),
        "hourly": 3,
        "daily": 4,
        "weekly": 5,
        "monthly": 6,
        "yearly": 7,
        "min_keep": 8,
        "timezone": "America/New_York",
    }
    assert {f.name: getattr(rules, f.name) for f in fields(RetentionRules)} == expected
    # The block has exactly the rules' fields, so a rule added to one and forgotten in the other fails here.
    assert set(RetentionPolicy.model_fields) == set(expected)


def test_defaults_match_the_rules_defaults() -> None:
    assert RetentionPolicy().rules() == RetentionRules()


def test_saved_block_document_round_trips_keep_within() -> None:
    policy = RetentionPolicy(keep_within="1d12h", weekly=4, timezone="Europe/Berlin")
    document = policy._to_block_document(name="p", block_schema_id=uuid.uuid4(), block_type_id=uuid.uuid4())
    stored = json.loads(json.dumps(document.data))
    assert stored["keep_within"] == "P1DT12H"
    assert RetentionPolicy.model_validate(stored).rules() == policy.rules()


def test_block_rules_drive_the_planner() -> None:
    policy = RetentionPolicy(keep_last=2)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    backups = [BackupRecord(f"job/b{i}", start + timedelta(days=i)) for i in range(4)]
    plan = plan_retention(policy.rules(), backups, start + timedelta(days=10))
    assert [b.backup_id for b in plan.keep] == ["job/b3", "job/b2"]
    assert [b.backup_id for b in plan.delete] == ["job/b1", "job/b0"]
