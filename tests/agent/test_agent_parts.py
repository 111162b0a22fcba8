"""The agent's composition without the kernel: the metered dataplane, the CLI's configuration,
the HTTP endpoints, and a whole `NodeAgent` in-process against a real brain over gRPC, with the
in-memory dataplane standing in for the kernel."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Collection
from pathlib import Path

import aiohttp
import pytest

from stockade.agent.backends.base import ApplyError, MemoryDataplane
from stockade.agent.health import HealthServer, parse_address
from stockade.agent.main import AgentConfig, NodeAgent
from stockade.agent.metered import MeteredDataplane
from stockade.agent.metrics import AgentMetrics
from stockade.brain.fanout import FanOut
from stockade.brain.sync_service import serve_sync
from stockade.cli.commands import agent as agent_cmd
from stockade.model import Chain, Direction, NodeDelta, NodeModel, PortMatch, Protocol, Rule, diff
from stockade.tls import write_bundle


def model(port: int = 80, peers: frozenset[str] = frozenset({"10.0.0.9/32"})) -> NodeModel:
    chain = Chain.of(Direction.INGRESS, [Rule("ag_00000001", (PortMatch(Protocol.TCP, port),))])
    return NodeModel("n1", sets={"ag_00000001": peers}, chains={chain.id: chain}, ingress={"10.0.0.2": chain.id})


def sample(metrics: AgentMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[NodeModel, set[str]]] = []
        self.fail = fail

    def __call__(self, m: NodeModel, pods: Collection[str]) -> int:
        self.calls.append((m, set(pods)))
        if self.fail:
            raise OSError("conntrack unavailable")
        return 2


# -- the metered dataplane -----------------------------------------------------------------------


def test_applies_are_timed_counted_and_end_forbidden_flows() -> None:
    metrics, ends = AgentMetrics(), Recorder()
    dp = MeteredDataplane(MemoryDataplane(), metrics, ends)
    first = model()
    dp.apply_snapshot(first)
    assert dp.model == first and dp.last_kind == "snapshot"
    assert len(ends.calls) == 1 and ends.calls[0][1] == {"10.0.0.2"}  # the first snapshot always cleans up
    wider = model(peers=frozenset({"10.0.0.9/32", "10.0.0.10/32"}))
    dp.apply_delta(diff(first, wider), wider)
    assert len(ends.calls) == 1  # adding a peer forbids nothing
    dp.apply_delta(diff(wider, first), first)
    assert len(ends.calls) == 2  # removing one may
    assert sample(metrics, "stockade_agent_transactions_total", result="ok") == 3
    assert sample(metrics, "stockade_agent_apply_seconds_count") == 3
    assert sample(metrics, "stockade_agent_conntrack_entries_deleted_total") == 4


def test_a_failed_apply_is_counted_and_a_failed_cleanup_does_not_fail_the_apply() -> None:
    class Refusing(MemoryDataplane):
        def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None:
            raise ApplyError("nope")

    metrics = AgentMetrics()
    dp = MeteredDataplane(Refusing(), metrics, Recorder(fail=True))
    dp.apply_snapshot(model())  # the clean-up raises; the apply stands
    assert dp.model == model()
    with pytest.raises(ApplyError):
        dp.apply_delta(diff(model(), model(81)), model(81))
    assert dp.model == model()  # still what the kernel holds
    assert sample(metrics, "stockade_agent_transactions_total", result="failed") == 1
    assert sample(metrics, "stockade_agent_transactions_total", result="ok") == 1


def test_check_repairs_drift_once_and_counts_it() -> None:
    metrics, inner = AgentMetrics(), MemoryDataplane()
    dp = MeteredDataplane(inner, metrics)
    assert dp.check() == []  # nothing applied yet: nothing to compare
    dp.apply_snapshot(model())
    assert dp.check() == []
    inner.model = model(81)  # someone changed the kernel
    assert dp.check() != []
    assert inner.model == model()
    assert dp.check() == []
    assert sample(metrics, "stockade_agent_drift_repairs_total") == 1
    assert dp.denied_counts() is None  # the memory dataplane has no counters


# -- the command line ----------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    agent_cmd.register(parser.add_subparsers())
    return parser.parse_args(["agent", *argv])


def test_tls_dir_takes_the_certs_init_layout_and_a_flat_one(tmp_path: Path) -> None:
    write_bundle(tmp_path, ["n1"], ["localhost"])
    cfg = agent_cmd.build_config(parse("--node", "n1", "--brain", "b:1", "--tls-dir", str(tmp_path)))
    assert cfg.tls is not None and cfg.tls.current().cert == (tmp_path / "nodes" / "n1.crt").read_bytes()
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("n1.crt", "n1.key"):
        (flat / name).write_bytes((tmp_path / "nodes" / name).read_bytes())
    (flat / "ca.crt").write_bytes((tmp_path / "ca.crt").read_bytes())
    cfg = agent_cmd.build_config(
        parse("--node", "n1", "--brain", "b:1", "--tls-dir", str(flat), "--server-name", "brain")
    )
    assert cfg.tls is not None
    assert cfg.tls.current().server_name == "brain" and cfg.tls.current().key == (flat / "n1.key").read_bytes()
    with pytest.raises(agent_cmd.UsageError, match="no certificate for node 'n2'"):
        agent_cmd.build_config(parse("--node", "n2", "--brain", "b:1", "--tls-dir", str(tmp_path)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--brain", "b:1", "--insecure"], "no node name"),
        (["--node", "n1", "--insecure"], "no brain address"),
        (["--node", "n1", "--brain", "b:1"], "no TLS credentials"),
        (["--node", "n1", "--brain", "b:1", "--tls-cert", "x"], "go together"),
        (["--node", "n1", "--brain", "b:1", "--insecure", "--http", "nowhere"], "--http"),
        (["--node", "n1", "--brain", "b:1", "--tls-cert", "/nx", "--tls-key", "/nx", "--tls-ca", "/nx"], "cannot read"),
    ],
)
def test_bad_configurations_are_refused_with_a_reason(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.delenv("STOCKADE_BRAIN", raising=False)
    with pytest.raises(agent_cmd.UsageError, match=message):
        agent_cmd.build_config(parse(*argv))


def test_node_and_brain_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node-7")
    monkeypatch.setenv("STOCKADE_BRAIN", "brain:7443")
    cfg = agent_cmd.build_config(parse("--insecure"))
    assert (cfg.node, cfg.brain, cfg.backend, cfg.nflog_group, cfg.tls) == ("node-7", "brain:7443", "auto", 100, None)
    assert cfg.fix_sysctls and cfg.preflight_interval == 10.0  # the agent fixes the node where it may


def test_the_node_preflight_flags() -> None:
    cfg = agent_cmd.build_config(
        parse("--node", "n1", "--brain", "b:1", "--insecure", "--no-fix-sysctls", "--preflight-interval", "2.5")
    )
    assert not cfg.fix_sysctls and cfg.preflight_interval == 2.5
    with pytest.raises(SystemExit):
        parse("--node", "n1", "--preflight-interval", "0")


def test_addresses() -> None:
    assert parse_address("0.0.0.0:9091") == ("0.0.0.0", 9091)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address(":80") == ("0.0.0.0", 80)
    for bad in ("9091", "host:", "h:99999"):
        with pytest.raises(ValueError):
            parse_address(bad)


# -- HTTP and the whole agent, in-process --------------------------------------------------------


async def test_endpoints() -> None:
    reason: list[str | None] = ["no rules yet"]
    server = HealthServer("127.0.0.1:0", lambda: reason[0], lambda: (b"m 1\n", "text/plain; version=0.0.4"))
    _, port = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 503 and "no rules yet" in await r.text()
            reason[0] = None
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200
            async with http.get(f"{base}/metrics") as r:
                assert await r.text() == "m 1\n" and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    finally:
        await server.stop()


async def test_node_agent_in_process_against_a_real_brain() -> None:
    models = {"n1": model()}
    fanout = FanOut(lambda node: models[node].copy())
    server, port, _ = await serve_sync(fanout, None, "127.0.0.1:0", allow_insecure=True)
    dataplane = MemoryDataplane()
    config = AgentConfig(
        node="n1",
        brain=f"127.0.0.1:{port}",
        tls=None,
        insecure=True,
        http="127.0.0.1:0",
        verify_interval=0.2,
        nflog=False,
        conntrack=False,
    )
    agent = NodeAgent(config, dataplane)
    assert agent.not_ready_reason() is not None
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await wait_for(lambda: agent.not_ready_reason() is None)
        assert dataplane.model == models["n1"]
        body, _ = agent.render_metrics()
        assert b"stockade_agent_brain_connected 1.0" in body and b"stockade_agent_applied_generation 1.0" in body
        new = model(8080)
        fanout.on_deltas({"n1": diff(models["n1"], new)})
        models["n1"] = new
        await wait_for(lambda: dataplane.model == new)
        dataplane.model = model(1)  # drift: repaired by the verify loop
        await wait_for(lambda: sample(agent.metrics, "stockade_agent_drift_repairs_total") == 1)
        assert dataplane.model == new
        await server.stop(None)  # the brain goes away: nothing changes, the gauge says so
        await wait_for(lambda: b"stockade_agent_brain_connected 0.0" in agent.render_metrics()[0])
        assert dataplane.model == new and agent.not_ready_reason() is None
    finally:
        stop.set()
        assert await asyncio.wait_for(run, 10) == 0
        await server.stop(None)
    assert dataplane.model == new  # stopping leaves the rules


async def wait_for(check: object, timeout: float = 30.0) -> None:  # a bound for a busy machine
    assert callable(check)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)
