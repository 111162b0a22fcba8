"""Issue 12 in the lab: IPv6 flows end to end in a dual-stack lab (`lab up --ip-family dual`).

The real brain, agents, Redis and API server, with the upstream x/y/z layout. Shown for IPv6:
- blocked attempts (TCP and UDP, ingress and egress) are counted exactly in the brain's
  Prometheus metrics, in Redis and `stockade drops top`, resolved to pod names, and the kernel's
  deny counters agree; IPv4 attempts made at the same time are counted apart (on keys of their
  own), exactly too. On both backends.
- `explain` says both families (an IPv4-only ipBlock: allowed over IPv4, blocked over IPv6) and
  agrees with `lab probe --family`; `explain` takes IPv6 addresses; `dry-run` lists the
  connections a change opens and closes over IPv6 only, and the probe confirms exactly those.
- conntrack clean-up: established IPv6 (and IPv4) connections a new policy forbids are ended by
  the time `lab apply --wait` returns; an allowed established IPv6 connection survives.
- the not-ready path: a node whose kernel has IPv6 disabled refuses a generation naming IPv6 pod
  addresses; `stockade nodes` says NOT READY and why, and `lab apply --wait` names the node.

One lab at a time (first nftables for everything, then iptables for drops and conntrack), because a
dual-stack lab costs seconds to build on a loaded machine.
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from stockade.brain.drops.flows import FIELDS
from stockade.lab import lab as labcmd
from stockade.lab import nsenter
from stockade.v1 import admin_pb2, admin_pb2_grpc

from .e2e import XYZ, pol
from .lab_ops import (
    FRESH_PORTS,
    agent_metrics,
    agent_totals,
    attempts,
    brain_counters,
    cli,
    config,
    counters,
    diff,
    enforced,
    lab_state,
    pod_netns,
    poll,
    redis_top,
)
from .labenv import Lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
POLICIES = [
    # x/a takes no connections in; y/b opens none out (the drops test).
    pol("deny-a", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]}, ns="x"),
    pol("no-egress-b", {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"]}, ns="y"),
    # x/b admits TCP/80 from an IPv4-only block: every pod over IPv4, no pod over IPv6.
    pol(
        "v4-only",
        {
            "podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 80}]}],
        },
    ),
]
# (family, source pod, destination pod, protocol, port, attempts, direction, pod that denies it).
# IPv4 attempts share no (protocol, port, direction) with IPv6 ones at the same node, so every
# count below belongs to one family.
ATTEMPTS = [
    ("ipv6", "y/a", "x/a", "TCP", 80, 7, "ingress", "x/a"),
    ("ipv6", "z/c", "x/a", "UDP", 81, 5, "ingress", "x/a"),
    ("ipv6", "y/b", "z/a", "TCP", 81, 4, "egress", "y/b"),
    ("ipv6", "y/b", "x/b", "UDP", 80, 3, "egress", "y/b"),
    ("ipv6", "z/a", "x/b", "TCP", 80, 6, "ingress", "x/b"),  # over IPv4 this one is allowed
    ("ipv4", "y/a", "x/a", "TCP", 81, 2, "ingress", "x/a"),
    ("ipv4", "y/b", "z/a", "TCP", 80, 8, "egress", "y/b"),
]
FLUSH_TIMEOUT = 60.0  # the agents read their kernel counters every 5 s (slower on a busy machine)


class Labs:
    """Keeps one dual-stack lab up at a time, per backend, in the order the tests ask."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.backend = ""
        self.lab: Lab | None = None
        self.failed: dict[str, str] = {}

    def get(self, backend: str) -> Lab:
        if backend in self.failed:
            pytest.fail(f"the {backend} lab did not come up: {self.failed[backend]}")
        if self.lab is not None and self.backend == backend:
            return self.lab
        self.close()
        lab = Lab(self.tmp.mktemp(f"dual-{backend}"), f"st-ds{backend[:2]}-")
        for var in ("STOCKADE_BRAIN", "STOCKADE_TOKEN", "STOCKADE_CA", "STOCKADE_CERT", "STOCKADE_KEY"):
            lab.env.pop(var, None)  # the CLI must find the lab's brain through admin.json alone
        self.lab, self.backend = lab, backend
        lab.run("down", check=False)
        try:
            lab.run(
                "up", "--nodes", "3", "--cluster", str(XYZ), "--ip-family", "dual", "--backend", backend, timeout=180
            )
            assert enforced(lab_state(lab)), "the lab has no brain and agents: nothing would be enforced"
            lab.run("apply", "-f", lab.write("base.yaml", yaml.safe_dump_all(POLICIES)), "--wait")
        except (AssertionError, subprocess.TimeoutExpired) as e:
            self.failed[backend] = str(e)
            raise
        return lab

    def close(self) -> None:
        if self.lab is not None:
            self.lab.run("down", check=False)
        self.lab = None


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Labs]:
    labs = Labs(tmp_path_factory)
    try:
        yield labs
    finally:
        labs.close()


