"""The admin gRPC service: policies, nodes, explain, dry-run, lint and drops for operators."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol

import grpc
import yaml

from stockade.brain.admin.auth import Authorizer
from stockade.brain.admin.dryrun import dry_run
from stockade.brain.admin.explain import ExplainError, explain
from stockade.brain.admin.limits import Busy, RateLimits, WorkLimits
from stockade.brain.admin.suggest import MAX_FLOWS, suggest
from stockade.brain.admin.suggest_judge import flow as suggest_flow
from stockade.brain.engine import Engine, NotRealized
from stockade.codec.version import MIN_PEER, PROTOCOL, release
from stockade.manifests import bounded_yaml
from stockade.model import Direction
from stockade.model import Protocol as L4
from stockade.v1 import admin_pb2, admin_pb2_grpc

CNP_KIND = "ClusterNetworkPolicy"


class StatusSource(Protocol):
    """What the fan-out knows about nodes (see `stockade.brain.fanout`)."""

    def node_status(self, node: str) -> Any: ...

    # With peers (fanout/peers.py) also the nodes other brains serve; else `node_status`.
    def node_view(self, node: str) -> Any: ...

    def policy_realization(self, namespace: str, name: str, nodes_needed: Iterable[str]) -> Any: ...


class DropsSource(Protocol):
    """Drop queries (see `stockade.brain.drops`)."""

    async def top(self, window: str, group_by: list[str], limit: int) -> list[dict[str, Any]]: ...


class DropFeed:
    """Fans resolved drop records out to `FollowDrops` streams; a slow follower loses records, not the brain."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._queues: set[asyncio.Queue[admin_pb2.DropRecord]] = set()
        self.queue_size = queue_size
        self.lost = 0

    def publish(self, records: Iterable[admin_pb2.DropRecord]) -> None:
        for rec in records:
            for q in self._queues:
                try:
                    q.put_nowait(rec)
                except asyncio.QueueFull:
                    self.lost += 1

    def subscribe(self) -> asyncio.Queue[admin_pb2.DropRecord]:
        q: asyncio.Queue[admin_pb2.DropRecord] = asyncio.Queue(self.queue_size)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[admin_pb2.DropRecord]) -> None:
        self._queues.discard(q)

    @property
    def followers(self) -> int:
        return len(self._queues)


def _store_status(st: Any) -> admin_pb2.DropStoreStatus:
    """A `drops.view.StoreState` on the wire."""
    return admin_pb2.DropStoreStatus(
        source=st.source, redis_configured=st.redis_configured, redis_available=st.redis_available,
        unavailable_since=st.unavailable_since, error=st.error, buffered_events=st.buffered_events,
        memory_since=st.memory_since,
    )  # fmt: skip


