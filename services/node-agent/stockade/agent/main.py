"""The node agent, composed: sync client → metered dataplane; NFLOG → metrics and drop reports;
periodic verify/repair and kernel counters; the node's preflight; HTTP health and metrics.

Ready means enforcing: the brain's rules are in the kernel and nothing lets pod traffic bypass
them (`stockade.agent.preflight`, plus the backend's own needs). The agent fixes what it may
(``fix_sysctls``), re-checks periodically and on every snapshot, refuses a generation it cannot
enforce, and says why it is not ready on ``/readyz``, in its metrics and to the brain.

The agent runs inside its node's network namespace (the lab starts it with ``ip netns exec``),
so everything acts on the current namespace unless ``netns`` names another one. Stopping it
(SIGTERM, SIGINT) leaves the rules in the kernel: fail static, and a restarted agent changes
nothing until it has the brain's current model, and then only what differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from stockade.agent.backends import make_backend
from stockade.agent.backends.base import Dataplane, families_of, node_needs
from stockade.agent.health import HealthServer
from stockade.agent.metered import MeteredDataplane, conntrack_end_flows
from stockade.agent.metrics import AgentMetrics
from stockade.agent.nflog import NflogReader
from stockade.agent.preflight import NodeCheck, apply_fix, model_needs, read_facts
from stockade.agent.reporter import CHANNEL_OPTIONS, Reporter
from stockade.agent.reporter.client import RenewingChannel
from stockade.agent.supervise import counters_loop, preflight_loop, verify_loop
from stockade.agent.sync import AgentClient, AgentStatus, Applier, channel_options
from stockade.agent.sync.brains import open_channel
from stockade.agent.sync.certexpiry import CertificateExpiry
from stockade.agent.sync.client import KEEPALIVE_TIME, KEEPALIVE_TIMEOUT
from stockade.agent.tamper import tamper_watch_loop
from stockade.dial import Candidate
from stockade.model import NodeModel
from stockade.model.events import BlockedEvent
from stockade.tls.reload import ClientTLSSource

log = logging.getLogger(__name__)

NFLOG_SHED_REASON = "agent_nflog_overrun"


@dataclass(frozen=True)
class AgentConfig:
    node: str
    brain: str  # HOST:PORT[,HOST:PORT...]: every brain; a name may resolve to several
    tls: ClientTLSSource | None  # None only with ``insecure`` (tests); files are re-read when renewed
    insecure: bool = False
    backend: str = "auto"  # nftables, iptables or auto
    nflog_group: int = 100
    http: str = "0.0.0.0:9091"
    verify_interval: float = 30.0
    counters_interval: float = 5.0
    netns: str | None = None  # None: the network namespace we run in
    nflog: bool = True
    conntrack: bool = True
    fix_sysctls: bool = True  # set what the node needs (bridge sysctls, br_netfilter) where it may
    preflight_interval: float = 10.0
    keepalive_time: float = KEEPALIVE_TIME  # seconds between pings on the sync stream
    keepalive_timeout: float = KEEPALIVE_TIMEOUT  # seconds an unanswered ping waits: then the next brain


class FollowingChannel(RenewingChannel):
    """The drop reports' channel: to the brain serving the sync stream (any brain takes them; the
    brains aggregate in Redis), with the same renewing credentials; re-opened when the node moves."""

    def __init__(self, client: AgentClient, tls: ClientTLSSource | None, options: Sequence[tuple[str, Any]]) -> None:
        self.client = client
        self.brain: Candidate = client.serving or client.brains.first
        super().__init__(self.brain.address, tls, options)

    def _open(self) -> grpc.aio.Channel:
        self.brain = self.client.serving or self.brain
        self.address = self.brain.address
        if self.tls is None:
            return open_channel(self.brain, None, self.options)
        self.tls.refresh()
        self.version = self.tls.version
        return open_channel(self.brain, self.tls.current(), self.options)

    async def current(self) -> grpc.aio.Channel:
        serving = self.client.serving
        if serving is not None and serving != self.brain:
            old, self.channel = self.channel, self._open()
            log.info("drop reports: following the node to brain %s", self.brain)
            await old.close(None)
            return self.channel
        return await super().current()


class NodeAgent:
    """One node's agent. Build it, then ``await run(stop)``; it returns the exit code."""

    def __init__(
        self, config: AgentConfig, dataplane: Dataplane | None = None, node_check: NodeCheck | None = None
    ) -> None:
        if config.tls is None and not config.insecure:
            raise ValueError("the agent needs mTLS credentials to reach the brain (plain text only with insecure)")
        self.config = config
        self.metrics = AgentMetrics()
        inner = dataplane if dataplane is not None else make_backend(config.backend, config.netns, config.nflog_group)
        end_flows = conntrack_end_flows(config.netns) if config.conntrack else None
        self.dataplane = MeteredDataplane(inner, self.metrics, end_flows)
        netns = config.netns
        self.check = node_check or NodeCheck(
            lambda: read_facts(netns),
            lambda facts: node_needs(inner, facts),
            (lambda fix: apply_fix(fix, netns)) if config.fix_sysctls else None,
        )
        self._families = families_of(inner)
        self._checking = asyncio.Lock()
        self.applier = Applier(config.node, self.dataplane, on_applied=self._on_applied, gate=self._gate)
        options = channel_options(int(config.keepalive_time * 1000), int(config.keepalive_timeout * 1000))
        self.client = AgentClient(
            self.applier, config.brain, config.tls, allow_insecure=config.insecure, options=options
        )
        self.client.readiness = self.readiness
        self.metrics.registry.register(CertificateExpiry(self.client))
        self.metrics.watch_sync(self.client.status)  # stockade_agent_brain_connected, ...
        self.status: AgentStatus = self.client.status
        self.http = HealthServer(config.http, self.not_ready_reason, self.render_metrics, self.brain_line)
        self.reporter: Reporter | None = None
        self.nflog: NflogReader | None = None
        self._applies_logged = 0
        self._nflog_lost_reported = 0

    # -- what the endpoints and the logs say ----------------------------------------------------

    def not_ready(self) -> list[tuple[str, str]]:
        """Why the node is not ready, as (bucket, text); empty when ready. Rules in force stay
        in force while the brain is away (fail static): that alone does not make it unready."""
        st = self.status
        out = []
        if self.applier.model is None:
            link = f"connected to {st.brain}" if st.connected else f"not connected to {self.config.brain}"
            reason = f"no rules from the brain yet ({link}; {st.phase})"
            if st.brain_refused:
                reason += f"; {st.brain_refused}"
            elif st.last_error and st.last_error != st.refused:
                reason += f"; last error: {st.last_error}"
            out.append(("no_rules", reason))
        if st.refused:
            out.append(("generation_refused", st.refused))
        out += [(p.code, p.message) for p in self.check.problems]
        return out

    def not_ready_reason(self) -> str | None:
        return "; ".join(text for _, text in self.not_ready()) or None

    def brain_line(self) -> str:
        """Which brain serves the node, for /readyz."""
        st = self.status
        if st.connected and st.brain:
            return f"brain: {st.brain}\n"
        return f"brain: none connected (trying {self.config.brain}; {st.phase})\n"

    def readiness(self) -> tuple[bool, tuple[str, ...]]:
        """What the brain hears: ready, and what lets pod traffic bypass the rules (the brain
        knows by itself whether rules were applied)."""
        reasons = self.not_ready()
        return not reasons, tuple(text for bucket, text in reasons if bucket != "no_rules")

    # -- the node's preflight -------------------------------------------------------------------

    async def check_node(self) -> None:
        """Re-check the node (fixing what the agent may) and tell the brain if readiness changed."""
        async with self._checking:  # one check at a time: the loop and a snapshot may coincide
            before = [p.message for p in self.check.problems]
            problems = await asyncio.to_thread(self.check.run)
            after = [p.message for p in problems]
        if after != before:
            if after:
                log.error("node %s: not ready: %s", self.config.node, "; ".join(after))
            else:
                log.info("node %s: node check passed: every pod packet reaches the rules", self.config.node)
        await self.client.status_changed()

    async def _gate(self, model: NodeModel, kind: str) -> str | None:
        """The applier asks before each apply: every snapshot re-checks the node first."""
        if kind == "snapshot":
            await self.check_node()
        facts = self.check.facts
        if facts is None:
            return None  # the node could not be read: it is not ready, and says why
        return model_needs(model, facts, self._families, self.dataplane.name)

    def render_metrics(self) -> tuple[bytes, str]:
        self._refresh()
        return self.metrics.render(), self.metrics.content_type

    def _refresh(self) -> None:
        """Bring the gauges and loss counts that mirror other objects' state up to date."""
        st = self.status
        self.metrics.set_readiness(bucket for bucket, _ in self.not_ready())
        self.metrics.set_brain_protocol(st.brain_protocol)
        if self.nflog is not None:
            lost = self.nflog.stats.lost
            self.metrics.nflog_lost_total(lost)
            if self.reporter is not None and lost > self._nflog_lost_reported:
                self.reporter.count_shed(NFLOG_SHED_REASON, lost - self._nflog_lost_reported)
            self._nflog_lost_reported = max(lost, self._nflog_lost_reported)

    def _on_applied(self, st: AgentStatus) -> None:
        dp = self.dataplane
        if dp.applies != self._applies_logged:
            self._applies_logged = dp.applies
            log.info(
                "node %s: applied generation %d (%s, %.1f ms, %s)",
                st.node,
                st.generation,
                dp.last_kind,
                dp.last_seconds * 1000,
                dp.name,
            )
        else:
            log.info("node %s: generation %d confirmed; the kernel already holds it", st.node, st.generation)

    def _on_blocked(self, events: list[BlockedEvent]) -> None:
        self.metrics.blocked_events(events)
        if self.reporter is not None:
            self.reporter.offer(events)

    # -- running --------------------------------------------------------------------------------

    def _channel(self) -> RenewingChannel:
        """The drop reports' channel: the same brain, the same (renewing) mTLS credentials as the sync stream."""
        return FollowingChannel(self.client, self.config.tls, CHANNEL_OPTIONS)

    def _open_nflog(self, loop: asyncio.AbstractEventLoop) -> None:
        cfg = self.config
        try:
            reader = NflogReader(cfg.node, cfg.nflog_group, netns=cfg.netns).open()
            reader.attach(loop, self._on_blocked)
        except Exception as e:  # the counters still count every denial exactly
            log.error("cannot read NFLOG group %d (blocked connections: kernel counters only): %s", cfg.nflog_group, e)
            return
        self.nflog = reader

    async def run(self, stop: asyncio.Event) -> int:
        cfg = self.config
        loop = asyncio.get_running_loop()
        host, port = await self.http.start()
        channel = self._channel()
        self.reporter = Reporter(cfg.node, channel, registry=self.metrics.registry)
        if cfg.nflog:
            self._open_nflog(loop)
        await self.check_node()  # before the hello, so that it carries the node's readiness
        log.info(
            "node %s: agent started (backend %s, NFLOG group %d, HTTP on %s:%d); brain at %s%s",
            cfg.node,
            self.dataplane.name,
            cfg.nflog_group,
            host,
            port,
            cfg.brain,
            "" if cfg.tls else " (plain text: insecure)",
        )
        tasks = {
            asyncio.create_task(self.client.run(stop), name="sync"),
            asyncio.create_task(self.reporter.run(), name="drop-reports"),
            asyncio.create_task(
                verify_loop(self.dataplane, cfg.verify_interval, stop, lambda: self.status.generation), name="verify"
            ),
            asyncio.create_task(
                counters_loop(self.dataplane, self.metrics, cfg.counters_interval, stop, self._refresh),
                name="counters",
            ),
            asyncio.create_task(preflight_loop(self.check_node, cfg.preflight_interval, stop), name="preflight"),
            # Another process changing our rules is repaired as the kernel announces it; the
            # verify loop above stays the backstop (and the only check on iptables-legacy).
            asyncio.create_task(
                tamper_watch_loop(self.dataplane, stop, cfg.netns, self.check, self.check_node), name="tamper"
            ),
        }
        stopping = asyncio.create_task(stop.wait())
        code = 0
        try:
            done, _ = await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopping}:
                if not task.cancelled() and task.exception() is not None:
                    log.error("node %s: %s task failed: %r; stopping", cfg.node, task.get_name(), task.exception())
                    code = 1
        finally:
            stop.set()
            stopping.cancel()
            await self._shutdown(tasks, channel)
        return code

    async def _shutdown(self, tasks: set[asyncio.Task[None]], channel: RenewingChannel) -> None:
        if self.reporter is not None:
            self.reporter.close()
        _, pending = await asyncio.wait(tasks, timeout=5.0)
        for task in pending:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*pending, return_exceptions=True)
        if self.nflog is not None:
            self.nflog.close()
        await self.http.stop()
        await channel.close(None)
        await asyncio.to_thread(self.dataplane.close)
        st = self.status
        if self.applier.model is not None:
            log.info(
                "node %s: stopped; generation %d stays in force in the kernel (fail static)", st.node, st.generation
            )
        else:
            log.info("node %s: stopped before any rules were applied; the kernel was not changed", st.node)


async def serve(config: AgentConfig, dataplane: Dataplane | None = None) -> int:
    """Run the agent until SIGTERM or SIGINT; returns the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("node %s: %s received; stopping (the rules stay in the kernel)", config.node, sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        agent = NodeAgent(config, dataplane)
        return await agent.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