def _json(lab: Lab, *args: str, rc: int = 0) -> Any:
    res = cli(lab, *args, "-o", "json")
    assert res.returncode == rc, res.stdout + res.stderr
    return json.loads(res.stdout)


def _ips(lab: Lab) -> dict[tuple[str, str], str]:
    """(pod, family) -> the pod's address of that family, as `lab pods -o json` lists them."""
    out = {}
    for p in lab.json("pods")["pods"]:
        assert p["ip"] == p["ips"][0] and ":" not in p["ip"], p  # IPv4 first, as status.podIP
        for ip in p["ips"]:
            out[f"{p['namespace']}/{p['name']}", "ipv6" if ":" in ip else "ipv4"] = ip
    assert len(out) == 2 * len(PODS)
    return out


# -- 1. drops ---------------------------------------------------------------------------------------


def _blocked_attempts_are_counted_exactly_per_family(lab: Lab) -> None:
    st = lab_state(lab)
    assert st.plan is not None
    node_of = {p.key: p.node for p in st.plan.pods}

    def brain() -> dict[tuple[str, ...], float]:
        raw = brain_counters(lab_state(lab), "stockade_brain_blocked_connections")  # every brain's
        return {tuple(dict(k)[f] for f in ("protocol", "dport", "direction", "namespace")): v for k, v in raw.items()}

    def top() -> dict[tuple[str, ...], int]:  # the operator's view: `stockade drops top -o json`
        by = ",".join(FIELDS)
        rows = _json(lab, "drops", "top", "--window", "15m", "--by", by, "--limit", "1000")["items"]
        return {tuple(str(r["key"].get(f, "")) for f in FIELDS): r["count"] for r in rows}

    before_brain, before_redis, before_top = brain(), redis_top(st, FIELDS), top()
    before_agents = agent_totals(st)

    want_brain: Counter[tuple[str, ...]] = Counter()
    want_redis: Counter[tuple[str, ...]] = Counter()
    want_agents: dict[str, Counter[str]] = {n.name: Counter() for n in st.plan.nodes}
    for i, (family, src, dst, proto, port, n, direction, denier) in enumerate(ATTEMPTS):
        netns, src_ip = pod_netns(st, src, family)
        _, dst_ip = pod_netns(st, dst, family)
        assert (":" in src_ip) == (":" in dst_ip) == (family == "ipv6")
        attempts(netns, src_ip, dst_ip, proto, port, range(FRESH_PORTS + 100 * i, FRESH_PORTS + 100 * i + n))
        (dst_ns, dst_pod), (src_ns, src_pod) = dst.split("/"), src.split("/")
        want_brain[proto, str(port), direction, dst_ns] += n  # xyz pods declare 80, 81: kept
        want_redis[direction, proto, str(port), dst_ns, dst_pod, src_ns, src_pod] += n
        want_agents[node_of[denier]][f"kernel:{direction}"] += n
        want_agents[node_of[denier]][f"nflog:{proto}/{port}/{direction}"] += n
    total = sum(a[5] for a in ATTEMPTS)

    got_brain = poll(lambda: diff(brain(), before_brain), lambda d: sum(d.values()) >= total, FLUSH_TIMEOUT)
    assert got_brain == dict(want_brain), (
        "brain stockade_brain_blocked_connections_total by (protocol, dport, direction, ns)"
    )
    # Redis holds pod names (an unresolved IPv6 address would be its text here).
    got_redis = poll(
        lambda: diff(redis_top(st, FIELDS), before_redis), lambda d: sum(d.values()) >= total, FLUSH_TIMEOUT
    )
    assert got_redis == dict(want_redis), "Redis by (direction, protocol, dport, dst ns/pod, src ns/pod)"
    assert diff(top(), before_top) == dict(want_redis), "stockade drops top -o json"

    def agents() -> dict[str, dict[str, float]]:
        after = agent_totals(lab_state(lab))
        return {node: diff(after[node], before_agents[node]) for node in after}

    def complete(d: dict[str, dict[str, float]]) -> bool:  # both: they are counted apart
        rows = [(k, v) for row in d.values() for k, v in row.items()]
        return all(sum(v for k, v in rows if k.startswith(kind)) >= total for kind in ("kernel:", "nflog:"))

    # Each node's kernel counted each attempt once and NFLOG delivered every one (none lost).
    assert poll(agents, complete, FLUSH_TIMEOUT) == {node: dict(c) for node, c in want_agents.items()}


