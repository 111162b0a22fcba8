"""Tampering with the kernel's rules is repaired at once, triggered by nf_tables change
notifications (stockade.agent.tamper), against real namespaces and real packets.

The watcher runs in an event loop of its own (a thread), as in the agent; the tests tamper with
``nft``/``iptables`` in the node's namespace and wait (generous deadlines) for the outcome. No
assertion is made on elapsed time: benchmarks/tamper_repair.py measures the window.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext

import pytest
from conftest import (
    ALLOWED_WAIT,
    DENIED_WAIT,
    NODE,
    P2_INGRESS,
    PODS,
    Topology,
    _socket,
    churn_models,
    fresh_ports,
    policy_model,
    tcp_ok,
    udp_ok,
)

from stockade.agent import netns as ns
from stockade.agent import preflight
from stockade.agent.backends import ipt_render, make_backend
from stockade.agent.backends.base import Dataplane
from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.backends.nft_chains import rewrite_chains
from stockade.agent.backends.nft_render import FORWARD, NftConfig
from stockade.agent.metered import MeteredDataplane, conntrack_end_flows
from stockade.agent.metrics import AgentMetrics
from stockade.agent.tamper import tamper_watch_loop
from stockade.agent.tamper.notify import NftNotifications
from stockade.agent.tamper.overrides import overrides
from stockade.agent.tamper.watch import TamperWatcher, nft_relevant
from stockade.model import NodeModel, diff

pytestmark = pytest.mark.root

# another tool's base chain at our hook, earlier than ours, accepting everything
FOREIGN_TABLE = """table inet foreign {
  chain fw {
    type filter hook forward priority -100; policy accept;
    accept
  }
}
"""
DEADLINE = 20.0  # seconds to wait for something that should take milliseconds


def eventually(cond: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Watching:
    """A metered dataplane for the test node, with the tamper loop running in its own event loop."""

    def __init__(self, backend: str | Dataplane, audit_interval: float = 30.0) -> None:
        self.metrics = AgentMetrics()
        inner = make_backend(backend, NODE, 100) if isinstance(backend, str) else backend
        self.dataplane = MeteredDataplane(inner, self.metrics)
        self.audit_interval = audit_interval
        self.check = preflight.NodeCheck(lambda: preflight.NodeFacts(), lambda facts: [], None)
        self.rechecks = 0
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if isinstance(backend, str):
            eventually(lambda: self.dataplane.write_window is not nullcontext, "the watcher to subscribe")

    def _run(self) -> None:
        async def recheck() -> None:
            await asyncio.to_thread(self.check.run)
            self.rechecks += 1

        async def main() -> None:
            await tamper_watch_loop(
                self.dataplane, self._stop, NODE, self.check, recheck, audit_interval=self.audit_interval
            )

        self._loop.run_until_complete(main())

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.dataplane.close()

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def repairs(self) -> float:
        return self.sample("stockade_agent_tamper_repairs_total", backend=self.dataplane.name)

    def in_sync_checks(self) -> float:
        return self.sample("stockade_agent_tamper_checks_no_drift_total")

    def tamper_and_wait(self, *commands: list[str]) -> None:
        """Run ``commands`` in the node and wait until the watcher has repaired what they did."""
        before = self.repairs()
        for argv in commands:
            ns.run(argv, NODE, check=True)
        eventually(lambda: self.repairs() > before, f"a repair after {commands}")
        model = self.dataplane.model
        assert model is not None
        assert self.dataplane.verify(model) == []


def enforced(topo: Topology) -> None:
    """Real packets: the model's allow and deny both hold."""
    assert tcp_ok(topo.netns("p1"), PODS["p2"], 20080)
    assert not tcp_ok(topo.netns("p3"), PODS["p2"], 20080, timeout=DENIED_WAIT)


def deny_handle() -> str:
    """The handle of the deny rule at the end of p2's ingress chain."""
    listing = ns.run(["nft", "-a", "list", "chain", "inet", "stockade", P2_INGRESS.id], NODE, check=True).stdout
    rules = [line for line in listing.splitlines() if "# handle " in line and '"deny' in line]
    assert len(rules) == 1, listing
    return rules[0].rsplit("# handle ", 1)[1].strip()


