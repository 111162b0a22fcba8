"""How long a change takes from the API to each node's dataplane (like Cilium's
``policy_implementation_delay``): the brain notes when it saw the change that made a node's
generation, and observes the delay when that node's agent acks the generation (or a later one).

One observation per (change, node). Buckets are counted here, so the fan-out needs no
Prometheus registry; `stockade.brain.metrics` exports them at scrape time.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# Seconds: a healthy cluster realizes in well under a second; minutes mean an agent was away.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
MAX_PENDING = 256  # changes remembered per node while its agent has not acked them


@dataclass
class Histogram:
    """Cumulative counts per upper bound, a sum and a count (what the exposition needs)."""

    buckets: tuple[float, ...] = BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # the last: +Inf
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            acc += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), acc))
        return out


class RealizationTimes:
    """Per node: the generations not yet acked and when the change behind each was seen."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_pending: int = MAX_PENDING) -> None:
        self.clock = clock
        self.max_pending = max_pending
        self.histogram = Histogram()
        self.last: dict[str, float] = {}  # node -> delay of its latest realized change
        self.untracked = 0  # changes not timed because a node had too many pending
        self._pending: dict[str, deque[tuple[int, float]]] = {}

    def changed(self, node: str, generation: int, seen: float | None = None) -> None:
        """Node ``node`` must now reach ``generation`` for a change seen at ``seen`` (clock time)."""
        q = self._pending.setdefault(node, deque())
        if len(q) >= self.max_pending:
            # keep the oldest (the longest delays); newer ones realize no later than the last kept
            self.untracked += 1
            return
        q.append((generation, self.clock() if seen is None else seen))

    def applied(self, node: str, generation: int) -> None:
        """The node's agent acked ``generation``: every change up to it is in its dataplane."""
        q = self._pending.get(node)
        if not q:
            return
        now = self.clock()
        while q and q[0][0] <= generation:
            delay = max(0.0, now - q.popleft()[1])
            self.histogram.observe(delay)
            self.last[node] = delay
        if not q:
            del self._pending[node]

    def pending(self, node: str) -> int:
        return len(self._pending.get(node, ()))