def test_blocked_ipv6_and_ipv4_attempts_are_counted_exactly_and_resolved_nftables(labs: Labs) -> None:
    _blocked_attempts_are_counted_exactly_per_family(labs.get("nftables"))


# -- 2. explain, probe, dry-run ---------------------------------------------------------------------


def _probe(lab: Lab, family: str, *args: str) -> dict[tuple[str, str, str, int], bool]:
    # patient (the default is 1 s): an open connection must not read blocked on a busy machine
    cells = lab.json("probe", "--family", family, "--timeout", "3", *args)["results"]
    assert cells and all(c["family"] == family for c in cells)
    return {(c["from"], c["to"], c["protocol"], c["port"]): c["connected"] for c in cells}


def test_explain_says_both_families_and_agrees_with_the_probe(labs: Labs) -> None:
    lab = labs.get("nftables")
    ips = _ips(lab)
    res = cli(lab, "explain", "y/a", "x/b", "--port", "80")
    assert res.returncode == 1, res.stdout + res.stderr  # blocked over one family: not allowed
    assert res.stdout.startswith("ALLOWED over IPv4, BLOCKED over IPv6: y/a -> x/b TCP/80"), res.stdout
    out = _json(lab, "explain", "y/a", "x/b", "--port", "80", rc=1)
    assert out["allowed"] is False
    assert out["families"] == [
        {"family": "ipv4", "fromIP": ips["y/a", "ipv4"], "toIP": ips["x/b", "ipv4"], "allowed": True},
        {"family": "ipv6", "fromIP": ips["y/a", "ipv6"], "toIP": ips["x/b", "ipv6"], "allowed": False},
    ]
    # The packets say the same, family by family.
    cell = ("y/a", "x/b", "TCP", 80)
    assert _probe(lab, "ipv4", "--from", "y/a", "--to", "x/b", "--ports", "80") == {cell: True}
    assert _probe(lab, "ipv6", "--from", "y/a", "--to", "x/b", "--ports", "80") == {cell: False}

    # By address: an IPv6 address pins the family (either end, any spelling).
    v6 = _json(lab, "explain", ips["y/a", "ipv6"], "x/b", "--port", "80", rc=1)
    assert (v6["allowed"], v6["family"], v6["fromIP"], v6["toIP"]) == (
        False,
        "ipv6",
        ips["y/a", "ipv6"],
        ips["x/b", "ipv6"],
    )
    assert (v6["from"], v6["to"]) == ("y/a", "x/b")  # the address is resolved to its pod
    long_form = ipaddress.IPv6Address(ips["x/b", "ipv6"]).exploded  # fd00:0010:0244:0002:0000:...
    assert _json(lab, "explain", "y/a", long_form, "--port", "80", rc=1)["family"] == "ipv6"
    v4 = _json(lab, "explain", ips["y/a", "ipv4"], "x/b", "--port", "80")
    assert (v4["allowed"], v4["family"]) == (True, "ipv4")
    # An allowed IPv6 pair says so too (x/c is not isolated).
    ok6 = _json(lab, "explain", ips["y/a", "ipv6"], ips["x/c", "ipv6"], "--port", "81", "--protocol", "UDP")
    assert (ok6["allowed"], ok6["family"], ok6["from"], ok6["to"]) == (True, "ipv6", "y/a", "x/c")
    assert _probe(lab, "ipv6", "--from", "y/a", "--to", "x/c", "--ports", "81", "--protocols", "UDP") == {
        ("y/a", "x/c", "UDP", 81): True
    }


