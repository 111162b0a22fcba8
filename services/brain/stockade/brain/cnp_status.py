"""ClusterNetworkPolicy ``status.conditions``, written by the leader only.

Two conditions, as upstream conventions (metav1.Condition) have them:

* ``Accepted``: True when the engine holds the policy; False (reason ``Invalid``) when it refused
  it, with the refused field and why, as the brain's log and ``stockade`` show it.
* ``Realized``: on how many of the nodes that need the policy it is in force. The nodes that need
  it are those hosting the endpoint pods its subject selects (`EngineView.cluster_policy_pods`);
  a node counts when its agent acked the model generation that carried the policy's latest
  change to it (`FanOut.policy_realization`, as for NetworkPolicies) and reports nothing that
  lets pod traffic bypass its rules. True when every such node counts (``Realized``) or when
  there is none (``NoSubjects``); False otherwise (``Pending``, naming the nodes) or when the
  policy was not accepted (``NotAccepted``).

The leader's writer polls what it would write every ``interval`` seconds (so changes within one
interval are one write; a follower reads nothing) and writes a policy only when its conditions'
content changed: a merge patch of ``/status`` carrying the resourceVersion it read (a concurrent
writer makes it 409: tried again at the next round), keeping ``lastTransitionTime`` while a
condition's status stays, and every condition of another type (another implementation's). The
engine is read only between changes, only after it changed, and for at most a twentieth of the
time (a large cluster's snapshot is taken less often); nothing here waits for, or can stop,
enforcement. A 404 (the CRD not installed, the policy gone) is no error: the policy is looked at
again when the engine changes. A new leader reads each policy's status once and writes only
what differs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from stockade.brain.engine.view import EngineView
from stockade.brain.fanout.status import PolicyRealization

log = logging.getLogger(__name__)

GROUP = "policy.networking.k8s.io"
VERSION = "v1alpha2"
PLURAL = "clusternetworkpolicies"
KIND = "ClusterNetworkPolicy"
ACCEPTED = "Accepted"
REALIZED = "Realized"
OURS = (ACCEPTED, REALIZED)
MESSAGE_LIMIT = 32768  # the CRD's maxLength
PENDING_NAMED = 10  # nodes named in a Pending message; the rest are counted
SNAPSHOT_SHARE = 20  # the next snapshot no sooner than 20 times the last one took after it

# What this module calls (tests/deploy/test_deploy_rbac.py checks deploy/rbac.yaml grants it);
# it reads the policies with the sources' "get".
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = ((GROUP, f"{PLURAL}/status", ("patch",)),)


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False"
    reason: str
    message: str


@dataclass(frozen=True)
class PolicyState:
    """What the engine says of one ClusterNetworkPolicy, read between changes."""

    name: str
    uid: str
    generation: int
    refused: str | None  # "field: why" when the engine refused it; None: accepted
    nodes: frozenset[str]  # the nodes hosting the pods its subject selects


Realize = Callable[[str, Iterable[str]], PolicyRealization]  # (name, nodes) -> realization


def states(view: EngineView, lookup: Callable[[tuple[str, str, str]], Mapping[str, Any] | None]) -> list[PolicyState]:
    """Every ClusterNetworkPolicy the brain holds, as the engine judges it (``lookup``: an
    object's last state from the watch). Read it between engine changes."""
    refused = view.cluster_policy_refusals()
    out = []
    for name in sorted(set(view.cluster_policy_names()) | refused.keys()):
        obj = lookup((KIND, "", name))
        meta = obj.get("metadata") if obj is not None else None
        if not isinstance(meta, Mapping):
            continue  # nothing to write to (e.g. refused under a name it does not have)
        uid, generation = meta.get("uid"), meta.get("generation")
        nodes = view.cluster_policy_nodes(name) if name not in refused else set()
        out.append(
            PolicyState(
                name,
                uid if isinstance(uid, str) else "",
                generation if isinstance(generation, int) else 0,
                refused.get(name),
                frozenset(nodes),
            )
        )
    return out


def conditions(state: PolicyState, realization: PolicyRealization | None) -> tuple[Condition, Condition]:
    """The two conditions (pure): ``realization`` of ``state.nodes``; None when refused."""
    if state.refused is not None or realization is None:
        why = state.refused or "not held by the engine"
        return (
            Condition(ACCEPTED, "False", "Invalid", f"not enforced: {why}"[:MESSAGE_LIMIT]),
            Condition(REALIZED, "False", "NotAccepted", "not enforced: the policy was not accepted"),
        )
    accepted = Condition(ACCEPTED, "True", "Accepted", "compiled into the nodes' tier chains")
    n, m = realization.nodes_applied, realization.nodes_needed
    if m == 0:
        return accepted, Condition(
            REALIZED, "True", "NoSubjects", "realized on 0 of 0 nodes: its subject selects no running pod"
        )
    text = f"realized on {n} of {m} nodes (those hosting the pods its subject selects)"
    if n == m:
        return accepted, Condition(REALIZED, "True", "Realized", text)
    pending = sorted(realization.pending)
    named = ", ".join(pending[:PENDING_NAMED]) + (
        f" and {len(pending) - PENDING_NAMED} more" if len(pending) > PENDING_NAMED else ""
    )
    return accepted, Condition(REALIZED, "False", "Pending", f"{text}; not yet on {named}")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merged(existing: Any, wanted: Iterable[Condition], generation: int, now: str) -> list[dict[str, Any]]:
    """``status.conditions`` with ours replaced: another type's kept as is, a condition's
    ``lastTransitionTime`` kept while its status stays (pure, but for ``now``)."""
    old = [c for c in existing if isinstance(c, dict)] if isinstance(existing, list) else []
    by_type = {c.get("type"): c for c in old}
    out = [c for c in old if c.get("type") not in OURS]
    for w in wanted:
        prev = by_type.get(w.type)
        since = prev.get("lastTransitionTime") if prev is not None and prev.get("status") == w.status else None
        out.append(
            {
                "type": w.type,
                "status": w.status,
                "reason": w.reason,
                "message": w.message,
                "lastTransitionTime": since if isinstance(since, str) and since else now,
                "observedGeneration": generation,
            }
        )
    return out


def _content(conds: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """What a write would change (not the timestamps)."""
    keys = ("type", "status", "reason", "message", "observedGeneration")
    return sorted(tuple(c.get(k) for k in keys) for c in conds if c.get("type") in OURS)


class CnpStatusWriter:
    def __init__(
        self,
        is_leader: Callable[[], bool],
        snapshot: Callable[[], Awaitable[list[PolicyState]]],
        realize: Realize,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.is_leader = is_leader
        self.snapshot = snapshot  # reads the engine between changes
        self.realize = realize
        self.interval = interval
        self.clock = clock
        self.api: k8s.CustomObjectsApi | None = None
        self._dirty = True  # the engine changed since the last snapshot
        self._states: list[PolicyState] = []
        self._written: dict[str, tuple[str, int, tuple[Condition, Condition]]] = {}  # name -> (uid, gen, conds)
        self._retry_at = 0.0
        self._snapshot_at = 0.0  # no snapshot before (see round)
        self._failures = 0
        self._last_error = ""
        self.writes = 0  # patches sent that the API server took
        self.held_back = 0  # rounds with something to write while not the leader
        self.failed = 0
        self.rounds = 0

    def attach(self, api: k8s.ApiClient) -> None:
        self.api = k8s.CustomObjectsApi(api)

    def engine_changed(self) -> None:
        """Called on the loop after every engine change (cheap: marks a new snapshot due)."""
        self._dirty = True

    def wanted(self) -> dict[str, tuple[PolicyState, tuple[Condition, Condition]]]:
        """Per policy, the conditions it should have now (from the last snapshot)."""
        out = {}
        for st in self._states:
            real = None if st.refused is not None else self.realize(st.name, st.nodes)
            out[st.name] = (st, conditions(st, real))
        return out

    async def run(self) -> None:
        """Until cancelled; errors are logged, never raised."""
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ClusterNetworkPolicy status: a round failed")
            self.rounds += 1
            await asyncio.sleep(self.interval)

    async def round(self) -> None:
        if not self.is_leader():
            self._written.clear()  # a new term reads each policy's status again
            self.held_back += 1
            return  # nor reads the engine: a follower spends nothing here
        now = self.clock()
        if self._dirty and now >= self._snapshot_at:
            self._dirty = False
            self._states = await self.snapshot()
            took = self.clock() - now
            # The snapshot runs on the loop (between engine changes): at most 1/SNAPSHOT_SHARE of
            # the time, whatever the cluster's size and churn.
            self._snapshot_at = now + took * SNAPSHOT_SHARE
        if self.clock() < self._retry_at:
            return
        want = self.wanted()
        for name in self._written.keys() - want.keys():
            del self._written[name]  # deleted: nothing to write
        for name, (st, conds) in want.items():
            if self._written.get(name) == (st.uid, st.generation, conds):
                continue
            if not self.is_leader():
                return  # lost the lease meanwhile: stop writing at once
            try:
                await self._write(st, conds)
                self._failures, self._last_error = 0, ""
            except ApiException as e:
                if e.status == 409:  # written meanwhile: read it again next round
                    continue
                self._failed(f"{e.status} {e.reason}", name)
                return
            except Exception as e:  # the API away: back off, keep what is known
                self._failed(f"{type(e).__name__}: {e}", name)
                return

    async def _write(self, st: PolicyState, conds: tuple[Condition, Condition]) -> None:
        if self.api is None:
            raise RuntimeError("the status writer has no API client")
        try:
            obj: Any = await self.api.get_cluster_custom_object(GROUP, VERSION, PLURAL, st.name, _request_timeout=10)
        except ApiException as e:
            if e.status == 404:  # no CRD, or deleted since: the engine hears of it
                self._written[st.name] = (st.uid, st.generation, conds)
                return
            raise
        meta = obj.get("metadata") or {}
        if meta.get("uid") != st.uid or meta.get("generation") != st.generation:
            return  # the engine has not seen this version yet: its event is on the way
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        existing = status.get("conditions")
        new = merged(existing, conds, st.generation, _stamp())
        if _content(new) != _content(existing if isinstance(existing, list) else []):
            body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": {"conditions": new}}
            try:
                await self.api.patch_cluster_custom_object_status(
                    GROUP,
                    VERSION,
                    PLURAL,
                    st.name,
                    body,
                    _content_type="application/merge-patch+json",
                    _request_timeout=10,
                )  # type: ignore[call-arg]  # the stubs omit _content_type, which the client honours
            except ApiException as e:
                if e.status != 404:
                    raise
            else:
                self.writes += 1
        self._written[st.name] = (st.uid, st.generation, conds)

    def _failed(self, text: str, name: str) -> None:
        self.failed += 1
        self._failures += 1
        self._retry_at = self.clock() + min(30.0, self.interval * 2**self._failures)
        if text != self._last_error:  # a down API server would say it every round
            hint = (
                "; grant the brain patch on clusternetworkpolicies/status (deploy/rbac.yaml)" if "403" in text else ""
            )
            log.warning("cannot write ClusterNetworkPolicy %s's status: %s%s", name, text, hint)
        self._last_error = text


class CnpStatusCollector(Collector):
    """``stockade_brain_cnp_status_written_total`` and ``..._failed_total``: the status writer's
    patches the API server took, and those it refused or that never reached it."""

    def __init__(self, writer: CnpStatusWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        written = CounterMetricFamily(
            "stockade_brain_cnp_status_written", "ClusterNetworkPolicy status patches the API server took"
        )
        written.add_metric([], self.writer.writes)
        yield written
        failed = CounterMetricFamily(
            "stockade_brain_cnp_status_failed", "ClusterNetworkPolicy status writes that failed (retried)"
        )
        failed.add_metric([], self.writer.failed)
        yield failed
