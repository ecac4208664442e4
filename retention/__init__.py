"""The pure retention planner: which committed backups to keep, and why (no storage, no Prefect).

See :mod:`prefect_db_backup.retention.policy` for the semantics (borg prune, 1.2 and later),
:mod:`prefect_db_backup.retention.periods` for calendar periods and daylight-saving handling, and
:mod:`prefect_db_backup.retention.durations` for the ``keep_within`` grammar.
"""

from prefect_db_backup.retention.policy import (
    BackupRecord,
    Decision,
    RetentionPlan,
    RetentionRules,
    plan_retention,
)

__all__ = ["BackupRecord", "Decision", "RetentionPlan", "RetentionRules", "plan_retention"]