def own_churn(w: Watching, count: int) -> NodeModel:
    """Apply ``count`` deltas through the metered dataplane, as the agent does."""
    prev = w.dataplane.model
    assert prev is not None
    for model in churn_models(policy_model(), count, chain_every=10):
        w.dataplane.apply_delta(diff(prev, model), model)
        prev = model
    w.dataplane.apply_delta(diff(prev, policy_model()), policy_model())
    return policy_model()


# -- nftables -------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def nft_watching(topology: Topology) -> Iterator[Watching]:
    ns.run(["nft", "flush", "ruleset"], NODE)
    w = Watching("nftables")
    w.dataplane.apply_snapshot(policy_model())
    try:
        yield w
    finally:
        w.stop()


class TestNftables:
    @pytest.fixture
    def watching(self, nft_watching: Watching) -> Watching:
        return nft_watching

    @pytest.mark.parametrize(
        "damage",
        [
            ["nft", "delete", "table", "inet", "stockade"],
            ["nft", "flush", "ruleset"],
            ["nft", "flush", "chain", "inet", "stockade", P2_INGRESS.id],
            # a foreign accept ahead of our dispatch, in our own forward chain (issue 17)
            ["nft", "insert", "rule", "inet", "stockade", "forward", "accept"],
        ],
        ids=["delete-table", "flush-ruleset", "flush-chain", "foreign-accept-in-our-chain"],
    )
    def test_tampering_repaired(self, topology: Topology, watching: Watching, damage: list[str]) -> None:
        watching.tamper_and_wait(damage)
        enforced(topology)

    def test_one_rule_deleted_repaired(self, topology: Topology, watching: Watching) -> None:
        rule = ["nft", "delete", "rule", "inet", "stockade", P2_INGRESS.id, "handle", deny_handle()]
        watching.tamper_and_wait(rule)
        enforced(topology)

    def test_rule_replaced_one_for_one_repaired(self, topology: Topology, watching: Watching) -> None:
        """p2's first allow rule replaced by a bare accept, rule count and deny settings unchanged:
        the notification names the chain, and just that chain is rewritten (the full verify sees
        it too: tests/agent/test_verify_rules_nft.py)."""
        listing = ns.run(["nft", "-a", "list", "chain", "inet", "stockade", P2_INGRESS.id], NODE, check=True).stdout
        first = next(line for line in listing.splitlines() if "# handle " in line and "accept" in line)
        handle = first.rsplit("# handle ", 1)[1].strip()
        replace = ["nft", "replace", "rule", "inet", "stockade", P2_INGRESS.id, "handle", handle, "accept"]
        watching.tamper_and_wait(replace)
        enforced(topology)

    def test_foreign_base_chain_cannot_override(self, topology: Topology, watching: Watching) -> None:
        """An earlier-priority base chain that accepts everything at our hook: netfilter still runs
        ours (only drop is final), so the denied connection stays denied; nothing to repair."""
        repairs = watching.repairs()
        ns.run(
            ["nft", "-f", "-"],
            NODE,
            input=FOREIGN_TABLE,
            check=True,
        )
        try:
            enforced(topology)
            assert watching.sample("stockade_agent_foreign_overrides") == 0
            # a sentinel: once its repair is seen, the foreign table's notifications were read too
            watching.tamper_and_wait(["nft", "delete", "table", "inet", "stockade"])
            assert watching.repairs() == repairs + 1
            enforced(topology)
        finally:
            ns.run(["nft", "delete", "table", "inet", "foreign"], NODE)

    def test_own_applies_and_traffic_trigger_nothing(self, topology: Topology, watching: Watching) -> None:
        repairs, in_sync = watching.repairs(), watching.in_sync_checks()
        own_churn(watching, 100)
        # Denied connections add to the seen sets from the packet path: never announced (else a
        # pod could make the agent re-read its table at will).
        for _ in range(5):
            enforced(topology)
        # Notifications are read in order: once the sentinel's repair is seen, so were the deltas'.
        watching.tamper_and_wait(["nft", "delete", "table", "inet", "stockade"])
        assert watching.repairs() == repairs + 1
        assert watching.in_sync_checks() == in_sync
        enforced(topology)


# -- iptables (iptables-nft: its tables are nf_tables, announced like any other) ---------------


