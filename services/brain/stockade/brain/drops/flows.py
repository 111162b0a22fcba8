"""Flow keys, minute buckets and grouping: the pure arithmetic behind the Redis counters.

A blocked flow is counted under a key made of seven fields (`FIELDS`), and an eighth when a
ClusterNetworkPolicy tier rule dropped it: ``policy``, that rule (`resolve.rule_text`; queries
may group by it too: `GROUP_FIELDS`). In Redis the key is one hash field, the fields joined
with ``|`` (namespace, pod names, IP addresses and the policy text never contain it), so one
``HINCRBY`` counts one flow in one minute. A
NetworkPolicy drop keeps the seven-field key it had before tiers (so counts stored by an older
brain group with a newer one's); grouped by ``policy`` it is named after the policies isolating
the denying pod as the engine knows them when asked (``NetworkPolicy ns/a,ns/b``: `PolicyOf`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
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
POLICY = "policy"  # the tier rule that dropped it: only in a tier drop's key
GROUP_FIELDS: tuple[str, ...] = (*FIELDS, POLICY)  # what a query may group by
SEP = "|"
_BASE = len(FIELDS)  # the fields of every key
# (direction, namespace, pod) of the denying side -> the text of its isolating policies
PolicyOf = Callable[[str, str, str], str]

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
    policy: str = ""  # a tier drop's rule (`resolve.rule_text`); "" for a NetworkPolicy drop

    def encode(self) -> str:
        parts = [self.direction, self.protocol, str(self.dport), self.dst_namespace, self.dst_pod]
        parts += [self.src_namespace, self.src]
        if self.policy:
            parts.append(self.policy)
        return SEP.join(parts)


def decode(field: str) -> dict[str, str]:
    """The named fields of an encoded flow key (``policy`` too when a tier rule dropped it)."""
    parts = field.split(SEP)
    return dict(zip(FIELDS if len(parts) == _BASE else GROUP_FIELDS, parts, strict=True))


def netpol_text(names: Sequence[str]) -> str:
    """How a NetworkPolicy drop is named by policy: its isolating policies ("" when none known)."""
    return f"NetworkPolicy {','.join(names)}" if names else ""


def denying_side(parts: Sequence[str]) -> tuple[str, str, str] | None:
    """(direction, namespace, pod) whose rules denied the flow of a split key, or None when that
    side is no known pod (its namespace is "")."""
    direction = parts[0]
    ns, pod = (parts[3], parts[4]) if direction == "ingress" else (parts[5], parts[6])
    return (direction, ns, pod) if ns else None


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
    unknown = [g for g in group_by if g not in GROUP_FIELDS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; fields are {', '.join(GROUP_FIELDS)}")
    return tuple(group_by)


def matches(fields: Mapping[str, str], where: Mapping[str, str]) -> bool:
    return all(fields.get(k) == v for k, v in where.items())


def group_counts(
    hashes: Iterable[Mapping[str, int]],
    group_by: Sequence[str],
    where: Mapping[str, str] | None = None,
    policy_of: PolicyOf | None = None,
) -> Counter[tuple[str, ...]]:
    """Sum minute hashes (encoded flow → count) into groups of the ``group_by`` fields.

    ``where`` keeps only flows whose fields equal the given values (e.g. ``{"dst_namespace": "prod"}``).
    ``policy_of`` names a NetworkPolicy drop's policies when ``policy`` is asked for (without
    it they are "").
    """
    keys = check_group_by(group_by)
    if where:
        check_group_by(list(where))
    idx = [GROUP_FIELDS.index(k) for k in keys]
    where_idx = [(GROUP_FIELDS.index(k), str(v)) for k, v in (where or {}).items()]
    wants_policy = _BASE in idx or any(i == _BASE for i, _ in where_idx)
    named = _cached(policy_of) if wants_policy and policy_of is not None else None
    out: Counter[tuple[str, ...]] = Counter()
    for h in hashes:
        for field, n in h.items():
            parts = field.split(SEP)
            if len(parts) == _BASE:
                side = denying_side(parts) if named is not None else None
                parts.append(named(*side) if side is not None and named is not None else "")
            elif len(parts) != len(GROUP_FIELDS):
                continue  # not a flow key (written by something else): ignore, never crash a query
            if any(parts[i] != v for i, v in where_idx):
                continue
            out[tuple(parts[i] for i in idx)] += int(n)
    return out


def _cached(policy_of: PolicyOf) -> PolicyOf:
    """``policy_of`` asked once per denying side in a query; a failure names nothing."""
    seen: dict[tuple[str, str, str], str] = {}

    def named(direction: str, namespace: str, pod: str) -> str:
        key = (direction, namespace, pod)
        text = seen.get(key)
        if text is None:
            try:
                text = policy_of(direction, namespace, pod)
            except Exception:  # a name is a nicety: never fail a query for it
                text = ""
            seen[key] = text = text.replace(SEP, "_")
        return text

    return named


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
