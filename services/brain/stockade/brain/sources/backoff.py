"""Backoff with jitter between retries, and the server's Retry-After."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 300.0


class Backoff:
    """Exponential backoff with "equal jitter": a delay in [d/2, d] where d doubles up to `cap`.

    The jitter spreads reconnecting clients (many brain replicas, many watches) so they do not hit a
    recovering API server in step; the lower half keeps a real pause between attempts.
    """

    def __init__(
        self, base: float = 0.2, cap: float = 30.0, factor: float = 2.0, rng: Callable[[], float] = random.random
    ):
        self.base, self.cap, self.factor, self.rng = base, cap, factor, rng
        self.attempts = 0

    def next(self) -> float:
        d = min(self.cap, self.base * self.factor**self.attempts)
        self.attempts += 1
        return d / 2 + self.rng() * d / 2

    def reset(self) -> None:
        self.attempts = 0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
