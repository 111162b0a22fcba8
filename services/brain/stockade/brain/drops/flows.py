"""Flow keys, minute buckets and grouping: the pure arithmetic behind the Redis counters.

A blocked flow is counted under a key made of seven fields (`FIELDS`). In Redis the key is one
hash field, the fields joined with ``|`` (namespace, pod names and IP addresses never contain
it), so one ``HINCRBY`` counts one flow in one minute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

FIELDS: tuple[str, ...] = (
    "direction",  # "ingress" | "egress"
    "protocol",  # "TCP", "UDP", "SCTP" or a protocol number
    "dport",  # destination port, as text
    "dst_namespace",  # "" when the destination is no known pod
    "dst_pod",  # destination pod name, or its IP when it is no known pod
    "src_namespace",  # "" when the source is no known pod
    "src",  # source pod name, or its IP
)
SEP = "|"

# Windows the admin API offers, in minutes.
WINDOWS: dict[str, int] = {"1m": 1, "15m": 15, "1h": 60, "24h": 1440}


@dataclass(frozen=True)
class Flow:
    """One blocked flow, resolved: what a minute counter is kept for."""

    direction: str
    protocol: str
    dport: int
    dst_namespace: str
    dst_pod: str
    src_namespace: str
    src: str

    def encode(self) -> str:
        return SEP.join(
            (
                self.direction,
                self.protocol,
                str(self.dport),
                self.dst_namespace,
                self.dst_pod,
                self.src_namespace,
                self.src,
            )
        )


def decode(field: str) -> dict[str, str]:
    """The named fields of an encoded flow key."""
    return dict(zip(FIELDS, field.split(SEP), strict=True))


def minute_of(t: float) -> int:
    """The minute bucket (minutes since the epoch) holding time ``t``."""
    return int(t // 60)


def window_minutes(window: str | int) -> int:
    """``"15m"`` → 15. Plain integers are minutes. Raises ValueError naming the valid windows."""
    if isinstance(window, int):
        if window < 1:
            raise ValueError(f"window must be at least 1 minute, got {window}")
        return window
    try:
        return WINDOWS[window]
    except KeyError:
        raise ValueError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}") from None


def window_buckets(window: str | int, now: float) -> list[int]:
    """The minute buckets a window covers: the ``n`` most recent, ending with the current one.

    Counts are kept per minute, so a window is a whole number of minute buckets; "1m" is the
    current (possibly partial) minute.
    """
    n = window_minutes(window)
    last = minute_of(now)
    return list(range(last - n + 1, last + 1))


def check_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    unknown = [g for g in group_by if g not in FIELDS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; fields are {', '.join(FIELDS)}")
    return tuple(group_by)


def matches(fields: Mapping[str, str], where: Mapping[str, str]) -> bool:
    return all(fields.get(k) == v for k, v in where.items())


def group_counts(
    hashes: Iterable[Mapping[str, int]],
    group_by: Sequence[str],
    where: Mapping[str, str] | None = None,
) -> Counter[tuple[str, ...]]:
    """Sum minute hashes (encoded flow → count) into groups of the ``group_by`` fields.

    ``where`` keeps only flows whose fields equal the given values (e.g. ``{"dst_namespace": "prod"}``).
    """
    keys = check_group_by(group_by)
    if where:
        check_group_by(list(where))
    idx = [FIELDS.index(k) for k in keys]
    where_idx = [(FIELDS.index(k), str(v)) for k, v in (where or {}).items()]
    out: Counter[tuple[str, ...]] = Counter()
    for h in hashes:
        for field, n in h.items():
            parts = field.split(SEP)
            if len(parts) != len(FIELDS):
                continue  # not a flow key (written by something else): ignore, never crash a query
            if any(parts[i] != v for i, v in where_idx):
                continue
            out[tuple(parts[i] for i in idx)] += int(n)
    return out


def top(counts: Counter[tuple[str, ...]], group_by: Sequence[str], limit: int) -> list[dict[str, object]]:
    """The ``limit`` largest groups, biggest first (ties in key order, so answers are stable)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{**dict(zip(group_by, key, strict=True)), "count": n} for key, n in ranked]


# Ports that get their own `dport` label value; every other port falls into a range bucket so the
# Prometheus label set stays small whatever the traffic.
KNOWN_PORTS: frozenset[int] = frozenset(
    {
        20, 21, 22, 23, 25, 53, 67, 68, 69, 80, 88, 110, 111, 123, 135, 137, 138, 139, 143, 161,
        162, 179, 389, 443, 445, 465, 514, 587, 636, 853, 993, 995, 1433, 1521, 1883, 2049, 2379,
        2380, 3000, 3306, 3389, 4789, 5000, 5432, 5672, 5900, 6379, 6443, 8000, 8080, 8081, 8443,
        8888, 9000, 9090, 9092, 9093, 9100, 9200, 9300, 10250, 10255, 11211, 15672, 27017,
    }
)  # fmt: skip


def dport_label(port: int) -> str:
    """The Prometheus ``dport`` label: the port itself when well known, else its range."""
    if port in KNOWN_PORTS:
        return str(port)
    if port <= 0:
        return "none"  # protocols without ports
    if port < 1024:
        return "other-system"
    if port < 49152:
        return "other-registered"
    return "other-ephemeral"
