"""Per-node quotas, so that one node (a noisy one, or one whose certificate an attacker holds)
cannot fill Redis or the in-memory buffer and starve the others.

What costs Redis memory is a *new* counter: a (minute, flow) hash field. Counting into a counter
that exists costs nothing, so the quota is on the bytes of new counters a node makes per window
(the field's text plus `ENTRY_OVERHEAD`). Within a window each (minute, flow) is charged to a node
once, however many flushes it spans (remembered for the newest `CHARGED_MINUTES` minutes of
event time: a late event for an older minute may be charged again, never forgotten). An event
that would need a new counter past the quota is refused, counted per node (metric and Redis),
and said by ``stockade drops top``.

The default, 8 MiB per node per hour (some 75,000 new flows), lets a legitimate burst through
(a port scan of a whole node in a minute) yet bounds what one node keeps in Redis over the 25 h
retention to about 200 MiB however hard it floods; a longer window bounds it tighter.

The in-memory buffer (counters waiting while Redis is away) is shared: a node may hold at most
``1 / max(nodes holding counters, buffer_min_nodes)`` of it, so a lone flooding node takes at
most a quarter by default and the rest stays for the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ENTRY_OVERHEAD = 64  # bytes Redis spends on a small hash field beyond its text (about)
CHARGED_MINUTES = 3


@dataclass(frozen=True)
class QuotaConfig:
    bytes_per_window: int = 8 << 20  # new counters' bytes per node per window; 0: no quota
    window: float = 3600.0  # seconds
    buffer_min_nodes: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> QuotaConfig:
        """From ``STOCKADE_DROPS_NODE_QUOTA`` (bytes per window, 0: none) and
        ``STOCKADE_DROPS_QUOTA_WINDOW`` (seconds); the defaults for what is unset."""
        d = cls()
        try:
            quota = int(env.get("STOCKADE_DROPS_NODE_QUOTA", d.bytes_per_window))
            window = float(env.get("STOCKADE_DROPS_QUOTA_WINDOW", d.window))
        except ValueError:
            raise ValueError(
                "STOCKADE_DROPS_NODE_QUOTA must be a whole number of bytes (0: no quota) and "
                "STOCKADE_DROPS_QUOTA_WINDOW a number of seconds"
            ) from None
        return cls(bytes_per_window=quota, window=window)

    def __post_init__(self) -> None:
        if self.bytes_per_window < 0 or self.window <= 0 or self.buffer_min_nodes < 1:
            raise ValueError(
                "drop quota: bytes per window must be >= 0 (0: none), the window > 0 s and buffer_min_nodes >= 1"
            )


@dataclass
class NodeQuota:
    """One node's use of its quota in the current window."""

    window_start: float
    used: int = 0
    warned: bool = False  # logged that it hit the quota in this window
    # event minute -> flow keys already charged in this window (the newest few minutes only)
    charged: dict[int, set[str]] = field(default_factory=dict)


class Quotas:
    def __init__(self, config: QuotaConfig) -> None:
        self.config = config
        self._nodes: dict[str, NodeQuota] = {}

    def node(self, name: str, now: float) -> NodeQuota:
        """``name``'s quota state, started afresh when its window has passed."""
        q = self._nodes.get(name)
        if q is None or now - q.window_start >= self.config.window or now < q.window_start:
            q = self._nodes[name] = NodeQuota(window_start=now)
            if len(self._nodes) > 10_000:  # nodes come and go: forget the long-silent ones
                cutoff = now - self.config.window
                for n in [n for n, s in self._nodes.items() if s.window_start < cutoff]:
                    del self._nodes[n]
        return q

    def charge(self, q: NodeQuota, minute: int, key: str) -> bool:
        """Charge a new counter to ``q``; False when it does not fit the quota (refuse the event)."""
        limit = self.config.bytes_per_window
        if not limit:
            return True
        keys = q.charged.get(minute)
        if keys is None:
            keys = q.charged[minute] = set()
            while len(q.charged) > CHARGED_MINUTES:
                del q.charged[min(q.charged)]
        elif key in keys:
            return True
        cost = len(key) + ENTRY_OVERHEAD
        if q.used + cost > limit:
            return False
        q.used += cost
        keys.add(key)
        return True

    def buffer_share(self, max_entries: int, nodes_holding: int) -> int:
        """How many buffered counters one node may hold."""
        return max_entries // max(nodes_holding, self.config.buffer_min_nodes)
