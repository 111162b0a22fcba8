"""From IP addresses to pods (as they were when the event happened) and isolating policies;
from a tier chain's rule to the ClusterNetworkPolicy rule it came from (`Attributor`)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from stockade.brain.engine.api import RuleOrigin
from stockade.brain.engine.objects import canonical_ip, pod_addresses
from stockade.model.rules import Direction

PodRef = tuple[str, str]  # (namespace, pod name)

# The `tier` label of the blocked-connections metric: the tier whose chain dropped the connection.
# A drop by a tier rule the brain cannot place (its chain replaced before the drop arrived, and
# never seen before) is "unknown": bounded, and never passed off as a tier it may not be.
TIER_ADMIN, TIER_NETPOL, TIER_BASELINE, TIER_UNKNOWN = "admin", "netpol", "baseline", "unknown"
TIER_LABELS = (TIER_ADMIN, TIER_NETPOL, TIER_BASELINE, TIER_UNKNOWN)
_ORIGIN_TIERS = {"admin": TIER_ADMIN, "baseline": TIER_BASELINE}
_MAX_NAME = 253  # a Kubernetes object name's bound; longer text (from a buggy engine) is cut


class Resolver(Protocol):
    def resolve_ip(self, ip: str, at_time: float) -> PodRef | None: ...

    def isolating_policies(self, namespace: str, pod: str, direction: Direction) -> list[str]: ...


class OriginSource(Protocol):
    """What a resolver may offer for tier drops (`EngineResolver`, `StaticResolver` do)."""

    def rule_origin(self, node: str, chain_id: str, index: int) -> RuleOrigin | None: ...


class EngineLike(Protocol):
    """The part of `stockade.brain.engine.Engine` the resolver reads."""

    def pod_by_ip(self, ip: str) -> str | None: ...

    def policies_for_pod(self, ns: str, name: str) -> Mapping[Direction, list[str]]: ...


class IpHistory:
    """Who held each pod IP, and since when: the last few assignments per IP.

    An event is attributed to the pod that held its IP at the event's time, not now: agents may
    report late (they buffer while the brain is away) and pod IPs are reused. Assignments older
    than the newest ``per_ip`` are forgotten, which bounds memory to ``per_ip`` entries per IP.
    Record the initial list with ``at=0`` so events older than the brain are attributed too.
    """

    def __init__(self, per_ip: int = 4) -> None:
        self._per_ip = per_ip
        # ip -> (sorted times, owners); owner None means the IP was released at that time.
        self._hist: dict[str, tuple[list[float], list[PodRef | None]]] = {}

    def __contains__(self, ip: str) -> bool:
        return ip in self._hist

    def assign(self, ip: str, owner: PodRef | None, at: float) -> None:
        times, owners = self._hist.setdefault(ip, ([], []))
        if owners and owners[-1] == owner and at >= times[-1]:
            return  # no change
        i = bisect.bisect_right(times, at)
        times.insert(i, at)
        owners.insert(i, owner)
        if len(times) > self._per_ip:
            del times[0], owners[0]
        if all(o is None for o in owners):
            del self._hist[ip]  # only releases left: nothing worth keeping

    def lookup(self, ip: str, at: float) -> PodRef | None:
        entry = self._hist.get(ip)
        if entry is None:
            return None
        times, owners = entry
        if at >= times[-1]:
            return owners[-1]  # the common case: the event is newer than the IP's last change
        i = bisect.bisect_right(times, at)
        return owners[i - 1] if i else None

    def observe_pod(self, pod: Mapping[str, Any], at: float, deleted: bool = False) -> None:
        """Record a Pod object (API JSON dict) as seen at ``at``: its IPs (every family, canonical)
        are its own unless it is deleted, finished, or on the host network. A malformed object
        records nothing (it is not an endpoint either)."""
        meta, spec, status = (_mapping(pod.get(k)) for k in ("metadata", "spec", "status"))
        ips, _ = pod_addresses(status)
        if not ips or spec.get("hostNetwork"):
            return
        ref = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        gone = deleted or status.get("phase") in ("Succeeded", "Failed")
        for ip in ips:
            if not gone:
                self.assign(ip, ref, at)
            elif self.lookup(ip, at) == ref:
                self.assign(ip, None, at)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class EngineResolver:
    """A `Resolver` over the engine: IP history first (when it knows the IP), then the engine's
    current view; isolating policies as the engine sees them now.

    ``busy``: whether the engine is being changed (on the brain's worker thread) right now. Then
    the engine is not read (it may be half-way through a change): addresses come from the IP
    history and the owner table, and policies from the answers given between changes."""

    CACHE = 4096

    def __init__(
        self, engine: EngineLike, history: IpHistory | None = None, busy: Callable[[], bool] | None = None
    ) -> None:
        self._engine = engine
        self.history = history if history is not None else IpHistory()
        self._busy = busy or (lambda: False)
        self._policies: dict[tuple[str, str, Direction], list[str]] = {}
        self._origins: dict[tuple[str, str, int], RuleOrigin | None] = {}

    def rule_origin(self, node: str, chain_id: str, index: int) -> RuleOrigin | None:
        """The ClusterNetworkPolicy rule behind a tier chain's rule, as the engine knows it now
        (None: unknown, e.g. the chain was replaced before the drop arrived). While the engine
        is busy, the last answer given between changes; an engine without tiers, or one that
        fails, knows none: attribution must never cost the count."""
        key = (node, chain_id, index)
        if self._busy():
            return self._origins.get(key)
        lookup = getattr(self._engine, "rule_origin", None)
        try:
            origin = lookup(node, chain_id, index) if lookup is not None else None
        except Exception:
            origin = None
        if not isinstance(origin, RuleOrigin):
            origin = None
        if len(self._origins) >= self.CACHE:
            self._origins.clear()
        self._origins[key] = origin
        return origin

    def resolve_ip(self, ip: str, at_time: float) -> PodRef | None:
        """The pod holding ``ip`` (either family, any spelling) at ``at_time``."""
        if ip not in self.history:
            try:
                ip = canonical_ip(ip, "ip")
            except ValueError:
                return None
        if ip in self.history:
            return self.history.lookup(ip, at_time)
        ref = self._engine.pod_by_ip(ip)
        if not ref:
            return None
        ns, _, name = ref.partition("/")
        return (ns, name)

    def isolating_policies(self, namespace: str, pod: str, direction: Direction) -> list[str]:
        key = (namespace, pod, direction)
        if self._busy():
            return list(self._policies.get(key, ()))  # as of the last answer between changes
        names = list(self._engine.policies_for_pod(namespace, pod).get(direction, []))
        if len(self._policies) >= self.CACHE:
            self._policies.clear()  # bounded; only consulted while the engine is busy
        self._policies[key] = names
        return names


class StaticResolver:
    """A fixed table, for tests and tools: ``ips`` maps IP → (namespace, pod);
    ``policies`` maps (namespace, pod, direction) → policy names."""

    def __init__(
        self,
        ips: Mapping[str, PodRef] | None = None,
        policies: Mapping[tuple[str, str, Direction], list[str]] | None = None,
        history: IpHistory | None = None,
        origins: Mapping[tuple[str, int], RuleOrigin] | None = None,
    ) -> None:
        """``origins``: (tier chain id, rule index) → its ClusterNetworkPolicy rule."""
        self.history = history if history is not None else IpHistory()
        for ip, ref in (ips or {}).items():
            self.history.assign(ip, ref, 0.0)
        self._policies = dict(policies or {})
        self.origins = dict(origins or {})

    def rule_origin(self, node: str, chain_id: str, index: int) -> RuleOrigin | None:
        return self.origins.get((chain_id, index))

    def resolve_ip(self, ip: str, at_time: float) -> PodRef | None:
        return self.history.lookup(ip, at_time)

    def isolating_policies(self, namespace: str, pod: str, direction: Direction) -> list[str]:
        return list(self._policies.get((namespace, pod, direction), []))


def rule_text(origin: RuleOrigin) -> str:
    """How `drops top --by policy` names a tier rule: ``ClusterNetworkPolicy <name> rule <rule>``,
    the rule by its name or else its place (``spec.ingress[2]``). Every part is made plain
    (`_plain`): the text goes into the Redis flow keys, the records and the CLI."""
    label = _plain(origin.name) if origin.name else f"spec.{_plain(origin.direction)}[{int(origin.rule)}]"
    return f"ClusterNetworkPolicy {_plain(origin.policy)} rule {label}"


def _plain(value: object) -> str:
    """``value`` as text without delimiters or control characters: every character that is
    not a plain name character becomes ``_`` (names the API accepts are left as they are)."""
    text = str(value)[:_MAX_NAME]
    return "".join(c if (c.isalnum() and c.isascii()) or c in "-._/:" else "_" for c in text)


class Attributor:
    """Which tier's chain dropped an event, and (for a tier rule) the ClusterNetworkPolicy rule:
    (tier label, policy text). A NetworkPolicy deny (``rule`` None) is ("netpol", ""): its
    policies are the isolating ones, looked up as before tiers. A tier rule the resolver cannot
    place is attributed to the chain's policies as a NetworkPolicy deny is (text ""), its tier
    from an earlier answer for the same chain (a chain's id names its content, tier included, so
    that never changes), else "unknown".

    Answers are kept for one ingest call (`reset`): an origin may change with the next policy
    change, a chain's tier may not (that memory is bounded)."""

    TIERS_KEPT = 65536

    def __init__(self, resolver: object) -> None:
        self._lookup = getattr(resolver, "rule_origin", None)
        self._answers: dict[tuple[str, str, int], tuple[str, str]] = {}
        self._chain_tiers: dict[str, str] = {}

    def reset(self) -> None:
        self._answers.clear()

    def __call__(self, node: str, chain: str, rule: int | None) -> tuple[str, str]:
        if rule is None:
            return TIER_NETPOL, ""
        key = (node, chain, rule)
        got = self._answers.get(key)
        if got is None:
            got = self._answers[key] = self._attribute(node, chain, rule)
        return got

    def _attribute(self, node: str, chain: str, rule: int) -> tuple[str, str]:
        origin = None
        if self._lookup is not None:
            try:
                origin = self._lookup(node, chain, rule)
            except Exception:  # a resolver's failure must never cost the count
                origin = None
        tier = _ORIGIN_TIERS.get(str(getattr(origin, "tier", "")).lower()) if origin is not None else None
        if origin is None or tier is None:
            return self._chain_tiers.get(chain, TIER_UNKNOWN), ""
        if chain not in self._chain_tiers and len(self._chain_tiers) >= self.TIERS_KEPT:
            self._chain_tiers.clear()
        self._chain_tiers[chain] = tier
        return tier, rule_text(origin)
