"""Task options every backup step shares: never cache, never persist (results may hold live secrets)."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

#: Keyword arguments for ``@task``: no caching and no result persistence, so a failed run never pickles
#: an exception or a plan (which may hold a key) to disk.
STEP_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
