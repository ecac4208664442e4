"""Keeping secrets out of messages, logs and process arguments."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "********"


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``********``.

    Args:
        text: Text that may contain secrets (child stderr, a library's exception message).
        secrets: Secret values to remove; empty or None values are ignored.

    Returns:
        The text with every secret replaced. Longer secrets are replaced first so that a secret containing
        another is removed whole.
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