@pytest.fixture(scope="class")
def ipt_watching(topology: Topology) -> Iterator[Watching]:
    ns.run(["nft", "flush", "ruleset"], NODE)
    w = Watching("iptables")
    w.dataplane.apply_snapshot(policy_model())
    try:
        yield w
    finally:
        w.stop()
        ns.run(["nft", "flush", "ruleset"], NODE)


def _iptables_nft() -> bool:
    return "nf_tables" in ns.run(["iptables", "--version"]).stdout


@pytest.mark.skipif(not _iptables_nft(), reason="iptables is iptables-legacy: only the periodic check repairs")
class TestIptables:
    @pytest.fixture
    def watching(self, ipt_watching: Watching) -> Watching:
        return ipt_watching

    @pytest.mark.parametrize(
        "damage",
        [
            [["iptables", "-F"]],
            [["iptables", "-F", "STOCKADE-FWD"]],
            [["iptables", "-D", "FORWARD", "-j", "STOCKADE-FWD"]],
            [["ip6tables", "-F"]],
            [["nft", "flush", "ruleset"]],
        ],
        ids=["flush-filter", "flush-our-chain", "jump-deleted", "flush-ip6", "flush-ruleset"],
    )
    def test_tampering_repaired(self, topology: Topology, watching: Watching, damage: list[list[str]]) -> None:
        watching.tamper_and_wait(*damage)
        enforced(topology)

    def test_foreign_accept_before_our_jump_reported(self, topology: Topology, watching: Watching) -> None:
        ns.run(["iptables", "-I", "FORWARD", "1", "-s", PODS["p3"], "-j", "ACCEPT"], NODE, check=True)
        try:
            eventually(lambda: watching.sample("stockade_agent_foreign_overrides") == 1, "the override reported")
            eventually(lambda: any(p.code == "foreign_override" for p in watching.check.problems), "not ready")
            # the report is warranted: that rule does open the pod (and is left alone)
            assert tcp_ok(topology.netns("p3"), PODS["p2"], 20080)
            assert watching.repairs() >= 0 and watching.dataplane.verify(policy_model()) == []
        finally:
            ns.run(["iptables", "-D", "FORWARD", "-s", PODS["p3"], "-j", "ACCEPT"], NODE, check=True)
        eventually(lambda: watching.sample("stockade_agent_foreign_overrides") == 0, "the override cleared")
        eventually(lambda: not watching.check.problems, "ready again")
        enforced(topology)

    def test_own_applies_trigger_nothing(self, topology: Topology, watching: Watching) -> None:
        repairs, in_sync = watching.repairs(), watching.in_sync_checks()
        own_churn(watching, 20)
        watching.tamper_and_wait(["iptables", "-F", "STOCKADE-FWD"])
        assert watching.repairs() == repairs + 1
        assert watching.in_sync_checks() == in_sync
        enforced(topology)


# -- the override audit, pure ----------------------------------------------------------------


def test_overrides_found_only_before_our_jump() -> None:
    save = "\n".join(
        [
            "-P FORWARD ACCEPT",
            "-N KUBE-FORWARD",
            "-N OPENS",
            "-N DROPS",
            "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",  # known flows: harmless
            "-A FORWARD -j DROPS",  # a chain that never accepts
            '-A FORWARD -m comment --comment "some tool" -j OPENS',  # one that may
            "-A FORWARD -s 10.0.0.0/8 -j ACCEPT",
            "-A FORWARD -j STOCKADE-FWD",
            "-A FORWARD -j ACCEPT",  # after us: ours ran first
            "-A DROPS -s 192.0.2.1 -j DROP",
            "-A OPENS -j KUBE-FORWARD",
            "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",
        ]
    )
    found = overrides(save, 4)
    assert [o.rule for o in found] == [
        '-A FORWARD -m comment --comment "some tool" -j OPENS',
        "-A FORWARD -s 10.0.0.0/8 -j ACCEPT",
    ]
    assert overrides("-P FORWARD ACCEPT\n-A FORWARD -j ACCEPT\n", 4) == []  # no jump of ours: drift, not this


