"""From IP addresses to pods (as they were when the event happened) and isolating policies."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from stockade.brain.engine.objects import canonical_ip, pod_addresses
from stockade.model.rules import Direction

PodRef = tuple[str, str]  # (namespace, pod name)


class Resolver(Protocol):
    def resolve_ip(self, ip: str, at_time: float) -> PodRef | None: ...

    def isolating_policies(self, namespace: str, pod: str, direction: Direction) -> list[str]: ...


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
    ) -> None:
        self.history = history if history is not None else IpHistory()
        for ip, ref in (ips or {}).items():
            self.history.assign(ip, ref, 0.0)
        self._policies = dict(policies or {})

    def resolve_ip(self, ip: str, at_time: float) -> PodRef | None:
        return self.history.lookup(ip, at_time)

    def isolating_policies(self, namespace: str, pod: str, direction: Direction) -> list[str]:
        return list(self._policies.get((namespace, pod, direction), []))