def _record_matches(rec: admin_pb2.DropRecord, req: admin_pb2.FollowDropsRequest) -> bool:
    pods = [p for p in (rec.src_pod, rec.dst_pod) if p]
    if req.namespace and not any(p.split("/", 1)[0] == req.namespace for p in pods):
        return False
    if req.pod and not any(p == req.pod or p.split("/", 1)[-1] == req.pod for p in pods):
        return False
    if req.direction and rec.direction != req.direction.lower():
        return False
    if req.protocol and rec.protocol != req.protocol.upper():
        return False
    return not (req.port and rec.dport != req.port)


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(
        self,
        engine: Engine,
        auth: Authorizer,
        objects: Callable[[], Iterable[Mapping[str, Any]]],
        status: StatusSource | None = None,
        drops: DropsSource | None = None,
        feed: DropFeed | None = None,
        resync: Callable[[str], bool] | None = None,
        node_info: Callable[[str], Mapping[str, Any]] | None = None,
        dry_runs: WorkLimits | None = None,
        explains: RateLimits | None = None,
    ) -> None:
        self.engine = engine
        self.auth = auth
        self.objects = objects
        self.status = status
        self.drops = drops
        self.feed = feed or DropFeed()
        self.resync = resync
        self.node_info = node_info
        self.dry_runs = dry_runs or WorkLimits("dry-run")
        self.explains = explains or RateLimits("explain")
        self.follow_poll = 1.0  # how often a follow stream looks at the drop store's state

    # ------------------------------------------------------------------ policies and nodes

    def _policy_status(
        self, key: str, warnings: dict[str, list[str]], left_out: dict[str, list[NotRealized]] | None = None
    ) -> admin_pb2.PolicyStatus:
        ns, name = key.split("/", 1)
        pol = self.engine.policy(ns, name)
        st = admin_pb2.PolicyStatus(namespace=ns, name=name, warnings=warnings.get(key, []))
        if pol is None:
            return st
        missing = (left_out or {}).get(key, [])
        st.not_realized.extend(f"{nr.node}: {nr.message}" for nr in missing)
        st.selected_pods.extend(self.engine.policy_pods(ns, name))
        st.policy_types.extend(
            t for t, rules in (("Ingress", pol.ingress), ("Egress", pol.egress)) if rules is not None
        )
        needed = sorted(self.engine.policy_nodes(ns, name))
        st.nodes_needed = len(needed)
        if self.status is not None:
            # A node whose model leaves the policy out does not realize it, whatever it applied.
            gaps = {nr.node for nr in missing}
            real = self.status.policy_realization(ns, name, [n for n in needed if n not in gaps])
            st.nodes_applied = real.nodes_applied
            st.nodes_pending.extend(real.pending)
        return st

    def _all_policy_statuses(self, namespace: str = "") -> list[admin_pb2.PolicyStatus]:
        warnings: dict[str, list[str]] = {}
        for w in self.engine.lint():
            warnings.setdefault(w.policy, []).append(f"{w.field}: {w.message}")
        left_out: dict[str, list[NotRealized]] = {}
        for nr in self.engine.not_realized():
            left_out.setdefault(nr.policy, []).append(nr)
        out = [
            self._policy_status(k, warnings, left_out)
            for k in self.engine.policy_keys()
            if not namespace or k.split("/", 1)[0] == namespace
        ]
        for r in self.engine.rejections():
            if not r.object.startswith("NetworkPolicy "):
                continue
            key = r.object.split(" ", 1)[1]
            ns, name = key.split("/", 1)
            if namespace and ns != namespace:
                continue
            out.append(admin_pb2.PolicyStatus(namespace=ns, name=name, rejected=f"{r.field}: {r.message}"))
        labels = self._labels("NetworkPolicy")
        for st in out:
            st.kind = "NetworkPolicy"
            st.labels.update(labels.get((st.namespace, st.name), {}))
        if not namespace:  # cluster-scoped: listed unless one namespace is asked for
            out += self._cluster_policy_statuses(warnings)
        return sorted(out, key=lambda s: (s.kind != "ClusterNetworkPolicy", s.namespace, s.name))

    def _cluster_policy_statuses(self, warnings: dict[str, list[str]]) -> list[admin_pb2.PolicyStatus]:
        """Every ClusterNetworkPolicy, held or refused: its subject's pods, the nodes hosting them
        and how many of those enforce its latest change (as for a NetworkPolicy)."""
        labels = self._labels(CNP_KIND)
        out = []
        refused = self.engine.cluster_policy_refusals()
        for name in sorted(set(self.engine.cluster_policy_names()) | refused.keys()):
            st = admin_pb2.PolicyStatus(
                kind=CNP_KIND,
                name=name,
                warnings=warnings.get(f"{CNP_KIND} {name}", []),
                rejected=refused.get(name, ""),
                labels=labels.get(("", name), {}),
            )
            cnp = self.engine.cluster_policy(name)
            if cnp is not None and name not in refused:
                st.tier, st.priority = cnp.tier.value, cnp.priority
                st.policy_types.extend(t for t, rules in (("Ingress", cnp.ingress), ("Egress", cnp.egress)) if rules)
                st.selected_pods.extend(self.engine.cluster_policy_pods(name))
                needed = sorted(self.engine.cluster_policy_nodes(name))
                st.nodes_needed = len(needed)
                if self.status is not None:
                    real = self.status.policy_realization("", name, needed)
                    st.nodes_applied = real.nodes_applied
                    st.nodes_pending.extend(real.pending)
            out.append(st)
        return out

    def _labels(self, kind: str) -> dict[tuple[str, str], dict[str, str]]:
        """metadata.labels of every ``kind`` object by (namespace, name): for the CLI's -l selectors."""
        out: dict[tuple[str, str], dict[str, str]] = {}
        for obj in self.objects():
            meta = obj.get("metadata")
            if obj.get("kind") != kind or not isinstance(meta, Mapping) or not isinstance(meta.get("labels"), Mapping):
                continue
            key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            out[key] = {str(k): str(v) for k, v in meta["labels"].items()}
        return out

    async def ListPolicies(
        self, request: admin_pb2.ListPoliciesRequest, context: Any
    ) -> admin_pb2.ListPoliciesResponse:
        await self.auth.require(context)
        return admin_pb2.ListPoliciesResponse(policies=self._all_policy_statuses(request.namespace))

    async def GetPolicy(self, request: admin_pb2.GetPolicyRequest, context: Any) -> admin_pb2.PolicyStatus:
        await self.auth.require(context)
        for st in self._all_policy_statuses(request.namespace):
            if st.name == request.name and (st.namespace == request.namespace or not request.namespace):
                return st
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no policy {request.namespace}/{request.name}")
        raise AssertionError("unreachable")

    async def ListNodes(self, request: admin_pb2.ListNodesRequest, context: Any) -> admin_pb2.ListNodesResponse:
        await self.auth.require(context)
        out = []
        view = ""
        if self.status is not None:
            peers = getattr(self.status, "peers", None)
            view = (
                f"every brain's agents: this brain ({getattr(self.status, 'brain_id', '')}) and the peers "
                "it reads through Redis"
                if peers is not None
                else "this brain's agents only (no --redis-url): nodes served by another brain show as not connected"
            )
        labels = self._labels("Node")
        for node in self.engine.nodes():
            model = self.engine.model(node)
            ns = admin_pb2.NodeStatus(
                name=node,
                pods=len(set(model.ingress) | set(model.egress)),
                chains=len(model.chains),
                sets=len(model.sets),
                labels=labels.get(("", node), {}),
            )
            if self.status is not None:
                st = self.status.node_view(node)
                ns.connected = bool(st.connected)
                ns.brain = str(getattr(st, "brain", "") or "")
                ns.desired_generation = int(st.desired_generation)
                ns.applied_generation = int(st.applied_generation)
                ns.last_apply_time = float(st.last_apply_time or 0.0)
                ns.last_error = str(st.last_error or "")
                ns.backend = str(getattr(st, "backend", "") or "")
                ns.ready = bool(getattr(st, "ready", False))
                ns.problems.extend(getattr(st, "problems", ()))
                ns.refused = str(getattr(st, "refused", "") or "")
                ns.protocol = int(getattr(st, "protocol", 0))
                ns.agent_version = str(getattr(st, "agent_version", "") or "")
            if self.node_info is not None:
                ns.backend = str(self.node_info(node).get("backend", ""))
            out.append(ns)
        return admin_pb2.ListNodesResponse(
            nodes=out, view=view, brain_version=release(), brain_protocol=PROTOCOL, brain_min_protocol=MIN_PEER
        )

    # ------------------------------------------------------------------ explain, dry-run, lint

    async def Explain(self, request: admin_pb2.ExplainRequest, context: Any) -> admin_pb2.ExplainResponse:
        caller = await self.auth.require(context)
        try:
            self.explains.take(caller.name)
        except Busy as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        try:
            proto = L4((request.protocol or "TCP").upper())
        except ValueError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"protocol {request.protocol!r}: use TCP, UDP or SCTP"
            )
            raise AssertionError("unreachable") from None
        if not 1 <= request.port <= 65535:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "port must be between 1 and 65535")
        try:
            ex = explain(self.engine, getattr(request, "from"), request.to, request.port, proto)
        except ExplainError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
            raise AssertionError("unreachable") from None
        return admin_pb2.ExplainResponse(
            allowed=ex.allowed, reasons=ex.reasons, hints=ex.hints, text=ex.text(), json=json.dumps(ex.as_json())
        )

    async def DryRun(self, request: admin_pb2.DryRunRequest, context: Any) -> admin_pb2.DryRunResponse:
        caller = await self.auth.require(context)
        if len(request.manifests) > 1000 or sum(len(m.content) for m in request.manifests) > 16 << 20:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "at most 1000 manifests and 16 MiB per dry-run")
        changes: list[Mapping[str, Any]] = []
        for m in request.manifests:
            try:
                # Bounded: an alias bomb must not cost the brain its memory (manifests/bounded_yaml).
                docs = [d for d in bounded_yaml.load_all(m.content) if d is not None]
            except yaml.YAMLError as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{m.name}: invalid YAML: {e}")
                raise AssertionError("unreachable") from None
            for i, d in enumerate(docs, 1):
                if not isinstance(d, dict) or "kind" not in d:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"{m.name}, document {i}: not a Kubernetes object"
                    )
                changes.append(d)
        # Compiling twice is CPU work: off the event loop (the sync streams stay responsive), and
        # bounded in time and in how many run at once, per caller and in all.
        try:
            result = await self.dry_runs.run(caller.name, dry_run, list(self.objects()), changes)
        except Busy as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
            raise AssertionError("unreachable") from None
        conn = lambda t: admin_pb2.Connection(  # noqa: E731
            **{"from": t[0]}, to=t[1], port=t[2], protocol=t[3], family=t[4]
        )
        return admin_pb2.DryRunResponse(
            opened=[conn(t) for t in result.opened],  # one per family whose verdict changes
            closed=[conn(t) for t in result.closed],
            warnings=result.warnings,
            rejected=result.rejected,
            checked=result.checked,
        )

    async def Suggest(self, request: admin_pb2.SuggestRequest, context: Any) -> admin_pb2.SuggestResponse:
        caller = await self.auth.require(context)
        try:
            flows = [suggest_flow(getattr(c, "from"), c.to, c.port, c.protocol) for c in request.flows]
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError("unreachable") from None
        if not flows or len(flows) > MAX_FLOWS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"give from 1 to {MAX_FLOWS} flows")
        # As a dry-run: engines of its own, off the event loop, bounded per caller and in all.
        try:
            got = await self.dry_runs.run(caller.name, suggest, list(self.objects()), flows)
        except Busy as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
            raise AssertionError("unreachable") from None
        return admin_pb2.SuggestResponse(json=json.dumps(got.as_json()))

    async def Lint(self, request: admin_pb2.LintRequest, context: Any) -> admin_pb2.LintResponse:
        await self.auth.require(context)
        return admin_pb2.LintResponse(
            warnings=[str(w) for w in self.engine.lint()], rejected=[str(r) for r in self.engine.rejections()]
        )

    # ------------------------------------------------------------------ drops

    async def TopDrops(self, request: admin_pb2.TopDropsRequest, context: Any) -> admin_pb2.TopDropsResponse:
        await self.auth.require(context)
        if self.drops is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this brain has no drop store (start it with --redis-url)")
            raise AssertionError("unreachable")
        window = request.window or "15m"
        group_by = list(request.group_by) or ["dst_namespace", "dst_pod", "dport"]
        # A `drops.DropsView` answers from memory while Redis is away, and says so.
        answer = getattr(self.drops, "answer", None)
        store = None
        try:
            if answer is not None:
                got = await answer(window, group_by, request.limit or 20)
                rows, store = got.rows, _store_status(got.store)
            else:
                rows = await self.drops.top(window, group_by, request.limit or 20)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError("unreachable") from None
        out = []
        for row in rows:
            count = int(row.get("count", 0))
            key = {str(k): str(v) for k, v in row.items() if k != "count"}
            out.append(admin_pb2.DropCount(key=key, count=count))
        # What the brain refused from agents (invalid, over quota), when the store keeps it.
        if answer is not None:
            refused = got.refused
        else:
            refused_by_node = getattr(self.drops, "refused_by_node", None)
            refused = await refused_by_node(window) if refused_by_node is not None else []
        return admin_pb2.TopDropsResponse(
            rows=out,
            window=window,
            refused=[admin_pb2.DropRefusal(node=str(r["node"]), reason=str(r["reason"]), count=int(r["count"]))
                     for r in refused],
            store=store,
        )  # fmt: skip

    async def FollowDrops(
        self, request: admin_pb2.FollowDropsRequest, context: Any
    ) -> AsyncIterator[admin_pb2.DropRecord]:
        await self.auth.require(context)
        if request.direction and request.direction.lower() not in (d.value for d in Direction):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "direction must be ingress or egress")
        # The records come from memory, Redis or not; a notice says when the store's state changes.
        state = getattr(self.drops, "state", None)
        said: tuple[bool, bool] | None = None
        q = self.feed.subscribe()
        try:
            while True:
                if state is not None:
                    st = state()
                    now = (st.redis_configured, st.redis_available)
                    if st.redis_configured and now != said and (said is not None or not st.redis_available):
                        yield admin_pb2.DropRecord(time=time.time(), store=_store_status(st))
                    said = now
                try:
                    rec = await asyncio.wait_for(q.get(), self.follow_poll)
                except TimeoutError:
                    continue
                if _record_matches(rec, request):
                    yield rec
        finally:
            self.feed.unsubscribe(q)

    # ------------------------------------------------------------------ writes (admin role)

    async def Resync(self, request: admin_pb2.ResyncRequest, context: Any) -> admin_pb2.ResyncResponse:
        await self.auth.require(context, "admin")
        if self.resync is None:
            return admin_pb2.ResyncResponse(ok=False, message="resync is not available on this brain")
        ok = self.resync(request.node)
        if ok:
            return admin_pb2.ResyncResponse(ok=True, message=f"node {request.node} will get a full snapshot")
        # Only the brain holding the node's stream can resend it: say which one that is.
        view = self.status.node_view(request.node) if self.status is not None else None
        brain = getattr(view, "brain", "") if view is not None and getattr(view, "connected", False) else ""
        msg = (
            f"node {request.node} is served by brain {brain}, not this one: ask that brain (its admin address)"
            if brain
            else f"node {request.node} is not connected"
        )
        return admin_pb2.ResyncResponse(ok=False, message=msg)
