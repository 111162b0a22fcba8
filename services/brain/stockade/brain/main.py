"""The brain process: sources → engine → fan-out, with drops, admin and health around them.

Start-up order matters for safety: the brain lists every kind first and computes all node
models at once, and only then opens the sync port, so an agent can never receive a model
computed from half a cluster (which would open or close connections wrongly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from stockade.brain.admin.auth import Authorizer, load_tokens
from stockade.brain.admin.service import AdminService, DropFeed
from stockade.brain.drops import Aggregator, DropMetrics, EngineResolver, FeedListener, IpHistory, RedisStore, connect
from stockade.brain.drops.servicer import DropServicer
from stockade.brain.engine import Engine
from stockade.brain.fanout import FanOut
from stockade.brain.sources import SourceEvent, Sources, api_client
from stockade.brain.sync_service import SyncService, server_options
from stockade.tls import ServerTLS, peer_names
from stockade.v1 import admin_pb2, admin_pb2_grpc, drops_pb2, drops_pb2_grpc, sync_pb2

log = logging.getLogger("stockade.brain")


@dataclass
class BrainConfig:
    kubeconfig: str | None = None
    listen: str = "0.0.0.0:7443"  # sync + drops: mTLS, agents only
    admin_listen: str = "0.0.0.0:7444"  # admin API: TLS, tokens or client certificates
    http: str = "0.0.0.0:9090"  # /healthz /readyz /metrics /v1/realized
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    insecure: bool = False  # tests only: plain-text gRPC, node names trusted
    redis_url: str | None = None
    admin_tokens_file: str | None = None
    history: int = 256
    beta_default_deny: bool = True


class _FanoutCollector:
    """Per-node sync metrics read from the fan-out at scrape time (names the alert rules use)."""

    def __init__(self, brain: Brain) -> None:
        self.brain = brain

    def collect(self) -> Iterable[Any]:
        connected = GaugeMetricFamily(
            "stockade_agent_connected", "1 while the node's agent is connected", labels=["node"]
        )
        lag = GaugeMetricFamily(
            "stockade_node_generation_lag", "generations the node's agent has not applied yet", labels=["node"]
        )
        errors = CounterMetricFamily("stockade_apply_errors", "failed applies the agent reported", labels=["node"])
        ready = GaugeMetricFamily(
            "stockade_node_ready", "1 while the node enforces what it applied, nothing bypassing it", labels=["node"]
        )
        for node in self.brain.engine.nodes():
            st = self.brain.fanout.node_status(node)
            connected.add_metric([node], 1.0 if st.connected else 0.0)
            ready.add_metric([node], 1.0 if st.ready else 0.0)
            lag.add_metric([node], float(max(0, st.desired_generation - st.applied_generation)))
            errors.add_metric([node], float(st.failures))
        yield connected
        yield ready
        yield lag
        yield errors
        yield GaugeMetricFamily(
            "stockade_brain_ready", "1 once the first full compute is done", value=float(self.brain.ready)
        )
        yield GaugeMetricFamily(
            "stockade_policies_rejected",
            "policies not enforced because they are malformed",
            value=float(sum(1 for r in self.brain.engine.rejections() if r.object.startswith("NetworkPolicy"))),
        )


class Brain:
    def __init__(self, config: BrainConfig) -> None:
        self.config = config
        self.engine = Engine(beta_default_deny=config.beta_default_deny)
        self.fanout = FanOut(self.engine.model, history=config.history)
        self.registry = CollectorRegistry()
        self.registry.register(_FanoutCollector(self))
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
        self._servers: list[grpc.aio.Server] = []
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.sources: Sources | None = None
        self.health = HealthServicer()
        self.http_port = 0
        self.grpc_port = 0
        self.admin_port = 0

    # ------------------------------------------------------------------ events

    def objects(self) -> list[dict[str, Any]]:
        return list(self._objects.values())

    async def on_event(self, ev: SourceEvent) -> None:
        if ev.type == "synced":
            self._cold_start()
            return
        key = ev.key
        if ev.type == "upsert":
            self._objects[key] = ev.obj
        else:
            self._objects.pop(key, None)
        if ev.kind == "Pod":
            self.history.observe_pod(ev.obj, at=time.time(), deleted=ev.type == "delete")
        self._note_rv(ev.kind, ev.obj)
        if not self.ready:
            return  # computed all at once when every kind is listed
        try:
            if ev.type == "upsert":
                deltas = self.engine.upsert(ev.obj)
            else:
                deltas = self.engine.delete(ev.kind, ev.namespace or None, ev.name)
        except Exception:  # a bug must not stop enforcement of everything else
            log.exception("engine failed on %s %s/%s; the object is skipped", ev.kind, ev.namespace, ev.name)
            return
        policy = (ev.namespace, ev.name) if ev.kind == "NetworkPolicy" else None
        self.fanout.on_deltas(deltas, policy=policy)
        if ev.kind == "NetworkPolicy":
            for r in self.engine.rejections():
                if r.object == f"NetworkPolicy {ev.namespace}/{ev.name}":
                    log.warning("rejected (not enforced): %s", r)

    def _note_rv(self, kind: str, obj: Mapping[str, Any]) -> None:
        try:
            rv = int((obj.get("metadata") or {}).get("resourceVersion") or 0)
        except ValueError:
            return  # a real API server's versions are opaque; waiting on them is only for the lab
        if rv > self.seen_rv_kind.get(kind, 0):
            self.seen_rv_kind[kind] = rv
        if rv > self.seen_rv:
            self.seen_rv = rv
        self._rv_changed.set()

    def _seen(self, wanted: Mapping[str, int]) -> bool:
        return all(self.seen_rv_kind.get(k, 0) >= v for k, v in wanted.items())

    def _cold_start(self) -> None:
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for (kind, _, _), obj in self._objects.items():
            by_kind.setdefault(kind, []).append(obj)
        t0 = time.perf_counter()
        self.engine.load(
            by_kind.get("Namespace", []),
            by_kind.get("Pod", []),
            by_kind.get("NetworkPolicy", []),
            by_kind.get("Node", []),
            services=by_kind.get("Service", []),  # for lint only
        )
        log.info(
            "computed %d node models from %d pods and %d policies in %.2f s",
            len(self.engine.nodes()),
            len(by_kind.get("Pod", [])),
            len(by_kind.get("NetworkPolicy", [])),
            time.perf_counter() - t0,
        )
        for r in self.engine.rejections():
            log.warning("rejected (not enforced): %s", r)
        self.ready = True
        self._rv_changed.set()

    # ------------------------------------------------------------------ servers

    def _server_credentials(self, require_client_auth: bool) -> grpc.ServerCredentials | None:
        c = self.config
        if c.insecure:
            return None
        if not (c.tls_cert and c.tls_key and c.tls_ca):
            raise SystemExit(
                "stockade brain: --tls-cert, --tls-key and --tls-ca are required (create them with "
                "`stockade certs init`); --insecure is for tests only"
            )
        tls = ServerTLS.from_files(Path(c.tls_cert), Path(c.tls_key), Path(c.tls_ca))
        if require_client_auth:
            return tls.credentials()
        return grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=False)

    def _node_of_peer(self, context: grpc.aio.ServicerContext) -> str | None:
        if self.config.insecure:
            return None
        names = peer_names(context.auth_context())
        return next(iter(sorted(names)), None) if names else None

    async def _start_grpc(self) -> None:
        c = self.config
        # Sync and drops: agents only, mutual TLS.
        server = grpc.aio.server(options=server_options())
        sync = SyncService(self.fanout, allow_insecure=c.insecure)
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
        creds = self._server_credentials(require_client_auth=True)
        self.grpc_port = server.add_secure_port(c.listen, creds) if creds else server.add_insecure_port(c.listen)
        await server.start()
        self._servers.append(server)
        # Admin: operators, TLS with tokens or client certificates.
        tokens = load_tokens(c.admin_tokens_file) if c.admin_tokens_file else {}
        if not tokens:
            log.warning(
                "no --admin-tokens-file: the admin API accepts only stockade-admin/stockade-reader client certificates"
            )
        admin = grpc.aio.server()
        svc = AdminService(
            self.engine,
            Authorizer(tokens),
            objects=self.objects,
            status=self.fanout,
            drops=self.aggregator.store if self.aggregator is not None else None,
            feed=self.feed,
            resync=self._resync,
        )
        admin_pb2_grpc.add_AdminServicer_to_server(svc, admin)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, admin)
        reflection.enable_server_reflection(
            [
                admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            admin,
        )
        acreds = self._server_credentials(require_client_auth=False)
        self.admin_port = (
            admin.add_secure_port(c.admin_listen, acreds) if acreds else admin.add_insecure_port(c.admin_listen)
        )
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
                if k in ("Namespace", "Pod", "NetworkPolicy", "Node", "Service")
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
        nodes = self.engine.nodes()
        ok = await self.fanout.wait_synced(nodes, max(0.0, deadline - time.monotonic()), ready=True)
        status = {n: self.fanout.node_status(n) for n in nodes}
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
        app.router.add_get("/v1/realized", self._realized)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, _, port = self.config.http.rpartition(":")
        site = web.TCPSite(self._runner, host or "0.0.0.0", int(port))
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        await self._start_http()
        if self.config.redis_url:
            metrics = DropMetrics(self.registry)
            store = RedisStore(connect(self.config.redis_url))
            self.aggregator = Aggregator(store, EngineResolver(self.engine, self.history), metrics)
            self.aggregator.listener = FeedListener(self.feed, self.aggregator.resolver)
            self._tasks.append(asyncio.create_task(self.aggregator.run(), name="drops-flush"))
        client = await api_client(self.config.kubeconfig)
        self.sources = Sources(client, self.on_event)
        self.sources.start()
        log.info("listing namespaces, pods, network policies and nodes")
        while not self.ready:
            await asyncio.sleep(0.05)
        await self._start_grpc()
        log.info(
            "serving: sync+drops on %s (port %d), admin on %s (port %d), HTTP on %s (port %d)",
            self.config.listen,
            self.grpc_port,
            self.config.admin_listen,
            self.admin_port,
            self.config.http,
            self.http_port,
        )

    async def stop(self) -> None:
        if self.sources is not None:
            await self.sources.stop()
        for server in self._servers:
            await server.stop(1.0)
        if self.aggregator is not None:
            await self.aggregator.close()
        for t in self._tasks:
            t.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def run_forever(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        waiter = asyncio.create_task(self.sources.wait()) if self.sources else None
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([t for t in (waiter, stopper) if t], return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
        await self.stop()
        for t in done:
            if t is waiter:
                t.result()
