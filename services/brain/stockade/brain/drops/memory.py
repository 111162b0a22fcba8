"""This brain's own drop counts, kept in memory: what `drops top` answers while Redis is away.

Every flush batch, once settled (written to Redis, or taken by `NoStore`), is added here, so the
counts cover what this brain counted since it started (bounded: past ``max_entries`` distinct
(minute, flow) pairs the oldest minutes go first, and `since` moves forward). Together with what
still waits for Redis (`Aggregator.memory_hashes`) they are the brain's complete count, of its
own agents only: Redis is where the brains' counts meet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from stockade.brain.drops.flows import WINDOWS
from stockade.brain.drops.store import FlushBatch

_KEEP_MINUTES = max(WINDOWS.values()) + 1  # the longest window, and the minute in progress


class RecentCounts:
    def __init__(self, started: float, *, max_entries: int = 100_000) -> None:
        self.since = started  # the counts are complete from this time on
        self._max = max_entries
        self._counts: dict[int, Counter[str]] = {}
        self._refused: dict[int, Counter[tuple[str, str]]] = {}
        self._entries = 0

    @property
    def entries(self) -> int:
        return self._entries

    def add(self, batch: FlushBatch) -> None:
        for minute, flows in ((m, f) for counts in batch.all_counts() for m, f in counts.items()):
            bucket = self._counts.get(minute)
            if bucket is None:
                bucket = self._counts[minute] = Counter()
            before = len(bucket)
            bucket.update(flows)
            self._entries += len(bucket) - before
        for (minute, node, reason), n in batch.refused.items():
            self._refused.setdefault(minute, Counter())[(node, reason)] += n
        self._trim()

    def _trim(self) -> None:
        if not self._counts:
            return
        newest = max(self._counts)
        for m in [m for m in self._counts if m <= newest - _KEEP_MINUTES]:
            self._drop(m)
        while self._entries > self._max and len(self._counts) > 1:
            self._drop(min(self._counts))
        for m in [m for m in self._refused if m <= newest - _KEEP_MINUTES]:
            del self._refused[m]

    def _drop(self, minute: int) -> None:
        self._entries -= len(self._counts.pop(minute))
        self._refused.pop(minute, None)
        self.since = max(self.since, (minute + 1) * 60.0)

    def minute(self, minute: int) -> Counter[str]:
        return self._counts.get(minute, Counter())

    def refused(self, minutes: Sequence[int]) -> Counter[tuple[str, str]]:
        total: Counter[tuple[str, str]] = Counter()
        for m in minutes:
            total.update(self._refused.get(m, {}))
        return total