# Opens x/b's TCP/80 to the pods' IPv6 range; isolates x/c to IPv4 peers only.
CHANGE = [
    pol(
        "v4-only",
        {
            "podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}, {"ipBlock": {"cidr": "fd00:10:244::/48"}}],
                    "ports": [{"protocol": "TCP", "port": 80}],
                }
            ],
        },
    ),
    pol(
        "c-v4-only",
        {"podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
    ),
]


def test_dry_run_lists_the_ipv6_connections_a_change_opens_and_closes_then_the_probe_confirms(labs: Labs) -> None:
    lab = labs.get("nftables")
    change = lab.write("change.yaml", yaml.safe_dump_all(CHANGE))
    dry = _json(lab, "dry-run", "-f", change)
    assert dry["rejected"] == [], dry
    conn = lambda c: (c["from"], c["to"], c["protocol"], c["port"], c["family"])  # noqa: E731
    opened, closed = {conn(c) for c in dry["opened"]}, {conn(c) for c in dry["closed"]}
    others = [p for p in PODS if p != "y/b"]  # y/b opens nothing (no-egress-b)
    assert opened == {(p, "x/b", "TCP", 80, "ipv6") for p in others if p != "x/b"}
    assert closed == {
        (p, "x/c", proto, port, "ipv6") for p in others if p != "x/c" for proto in ("TCP", "UDP") for port in (80, 81)
    }
    text = cli(lab, "dry-run", "-f", change).stdout
    assert "7 would start working:\n  x/a -> x/b TCP/80 over IPv6\n" in text, text
    assert "28 would stop working:" in text and "  z/c -> x/c UDP/81 over IPv6" in text, text

    probe_args = ("--from", ",".join(PODS), "--to", "x/b,x/c")
    before = {f: _probe(lab, f, *probe_args) for f in ("ipv4", "ipv6")}
    lab.run("apply", "-f", change, "--wait")
    after = {f: _probe(lab, f, *probe_args) for f in ("ipv4", "ipv6")}
    assert after["ipv4"] == before["ipv4"], "the change touches no IPv4 connection"
    assert after["ipv6"].keys() == before["ipv6"].keys()
    changed = {k for k, v in after["ipv6"].items() if v != before["ipv6"][k]}
    assert {(*k, "ipv6") for k in changed if after["ipv6"][k]} == opened
    assert {(*k, "ipv6") for k in changed if not after["ipv6"][k]} == closed


# -- 3. conntrack clean-up --------------------------------------------------------------------------


