"""The brain process: sources → engine → fan-out, with drops, admin and health around them.

Start-up order matters for safety: the brain lists every kind first and computes all node
models at once, and only then opens the sync port, so an agent can never receive a model
computed from half a cluster (which would open or close connections wrongly).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, generate_latest

from stockade.brain import metrics as brain_metrics
from stockade.brain import servers, tokenauth
from stockade.brain.admin.auth import Authorizer
from stockade.brain.admin.kubeauth import KubeAuthorizer
from stockade.brain.admin.service import AdminService, DropFeed
from stockade.brain.cnp_status import CnpStatusCollector, CnpStatusWriter, PolicyState, states
from stockade.brain.drops import (
    Aggregator,
    DropMetrics,
    EnginePorts,
    EngineResolver,
    FeedListener,
    IpHistory,
    NoStore,
    RedisStore,
    connect,
)
from stockade.brain.drops.nostore import NO_QUOTA
from stockade.brain.drops.peers import SharedFeed
from stockade.brain.drops.quota import QuotaConfig
from stockade.brain.drops.servicer import DropServicer
from stockade.brain.drops.view import DropsView
from stockade.brain.engine import Deltas, Engine, NotRealized, Rejection
from stockade.brain.events import EventRecorder, EventsCollector, ObjectEvents
from stockade.brain.fanout import FanOut
from stockade.brain.fanout.peers import PeerSync, brain_id
from stockade.brain.identity_metrics import IdentityCollector
from stockade.brain.leader import ElectionConfig, LeaderCollector, LeaderElector, default_identity
from stockade.brain.nodeauth import NodeAuth
from stockade.brain.sources import SourceEvent, Sources, api_client
from stockade.brain.sources.slim import brain_slimmer
from stockade.brain.startup import cold_start
from stockade.brain.sync_service import SyncService, server_options
from stockade.brain.taints import StartupTaints
from stockade.brain.worker import EngineWorker, GatedServicer
from stockade.model import NodeModel
from stockade.v1 import admin_pb2, admin_pb2_grpc, drops_pb2, drops_pb2_grpc, sync_pb2

SWITCH_INTERVAL = 0.001  # seconds: see Brain.run_forever

log = logging.getLogger("stockade.brain")

STOP_GRACE = 10.0  # seconds for a clean shutdown; well inside Kubernetes' default 30 s grace
SHUTDOWN_MESSAGE = "brain shutting down: reconnect to another brain"
STREAMS_GRACE = 1.0  # seconds for the agents' streams to end with that status

# Admin calls that read the engine (DryRun compiles engines of its own; drops and resync read
# the store and the fan-out).
ENGINE_READERS = frozenset({"ListPolicies", "GetPolicy", "ListNodes", "Explain", "Lint"})


@dataclass
class BrainConfig:
    kubeconfig: str | None = None
    listen: str = "0.0.0.0:7443"  # sync + drops: mTLS, agents only
    admin_listen: str = "0.0.0.0:7444"  # admin API: TLS, bearer tokens
    admin_mtls_listen: str | None = "0.0.0.0:7445"  # admin API: mTLS, operator certificates (or tokens)
    # /healthz /readyz /metrics, /v1/realized (admin token): loopback unless the deployment
    # says where the kubelet and the scraper reach it
    http: str = "127.0.0.1:9090"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    insecure: bool = False  # tests only: plain-text gRPC, node names trusted
    redis_url: str | None = None
    admin_tokens_file: str | None = None
    # Admin callers with a Kubernetes token (TokenReview), authorized by RBAC (admin/kubeauth.py)
    admin_kube_auth: bool = True
    history: int = 256
    beta_default_deny: bool = True
    drops_quota: QuotaConfig = field(default_factory=QuotaConfig)  # per node, on new Redis counters
    agent_auth: str = "cert"  # cert | token | both (stockade.brain.nodeauth)
    remove_startup_taints: bool = True  # stockade.brain.taints
    agent_audience: str = tokenauth.DEFAULT_AUDIENCE
    agent_service_accounts: tuple[str, ...] = (tokenauth.DEFAULT_SERVICE_ACCOUNT,)
    # Only the leader writes Events (stockade.brain.leader); None: this brain is the only one
    # (tests, a single replica), always the writer. `stockade brain` elects by default.
    election: ElectionConfig | None = None
    events: bool = True  # Kubernetes Events on refused and unrealized objects (stockade.brain.events)
    cnp_status: bool = True  # ClusterNetworkPolicies' status.conditions (stockade.brain.cnp_status)
    cnp_status_interval: float = 1.0  # seconds: changes within one are one write


class Brain:
    def __init__(self, config: BrainConfig) -> None:
        self.config = config
        self.engine = Engine(beta_default_deny=config.beta_default_deny)
        # Every change to the engine runs on this worker; reads wait for it (see worker.py).
        self.worker: EngineWorker[Engine] = EngineWorker(self.engine)
        self.fanout = FanOut(self._model_of, history=config.history)
        self.engine_errors = 0  # engine failures (bugs) since start: logged, object skipped
        self._rejections: dict[tuple[str, str, str], Rejection] = {}  # as last reported
        self.on_rejected: Callable[[Rejection], None] | None = None  # for Events (issue 13)
        self.elector: LeaderElector | None = None  # with config.election, from start()
        identity = config.election.identity if config.election else default_identity()
        self.recorder = EventRecorder(self.is_leader, identity)
        self.object_events = ObjectEvents(self.recorder, self._objects_get)
        # The leader writes ClusterNetworkPolicies' status.conditions (Accepted, Realized).
        self.cnp_status = CnpStatusWriter(
            self.is_leader,
            self._cnp_states,
            lambda name, nodes: self.fanout.policy_realization("", name, nodes),
            interval=config.cnp_status_interval,
        )
        if config.events:
            self.on_rejected = self.object_events.rejected
        self.registry = CollectorRegistry()
        brain_metrics.register(self.registry, self)  # stockade_brain_*, sync, process
        self.registry.register(servers.CertificateExpiry(config))  # renewal and expiry (certs)
        self.registry.register(IdentityCollector(self))  # agents' tokens, startup taints (tokens)
        self.registry.register(LeaderCollector(self.is_leader))  # stockade_brain_leader
        self.registry.register(EventsCollector(self.recorder))  # stockade_brain_events_*
        self.registry.register(CnpStatusCollector(self.cnp_status))  # stockade_brain_cnp_status_*
        self.ready = False
        self.seen_rv = 0  # highest resourceVersion applied to the engine, any kind
        # per kind: each kind's watch delivers in order, so seeing version N of a kind means
        # every earlier write of that kind is in the engine (a global maximum would not say that)
        self.seen_rv_kind: dict[str, int] = {}
        self._rv_changed = asyncio.Event()
        self._pending: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history = IpHistory()
        self.feed = DropFeed()
        self.aggregator: Aggregator | None = None
        self.peers: PeerSync | None = None  # with Redis: the other brains' agents (fanout/peers.py)
        self._servers: list[grpc.aio.Server] = []
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.sources: Sources | None = None
        self._client: Any = None  # the API client (kubernetes_asyncio ApiClient), closed on stop
        self.health = HealthServicer()
        self.http_port = 0
        self.grpc_port = 0
        self.admin_port = 0
        self._not_realized: dict[tuple[str, str], NotRealized] = {}  # as last logged
        self.admin_mtls_port = 0
        self._auth: Authorizer | None = None
        self.node_auth: NodeAuth | None = None  # with --agent-auth token|both
        self.taints: StartupTaints | None = None  # removes nodes' startup taint (taints.py)

    # ------------------------------------------------------------------ events

    def objects(self) -> list[dict[str, Any]]:
        return list(self._objects.values())

    def _objects_get(self, key: tuple[str, str, str]) -> dict[str, Any] | None:
        return self._objects.get(key)

    def is_leader(self) -> bool:
        """Whether this brain writes to the API now (always, without an election)."""
        return self.elector.is_leader if self.elector is not None else self.config.election is None

    def _on_leading(self) -> None:
        """A new leader reports what is refused now: the old one may not have (or be gone)."""
        if not self.config.events:
            return
        for r in self._rejections.values():
            self.object_events.rejected(r)
        for nr in self._not_realized.values():
            self.object_events.not_realized(nr)

    async def _cnp_states(self) -> list[PolicyState]:
        await self.worker.idle()  # then read with no await: between changes
        return states(self.engine, self._objects_get)

    def _model_of(self, node: str) -> NodeModel:
        """A node's model for a feed that starts: called only between changes (connect and
        /v1/realized wait for the worker to be idle first)."""
        if self.worker.busy:
            log.error("bug: node %s's model read while the engine is changing", node)
        return self.engine.model(node)

    async def on_event(self, ev: SourceEvent) -> None:
        """The sources' consumer. Nothing from the API raises out of here: a bad object is
        refused by the engine's validation and reported; a bug is logged and the object skipped.
        Only a failed cold start propagates: a brain that cannot compute must exit (and be
        restarted), never sit with /healthz ok and its sync port closed."""
        if ev.type == "synced":
            await self._cold_start()
            return
        try:
            await self._on_event(ev)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not stop enforcement of everything else
            self.engine_errors += 1
            log.exception(
                "engine failed on %s %s %s/%s; the object is skipped", ev.type, ev.kind, ev.namespace, ev.name
            )

    async def _on_event(self, ev: SourceEvent) -> None:
        key = ev.key
        if ev.kind == "Node" and self.taints is not None:
            try:  # the startup taint (taints.py); never in the way of the engine
                self.taints.observe(ev.kind, ev.type == "delete", ev.obj)
            except Exception:
                log.exception("startup taint: cannot read node %s", ev.name)
        before = self._objects.get(key)
        if ev.type == "upsert":
            self._objects[key] = ev.obj
        else:
            self._objects.pop(key, None)
        if ev.kind == "Pod":
            # The first list holds its IPs since before this brain: events agents buffered
            # while no brain ran are older than it and must resolve too (IpHistory).
            at = time.time() if self.ready else 0.0
            self.history.observe_pod(ev.obj, at=at, deleted=ev.type == "delete")
        if not self.ready:
            self._note_rv(ev.kind, ev.obj)
            return  # computed all at once when every kind is listed
        if ev.kind == "ClusterNetworkPolicy" and ev.type == "upsert" and _same_but_version(before, ev.obj):
            self._note_rv(ev.kind, ev.obj)  # its status written (cnp_status.py): the engine reads none of it
            return
        seen = time.monotonic()  # for the realization delay (API change -> applied on the node)
        obj, kind, ns, name = ev.obj, ev.kind, ev.namespace or None, ev.name
        # Realization follows the policy's own changes: a NetworkPolicy's by (namespace, name), a
        # ClusterNetworkPolicy's by ("", name) (cluster-scoped: no NetworkPolicy has that key).
        policy = (ev.namespace, ev.name) if ev.kind in ("NetworkPolicy", "ClusterNetworkPolicy") else None

        def apply(engine: Engine) -> Deltas:  # on the worker thread
            return engine.upsert(obj) if ev.type == "upsert" else engine.delete(kind, ns, name)

        def publish(deltas: Deltas) -> None:  # on the loop, before any reader sees the engine
            self.fanout.on_deltas(deltas, policy=policy, seen=seen)
            if policy is not None and not self._holds(ev.kind, *policy):
                # Deleted (or refused): nothing asks its realization any more, and a policy made
                # again under its name is tracked from its own changes.
                self.fanout.forget_policy(*policy)
            self._report_rejections()
            self._report_not_realized()
            self.cnp_status.engine_changed()

        try:
            await self.worker.change(apply, then=publish)
        finally:
            self._note_rv(ev.kind, ev.obj)  # also when the engine failed: waiters must not hang

    def _holds(self, kind: str, namespace: str, name: str) -> bool:
        if kind == "ClusterNetworkPolicy":
            return self.engine.cluster_policy(name) is not None
        return self.engine.policy(namespace, name) is not None

    def _report_rejections(self) -> None:
        """Log each object as it is refused (and when it is accepted again), count them by kind.
        The hook for the objects' Events (issue 13): ``on_rejected``."""
        now = {(r.object, r.field, r.message): r for r in self.engine.rejections()}
        for k in sorted(now.keys() - self._rejections.keys()):
            log.warning("rejected (not enforced): %s", now[k])
            if self.on_rejected is not None:
                self.on_rejected(now[k])
        for obj in sorted({k[0] for k in self._rejections} - {k[0] for k in now}):
            log.info("%s: accepted again (or gone)", obj)
        self._rejections = now

    def _report_not_realized(self) -> None:
        """Log each (policy, node) as it is left out of a node's model, and when it is back.
        The hook for the policy's Events (issue 13): ``added`` and ``gone`` below."""
        now = {(nr.policy, nr.node): nr for nr in self.engine.not_realized()}
        before = self._not_realized
        added = [now[k] for k in sorted(now.keys() - before.keys())]
        gone = sorted(before.keys() - now.keys())
        for nr in added:
            log.warning("%s", nr)
            if self.config.events:
                self.object_events.not_realized(nr)
        for policy, node in gone:
            log.info("NetworkPolicy %s: realized again on node %s", policy, node)
        self._not_realized = now

    def _note_rv(self, kind: str, obj: Mapping[str, Any]) -> None:
        try:
            rv = int((obj.get("metadata") or {}).get("resourceVersion") or 0)
        except (TypeError, ValueError, AttributeError):
            return  # a real API server's versions are opaque; waiting on them is only for the lab
        if rv > self.seen_rv_kind.get(kind, 0):
            self.seen_rv_kind[kind] = rv
        if rv > self.seen_rv:
            self.seen_rv = rv
        self._rv_changed.set()

    def _seen(self, wanted: Mapping[str, int]) -> bool:
        return all(self.seen_rv_kind.get(k, 0) >= v for k, v in wanted.items())

    async def _cold_start(self) -> None:
        """Compute every node model at once from the first full list, on the worker thread."""
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for (kind, _, _), obj in self._objects.items():
            by_kind.setdefault(kind, []).append(obj)
        t0 = time.perf_counter()
        log.info("computing node models from %d objects", len(self._objects))
        try:
            self.engine_errors += await self.worker.change(lambda engine: cold_start(engine, by_kind))
        finally:
            gc.freeze()  # the engine's and the objects' long-lived state: never traversed again
            gc.enable()
        log.info(
            "computed %d node models from %d pods and %d policies in %.2f s",
            len(self.engine.nodes()),
            len(by_kind.get("Pod", [])),
            len(by_kind.get("NetworkPolicy", [])),
            time.perf_counter() - t0,
        )
        try:
            self._report_rejections()
            self._report_not_realized()
        except Exception:  # reporting must not keep the brain from serving
            log.exception("reporting the cold start's rejections failed")
        for (kind, _, _), obj in self._objects.items():
            self._note_rv(kind, obj)
        self.ready = True
        self._rv_changed.set()

    # ------------------------------------------------------------------ servers

    def _server_credentials(self, require_client_auth: bool) -> grpc.ServerCredentials | None:
        return servers.server_credentials(self.config, require_client_auth)

    def _node_of_peer(self, context: grpc.aio.ServicerContext) -> str | None:
        return None if self.config.insecure else servers.node_of_peer(context)

    def _node_auth(self) -> NodeAuth | None:
        """Token-based agent identity (--agent-auth token|both); None: client certificates only."""
        c = self.config
        if c.insecure or c.agent_auth == "cert":
            return None
        tokens = tokenauth.TokenAuthenticator(
            self._client, audience=c.agent_audience, service_accounts=c.agent_service_accounts
        )
        self.node_auth = NodeAuth(c.agent_auth, tokens)
        return self.node_auth

    def _authorizer(self) -> Authorizer:
        if self._auth is None:
            self._auth = servers.authorizer(self.config.admin_tokens_file)
        return self._auth

    async def _start_grpc(self) -> None:
        c = self.config
        # Sync and drops: agents only, mutual TLS.
        node_auth = self._node_auth()
        guard = node_auth.guard() if node_auth is not None else servers.node_guard(c.insecure)
        server = grpc.aio.server(options=server_options(), interceptors=[guard])
        # A feed starts from the engine's model: connect only between engine changes.
        sync = SyncService(self.fanout, allow_insecure=c.insecure, before_connect=self.worker.idle)
        server.add_generic_rpc_handlers((sync.handler(),))
        if self.aggregator is not None:
            drops_pb2_grpc.add_DropServiceServicer_to_server(
                DropServicer(self.aggregator, node_of_peer=None if c.insecure else self._node_of_peer), server
            )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [
            sync_pb2.DESCRIPTOR.services_by_name["Sync"].full_name,
            drops_pb2.DESCRIPTOR.services_by_name["DropService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(names, server)
        creds = self._server_credentials(require_client_auth=node_auth is None or node_auth.wants_client_cert)
        self.grpc_port = server.add_secure_port(c.listen, creds) if creds else server.add_insecure_port(c.listen)
        await server.start()
        self._servers.append(server)
        # Admin: operators, TLS with tokens or client certificates.
        auth = self._authorizer()
        if not auth.tokens:
            log.warning("no --admin-tokens-file: the admin API accepts only operator client certificates")
        admin = grpc.aio.server(options=servers.ADMIN_OPTIONS, interceptors=[servers.admin_guard(auth)])
        svc = AdminService(
            self.engine,
            auth,
            objects=self.objects,
            status=self.fanout,
            drops=DropsView(self.aggregator) if self.aggregator is not None else None,  # memory while Redis is away
            feed=self.feed,
            resync=self._resync,
        )
        # The calls that read the engine do so under a read lease: never during a change.
        gated = GatedServicer(svc, self.worker, ENGINE_READERS)
        self.admin_service = svc  # its limits, for tests
        admin_pb2_grpc.add_AdminServicer_to_server(gated, admin)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, admin)
        reflection.enable_server_reflection(
            [
                admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            admin,
        )
        self.admin_port, self.admin_mtls_port = servers.add_admin_ports(admin, c, c.admin_listen, c.admin_mtls_listen)
        await admin.start()
        self._servers.append(admin)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    def _resync(self, node: str) -> bool:
        session = self.fanout.sessions.get(node)
        if session is None:
            return False
        session.resnapshot(0.0)  # a full snapshot now (Session has no request_snapshot)
        return True

    # ------------------------------------------------------------------ HTTP

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = []
        if not self.ready:
            problems.append("waiting for the first full list of namespaces, pods, policies and nodes")
        if self.aggregator is not None and not self.aggregator.ready:
            st = self.aggregator.status()
            problems.append(f"Redis unreachable: counting drops in memory ({st['buffered_events']} buffered)")
        if problems and not self.ready:
            return web.Response(status=503, text="\n".join(problems) + "\n")
        return web.Response(text="ready\n" + "".join(f"degraded: {p}\n" for p in problems))

    async def _metrics(self, request: web.Request) -> web.Response:
        await self.worker.idle()  # the collectors read the engine: between changes only
        return web.Response(body=generate_latest(self.registry), content_type="text/plain", charset="utf-8")

    async def _realized(self, request: web.Request) -> web.Response:
        """Wait until the brain has seen the given writes and every node has applied what it owes
        and is ready (a node where pod traffic bypasses the rules enforces nothing for certain).

        ``?Pod=12&NetworkPolicy=15``: the resourceVersion of the last write of each kind (exact);
        ``?resourceVersion=N``: any event at or past N (coarse). ``timeout`` in seconds.
        """
        try:
            rv = int(request.query.get("resourceVersion", "0"))
            timeout = min(float(request.query.get("timeout", "30")), 300.0)
            wanted = {
                k: int(v)
                for k, v in request.query.items()
                if k in ("Namespace", "Pod", "NetworkPolicy", "Node", "Service", "ClusterNetworkPolicy")
            }
        except ValueError:
            return web.json_response({"error": "resourceVersion, kinds and timeout must be numbers"}, status=400)
        deadline = time.monotonic() + timeout
        while not (self.ready and self.seen_rv >= rv and self._seen(wanted)):
            self._rv_changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return web.json_response(
                    {
                        "realized": False,
                        "resourceVersion": self.seen_rv,
                        "reason": "the brain has not seen that version yet",
                    },
                    status=504,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rv_changed.wait(), left)
        await self.worker.idle()  # then read with no await before wait_synced has its feeds
        nodes = self.engine.nodes()
        ok = await self.fanout.wait_synced(nodes, max(0.0, deadline - time.monotonic()), ready=True)
        status = {n: self.fanout.node_view(n) for n in nodes}  # with peers: every brain's agents
        not_ready = {n: r for n, st in status.items() if (r := st.not_ready_reason) is not None}
        pending = [n for n in nodes if status[n].applied_generation < self.fanout.feed(n).generation or n in not_ready]
        body: dict[str, Any] = {"realized": ok and not pending, "resourceVersion": self.seen_rv, "pending": pending}
        if not_ready:
            body["not_ready"] = not_ready
            body["reason"] = "; ".join(f"node {n} is not ready: {r}" for n, r in sorted(not_ready.items()))
        return web.json_response(body, status=200 if body["realized"] else 504)

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/realized", servers.bearer_required(self._authorizer(), self._realized))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, _, port = self.config.http.rpartition(":")
        site = web.TCPSite(self._runner, host or "0.0.0.0", int(port))
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        await self._start_http()
        # Blocked connections are counted for Prometheus with or without Redis (NoStore).
        redis = bool(self.config.redis_url)

        def busy() -> bool:
            return self.worker.busy

        metrics = DropMetrics(self.registry, redis=redis, declared=EnginePorts(self.engine, busy))
        store = RedisStore(connect(self.config.redis_url)) if self.config.redis_url else NoStore()
        resolver = EngineResolver(self.engine, self.history, busy=busy)
        quota = self.config.drops_quota if redis else NO_QUOTA
        self.aggregator = Aggregator(store, resolver, metrics, quota=quota)
        # follow streams get every brain's records, shared over Redis (drops/peers.py)
        shared = SharedFeed.of(self.feed, self.aggregator)
        self.aggregator.listener = FeedListener(shared, self.aggregator.resolver)
        self._tasks.append(asyncio.create_task(shared.run(), name="drops-follow-peers"))
        self._tasks.append(asyncio.create_task(self.aggregator.run(), name="drops-flush"))
        client = self._client = await api_client(self.config.kubeconfig)
        if self.config.admin_kube_auth:
            self._authorizer().kube = KubeAuthorizer(client)
        self.recorder.attach(client)
        self._tasks.append(asyncio.create_task(self.recorder.run(), name="events"))
        if self.config.cnp_status:
            self.cnp_status.attach(client)
            self._tasks.append(asyncio.create_task(self._cnp_status_after_start(), name="cnp-status"))
        if self.config.election is not None:
            self.elector = LeaderElector(client, self.config.election, on_started=self._on_leading)
            self._tasks.append(asyncio.create_task(self.elector.run(), name="leader-election"))
        if self.config.remove_startup_taints:
            # The leader removes every node's taint, going by what the peers say of the nodes they
            # serve (Redis); without that shared view each brain can only vouch for its own
            # agents, so each may patch those (the patch is conditional on the resourceVersion).
            self.taints = StartupTaints(
                client, self.fanout.node_view, may_write=lambda: self.fanout.peers is None or self.is_leader()
            )
        # Only what the engine and the tools read of each object is held (sources/slim.py).
        self.sources = Sources(client, self.on_event, slim=brain_slimmer())
        # The first list and the cold start allocate millions of long-lived objects: automatic
        # full collections would traverse them again and again, stopping both threads (the loop
        # too) for hundreds of ms each. Off until the cold start is done, then those objects are
        # frozen out of every later collection (see _cold_start).
        gc.disable()
        self.sources.start()
        log.info("listing namespaces, pods, network policies and nodes")
        failed = asyncio.create_task(self.sources.wait())
        try:
            while not self.ready:
                if failed.done():
                    failed.result()  # the sources ended for good: say why
                    raise RuntimeError("the sources ended before the first full list")
                await asyncio.sleep(0.05)
        finally:
            failed.cancel()
        if self.config.redis_url:  # before agents connect: their status is shared from the first
            self.peers = PeerSync(
                connect(self.config.redis_url, socket_timeout=2.0, socket_connect_timeout=1.0),
                self.fanout,
                before_feed=self.worker.idle,
                brain=brain_id(self.fanout.epoch, self.config.election.identity if self.config.election else ""),
            )
            self.peers.start()
        await self._start_grpc()
        if self.taints is not None:
            self._tasks.append(asyncio.create_task(self.taints.run(), name="startup-taints"))
        log.info(
            "serving: sync+drops on %s (port %d), admin on %s (port %d), HTTP on %s (port %d)",
            self.config.listen,
            self.grpc_port,
            self.config.admin_listen,
            self.admin_port,
            self.config.http,
            self.http_port,
        )

    async def _cnp_status_after_start(self) -> None:
        """The status writer, once the cold start has computed every policy."""
        while not self.ready:
            await asyncio.sleep(0.1)
        await self.cnp_status.run()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop everything, within ``grace`` seconds whatever hangs (an API server, Redis, a
        compile on the worker thread: it is a daemon and is left to the process exit)."""
        try:
            await asyncio.wait_for(self._stop(), grace)
        except TimeoutError:
            log.warning("shutdown took longer than %.0f s; leaving the rest to the process exit", grace)
        finally:
            self.worker.close()

    async def _stop(self) -> None:
        gc.enable()  # if stopped before the cold start finished
        # The agents first: every sync stream ends now with UNAVAILABLE, so each agent moves to
        # another brain at once instead of waiting out the servers' grace.
        ended = self.fanout.close_all("UNAVAILABLE", SHUTDOWN_MESSAGE)
        if ended:
            log.info("ended %d agents' sync streams: %s", ended, SHUTDOWN_MESSAGE)
        await self._streams_closed(STREAMS_GRACE)
        if self.sources is not None:
            await self.sources.stop()
        for server in self._servers:
            await server.stop(1.0)
        if self.peers is not None:
            await self.peers.close()  # this brain's nodes leave its peers' view now, not at the TTL
        if self.aggregator is not None:
            await self.aggregator.close()
        if self.elector is not None:
            await self.elector.release()  # the other brain takes over at its next try
        for t in self._tasks:
            t.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _streams_closed(self, timeout: float) -> None:
        """Until every ended stream has sent its status (its session is gone), or ``timeout``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.fanout.sessions and loop.time() < end:
            await asyncio.sleep(0.01)

    async def run_forever(self) -> None:
        """Serve until SIGTERM/SIGINT (honoured at any time: while listing, while compiling) or
        until the sources fail for good."""
        # The engine thread holds the GIL while it compiles; the loop gets it back at the next
        # switch, and answering one request takes several. 1 ms instead of Python's 5 ms keeps
        # /healthz and the sync streams within their budget during a long compile.
        sys.setswitchinterval(SWITCH_INTERVAL)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stopper = asyncio.create_task(stop.wait())
        starting = asyncio.create_task(self.start())
        await asyncio.wait([starting, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("stopping before the brain finished starting")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            await self.stop()
            return
        if starting.exception() is not None:
            await self.stop()
            starting.result()
        waiter = asyncio.create_task(self.sources.wait()) if self.sources else None
        done, _ = await asyncio.wait([t for t in (waiter, stopper) if t], return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
        await self.stop()
        for t in done:
            if t is waiter:
                t.result()


def _same_but_version(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
    """Whether two states of an object differ in resourceVersion only (what is held of them)."""
    if before is None:
        return False
    return bool(_unversioned(before) == _unversioned(after))


def _unversioned(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    meta = {k: v for k, v in meta.items() if k != "resourceVersion"} if isinstance(meta, Mapping) else meta
    return {**obj, "metadata": meta}
