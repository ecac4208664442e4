"""Human-readable sizes and rates."""

from __future__ import annotations


def format_bytes(size: float) -> str:
    """Format a byte count with binary units (``1.5 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - loop always returns


def format_rate(size: int, seconds: float) -> str:
    """Format a throughput (``120.3 MiB/s``)."""
    if seconds <= 0:
        return "n/a"
    return f"{format_bytes(size / seconds)}/s"