def _open(lab: Lab, src: str, dst: str, family: str, port: int) -> socket.socket:
    st = lab_state(lab)
    netns, _ = pod_netns(st, src, family)
    _, dst_ip = pod_netns(st, dst, family)
    s = nsenter.socket_in(netns, socket.AF_INET6 if family == "ipv6" else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((dst_ip, port))
    assert _echoes(s, b"hello"), f"{src} -> {dst} over {family} does not echo before the policy"
    return s


def _echoes(s: socket.socket, data: bytes, wait: float = 10.0) -> bool:
    """Whether the pod server echoes `data` back on this connection within `wait` seconds."""
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        if not select.select([s], [], [], wait)[0]:
            return False
        try:
            chunk = s.recv(len(data) - len(got))
        except OSError:
            return False
        if not chunk:
            return False
        got += chunk
    return got == data


def _deleted(lab: Lab, node: str) -> float:
    return sum(counters(agent_metrics(lab_state(lab), node), "stockade_agent_conntrack_entries_deleted").values())


def test_established_ipv6_connections_a_policy_forbids_are_ended_nftables(labs: Labs) -> None:
    _established_connections_a_policy_forbids_are_ended(labs.get("nftables"))


def _established_connections_a_policy_forbids_are_ended(lab: Lab) -> None:
    node = lab_state(lab).plan.pod("z/b").node  # type: ignore[union-attr]
    forbidden = [_open(lab, "y/c", "z/b", "ipv6", 80), _open(lab, "y/c", "z/b", "ipv4", 80)]
    allowed = _open(lab, "x/c", "z/b", "ipv6", 80)
    try:
        before = _deleted(lab, node)
        only_x = pol(
            "z-b-from-x",
            {
                "podSelector": {"matchLabels": {"pod": "b"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
            },
            ns="z",
        )
        lab.run("apply", "-f", lab.write("z-b.yaml", yaml.safe_dump(only_x)), "--wait")
        # The agent ends forbidden flows before it acks, so --wait means they are gone already.
        assert _deleted(lab, node) - before == len(forbidden)
        assert _echoes(allowed, b"still here"), "the allowed IPv6 connection was ended"
        for s in forbidden:  # their conntrack entries are gone: a mid-stream packet is no connection
            assert not _echoes(s, b"after", wait=3), f"{s.getsockname()} -> {s.getpeername()} still passes"
        # New connections over either family are refused as well; the allowed source still connects.
        assert _probe(lab, "ipv6", "--from", "y/c,x/c", "--to", "z/b", "--ports", "80") == {
            ("y/c", "z/b", "TCP", 80): False,
            ("x/c", "z/b", "TCP", 80): True,
        }
    finally:
        for s in (*forbidden, allowed):
            s.close()


# -- 4. not ready: a node that cannot enforce IPv6 --------------------------------------------------


def _resync(lab: Lab, node: str) -> None:
    """Only the brain serving the node can resend its model: the others name that brain."""
    access = json.loads((lab.dir / "admin.json").read_text())
    creds = grpc.ssl_channel_credentials(root_certificates=Path(access["ca"]).read_bytes())
    options = [("grpc.ssl_target_name_override", access["server_name"])]
    answers = []
    for address in access.get("brains") or [access["brain"]]:
        with grpc.secure_channel(address, creds, options=options) as ch:
            admin = [("authorization", f"Bearer {access['token']}")]
            resp = admin_pb2_grpc.AdminStub(ch).Resync(admin_pb2.ResyncRequest(node=node), metadata=admin, timeout=10)
        if resp.ok:
            return
        answers.append(resp.message)
    raise AssertionError(f"no brain resynced {node}: {answers}")


def test_a_node_with_ipv6_disabled_is_not_ready_and_says_why(labs: Labs) -> None:
    """Last on its lab: disabling IPv6 drops the node's IPv6 addresses for good."""
    lab = labs.get("nftables")
    st = lab_state(lab)
    assert st.plan is not None
    node = next(n for n in st.plan.nodes if n.name == "node-3")
    nodes = {n["name"]: n for n in _json(lab, "nodes")["items"]}
    assert nodes["node-3"]["ready"] is True, nodes["node-3"]
    # z/c (on node-3) becomes isolated: node-3's model names its IPv6 address from now on.
    deny_zc = pol("deny-c", {"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Ingress"]}, ns="z")
    lab.run("apply", "-f", lab.write("deny-zc.yaml", yaml.safe_dump(deny_zc)), "--wait")
    nsenter.write_sysctl(node.netns, "net/ipv6/conf/all/disable_ipv6", "1")
    # Deltas use what the agent last saw of its node (checked every 10 s); a snapshot looks again
    # first. Ask the brain for one, as an operator can, so the test does not wait on the timer.
    _resync(lab, "node-3")

    def node3() -> dict[str, Any]:
        return {n["name"]: n for n in _json(lab, "nodes")["items"]}["node-3"]

    got = poll(node3, lambda n: not n["ready"] and bool(n["problems"]), 30)
    assert got["ready"] is False, got
    why = "; ".join(got["problems"])
    assert "refused" in why and "fd00:10:244:3::" in why and "IPv6 disabled" in why, why
    row = next(line for line in cli(lab, "nodes").stdout.splitlines() if line.startswith("node-3"))
    assert "NOT READY" in row and "IPv6 disabled" in row, row
    assert all(n["ready"] for n in _json(lab, "nodes")["items"] if n["name"] != "node-3")
    # `lab apply --wait` does not call a change realized while node-3 enforces nothing, and says why.
    deny_yc = pol("deny-c", {"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Ingress"]}, ns="y")
    with pytest.raises(labcmd.LabError) as waited:  # it must fail: a short wait is enough
        labcmd.apply(config(lab), [lab.write("deny-yc.yaml", yaml.safe_dump(deny_yc))], True, lambda _: None, timeout=3)
    assert "node node-3 is not ready" in str(waited.value) and "IPv6 disabled" in str(waited.value), waited.value


# -- the iptables backend: drops and conntrack clean-up ----------------------------------------------


def test_blocked_ipv6_and_ipv4_attempts_are_counted_exactly_and_resolved_iptables(labs: Labs) -> None:
    _blocked_attempts_are_counted_exactly_per_family(labs.get("iptables"))


def test_established_ipv6_connections_a_policy_forbids_are_ended_iptables(labs: Labs) -> None:
    _established_connections_a_policy_forbids_are_ended(labs.get("iptables"))