def test_repair_ends_connections_opened_meanwhile(topology: Topology) -> None:
    """A flow set up while the rules were gone is established: the forward chain would accept it
    after the repair, so the repair ends it (conntrack), as an apply that forbids flows does."""
    ns.run(["nft", "flush", "ruleset"], NODE)
    dp = MeteredDataplane(make_backend("nftables", NODE, 100), AgentMetrics(), conntrack_end_flows(NODE))
    try:
        dp.apply_snapshot(policy_model())
        assert not udp_ok(topology.netns("p3"), PODS["p2"], 20054, DENIED_WAIT)
        # (another flow below: this one is now in the seen set, dropped before the deny rule; a
        # port the kernel picks could by chance be that one's again, so a fresh one is bound)
        sock = _socket(topology.netns("p3"), socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", fresh_ports(1)[0]))
        try:
            # The deny rule of p2's chain goes (the forward chain's conntrack rule stays, so the
            # flow is tracked; with the whole table gone nothing would use conntrack here).
            ns.run(
                ["nft", "delete", "rule", "inet", "stockade", P2_INGRESS.id, "handle", deny_handle()], NODE, check=True
            )
            sock.settimeout(ALLOWED_WAIT)
            sock.sendto(b"hi", (PODS["p2"], 20054))
            assert sock.recv(16) == b"ok"  # open: the flow is now established in conntrack
            assert dp.check() != []
            sock.settimeout(DENIED_WAIT)
            sock.sendto(b"hi", (PODS["p2"], 20054))
            with pytest.raises(TimeoutError):
                sock.recv(16)  # the same flow: ended by the repair, and denied again
        finally:
            sock.close()
    finally:
        dp.close()


def test_lost_notifications_mean_look(topology: Topology) -> None:
    """A burst larger than the socket's queue loses notifications: the watcher cannot know what
    they said, so it asks for a check."""
    watcher = TamperWatcher(NftNotifications(NODE, rcvbuf=4096), nft_relevant)
    try:
        rules = "".join(f'add rule inet burst c counter comment "r{i}"\n' for i in range(500))
        ns.run(["nft", "-f", "-"], NODE, input="add table inet burst\nadd chain inet burst c\n" + rules, check=True)
        watcher.drain()
        assert watcher.stats.overruns >= 1
        assert watcher.take() is not None
        # Lost during a write of ours: a large snapshot of ours overflows the queue by itself, and
        # the queue was empty when the write began, so that is taken for ours (documented).
        with watcher.writing():
            ns.run(["nft", "-f", "-"], NODE, input="flush table inet burst\n" + rules, check=True)
        assert watcher.stats.own_overruns >= 1
        assert watcher.take() is None
    finally:
        watcher.close()
        ns.run(["nft", "delete", "table", "inet", "burst"], NODE)


def test_rewrite_chains_only_for_chains_of_the_model() -> None:
    model, cfg = policy_model(), NftConfig()
    script = rewrite_chains(model, cfg, {FORWARD, P2_INGRESS.id})
    assert script is not None
    assert "add chain inet stockade forward { type filter hook forward priority filter; policy accept; }" in script
    assert f"flush chain inet stockade {P2_INGRESS.id}" in script
    assert rewrite_chains(model, cfg, {P2_INGRESS.id, "someone_elses"}) is None


def test_iptables_legacy_is_never_announced(topology: Topology) -> None:
    """iptables-legacy's tables are x_tables: no notification, so no watcher (the periodic check
    repairs); the override audit polls instead. Last in the module: it leaves legacy tables."""
    legacy = [ipt_render.tool(f, "", "legacy") for f in (4, 6)]
    if any(shutil.which(t) is None for t in legacy):
        pytest.skip("no iptables-legacy here")
    ns.run(["nft", "flush", "ruleset"], NODE)
    w = Watching(IptablesBackend(NODE, variant="legacy"), audit_interval=0.2)
    try:
        w.dataplane.apply_snapshot(policy_model())
        ns.run([legacy[0], "-I", "FORWARD", "1", "-j", "ACCEPT"], NODE, check=True)
        eventually(lambda: w.sample("stockade_agent_foreign_overrides") == 1, "the override found by polling")
        assert w.dataplane.write_window is nullcontext  # nothing to tell our writes from foreign ones
        ns.run([legacy[0], "-D", "FORWARD", "-j", "STOCKADE-FWD"], NODE, check=True)
        assert w.dataplane.verify(policy_model()) != []  # drift, left to the periodic check
    finally:
        w.stop()
        for tool in legacy:
            ns.run([tool, "-F"], NODE)
            ns.run([tool, "-X"], NODE)
