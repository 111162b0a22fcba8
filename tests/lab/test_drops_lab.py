"""Issue 6 in the lab: a known number of blocked attempts (TCP and UDP, ingress and egress) made
from inside the lab's pods shows up as exactly that number in Prometheus (the brain's
``stockade_brain_blocked_connections_total``, each agent's kernel counters and NFLOG counts) and in
Redis (the drops store's top flows), attributed to the right source and destination pods.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import yaml

from stockade.brain.drops.flows import FIELDS
from stockade.lab import lab as labcmd

from .e2e import XYZ, pol
from .lab_ops import (
    FRESH_PORTS,
    agent_totals,
    attempts,
    brain_counters,
    config,
    diff,
    enforced,
    lab_state,
    make_lab,
    pod_netns,
    poll,
    redis_top,
)
from .labenv import Lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

# x/a takes no connections in; y/b opens none out.
POLICIES = [
    pol("deny-a", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]}, ns="x"),
    pol("no-egress-b", {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"]}, ns="y"),
]
# (source pod, destination pod, protocol, port, attempts, direction, node that denies it: the pod)
ATTEMPTS = [
    ("y/a", "x/a", "TCP", 80, 7, "ingress", "x/a"),
    ("z/c", "x/a", "UDP", 81, 5, "ingress", "x/a"),
    ("y/b", "z/a", "TCP", 81, 4, "egress", "y/b"),
    ("y/b", "x/b", "UDP", 80, 3, "egress", "y/b"),
]
FLUSH_TIMEOUT = 60.0  # the agents read their kernel counters every 5 s (slower on a busy machine)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = make_lab(tmp_path_factory.mktemp("drops-lab"), "st-lo-d-", (27000, 27299))
    lab.run("down", check=False)
    try:
        lab.run("up", "--nodes", "3", "--cluster", str(XYZ), timeout=120)
        if not enforced(lab_state(lab)):
            pytest.skip("this build has no brain and agents: nothing is counted")
        labcmd.apply(
            config(lab), [lab.write("drops-policies.yaml", yaml.safe_dump_all(POLICIES))], True, lambda _: None
        )
        yield lab
    finally:
        lab.run("down", check=False)


def _brain_blocked(lab: Lab) -> dict[tuple[str, ...], float]:
    raw = brain_counters(lab_state(lab), "stockade_brain_blocked_connections")  # every brain's
    return {tuple(dict(k)[f] for f in ("protocol", "dport", "direction", "namespace")): v for k, v in raw.items()}


def _redis(lab: Lab) -> dict[tuple[str, ...], int]:
    return redis_top(lab_state(lab), FIELDS)


def test_blocked_attempts_are_counted_exactly_and_attributed(lab: Lab) -> None:
    st = lab_state(lab)
    assert st.plan is not None
    node_of = {p.key: p.node for p in st.plan.pods}
    before_brain, before_redis, before_agents = _brain_blocked(lab), _redis(lab), agent_totals(st)

    want_brain: Counter[tuple[str, ...]] = Counter()
    want_redis: Counter[tuple[str, ...]] = Counter()
    want_agents: dict[str, Counter[str]] = {n.name: Counter() for n in st.plan.nodes}
    for i, (src, dst, proto, port, n, direction, denier) in enumerate(ATTEMPTS):
        netns, src_ip = pod_netns(st, src)
        _, dst_ip = pod_netns(st, dst)
        attempts(netns, src_ip, dst_ip, proto, port, range(FRESH_PORTS + 100 * i, FRESH_PORTS + 100 * i + n))
        dst_ns, dst_pod = dst.split("/")
        src_ns, src_pod = src.split("/")
        want_brain[proto, str(port), direction, dst_ns] += n  # xyz pods declare 80, 81: kept
        want_redis[direction, proto, str(port), dst_ns, dst_pod, src_ns, src_pod] += n
        want_agents[node_of[denier]][f"kernel:{direction}"] += n
        want_agents[node_of[denier]][f"nflog:{proto}/{port}/{direction}"] += n
    total = sum(a[4] for a in ATTEMPTS)

    # Brain (Prometheus) and Redis: poll until every attempt is in, then compare exactly.
    brain = poll(lambda: diff(_brain_blocked(lab), before_brain), lambda d: sum(d.values()) >= total, FLUSH_TIMEOUT)
    assert brain == dict(want_brain)
    redis = poll(lambda: diff(_redis(lab), before_redis), lambda d: sum(d.values()) >= total, FLUSH_TIMEOUT)
    assert redis == dict(want_redis), "Redis counts by (direction, protocol, dport, dst ns/pod, src ns/pod)"

    # Each agent: the kernel counted each attempt once, on the node that denied it, and NFLOG
    # delivered every one of them (nothing lost at this rate).
    def agents() -> dict[str, dict[str, float]]:
        after = agent_totals(lab_state(lab))
        return {node: diff(after[node], before_agents[node]) for node in after}

    def complete(d: dict[str, dict[str, float]]) -> bool:  # both: they are counted apart
        rows = [(k, v) for row in d.values() for k, v in row.items()]
        return all(sum(v for k, v in rows if k.startswith(kind)) >= total for kind in ("kernel:", "nflog:"))

    got = poll(agents, complete, FLUSH_TIMEOUT)
    assert got == {node: dict(c) for node, c in want_agents.items()}
