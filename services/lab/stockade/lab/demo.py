"""`stockade lab demo`: the Sock Shop, secured the way the seed article does it, on a real lab.

Steps: a 3-node lab running the Sock Shop and its Services; its real traffic with no policy
(everything flows), through the Services as in a cluster: the external host reaches front-end on
its NodePort, the services call each other by ClusterIP, and the lab's kube-proxy DNATs each
connection to the backend pod, where the policies judge it (on the container port);
the namespace annotated DefaultDeny (everything into the shop is blocked); the published
policies applied (some flows come back, some stay blocked: the policies have mistakes). For what
stays blocked the demo shows what the node agents counted (Prometheus), what the drop records
say, and why, in words (the engine's explanation and lint). Then the administrator's tiers
(`demo_tiers`): an Admin tier Deny that keeps every other namespace away from the shop's
databases, whatever NetworkPolicy tries to reopen them, and a Baseline tier default deny in place
of the beta annotation. Each step prints the kubectl command that does it in a cluster (the lab
runs the same objects through `stockade lab apply`, which also wires new pods and waits until
every agent applied them). Parts that need the brain and agents say so plainly when this build
does not have them.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockade.lab import kubeapi, lab, probe
from stockade.lab.config import LabConfig
from stockade.lab.lab import Say
from stockade.lab.objects import node_object
from stockade.lab.state import LabState

NS = "sock-shop"
BETA_ANNOTATION = "net.beta.kubernetes.io/network-policy"

# The shop's real traffic: who calls which Service, on which Service port (the external host
# calls front-end's NodePort, which leads to its port 80, then the container's 8079).
SHOP_FLOWS: list[tuple[str, str, int]] = [
    ("external", "front-end", 80),
    *(("front-end", d, 80) for d in ("catalogue", "carts", "orders", "user")),
    ("front-end", "session-db", 6379),
    *(("orders", d, 80) for d in ("carts", "user", "payment", "shipping")),
    ("orders", "orders-db", 27017),
    ("carts", "carts-db", 27017),
    ("catalogue", "catalogue-db", 3306),
    ("user", "user-db", 27017),
    ("shipping", "rabbitmq", 5672),
    ("queue-master", "rabbitmq", 5672),
]


@dataclass(frozen=True)
class Flow:
    src: str  # "external" or "ns/pod"
    dst: str  # the backend pod, "ns/pod"
    port: int  # the container port the connection reaches (what policies name)
    connected: bool
    expected: bool | None  # what the policies say (the engine's verdict), when known
    via: str = ""  # the address dialled: "ClusterIP:port" or "node IP:nodePort"


@dataclass(frozen=True)
class Route:
    """How one of the shop's calls is dialled, and where kube-proxy takes it."""

    src: str
    dst: str  # the backend pod
    address: str  # ClusterIP, or (external) the node's address
    port: int  # the Service port, or its nodePort
    target: int  # the container port

    @property
    def via(self) -> str:
        return f"{self.address}:{self.port}"


def shop_dir() -> Path:
    env = os.environ.get("STOCKADE_SOCK_SHOP")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "examples" / "sock-shop"


def _pod(name: str) -> str:
    """A pod of the shop by its name, or any other as "ns/name" (or "external")."""
    return name if name == "external" or "/" in name else f"{NS}/{name}"


def shown(path: Path | str) -> str:
    """A path as the user would type it: relative to the current directory when under it."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def kubectl(say: Say, *commands: list[str]) -> None:
    """The kubectl commands that do this step in a cluster, ready to paste (`$ kubectl ...`)."""
    for argv in commands:
        say("   $ " + shlex.join(["kubectl", *argv]))


def _target_port(svc: dict[str, Any], port: int, pod: dict[str, Any]) -> int:
    spec = next(p for p in svc["spec"]["ports"] if p["port"] == port)
    target = spec.get("targetPort", port)
    if isinstance(target, int):
        return target
    for c in (pod.get("spec") or {}).get("containers") or []:  # a named port: the pod's
        for cp in c.get("ports") or []:
            if cp.get("name") == target:
                return int(cp["containerPort"])
    raise lab.LabError(f"service {svc['metadata']['name']}: no container port named {target!r}")


def routes(st: LabState, flows: list[tuple[str, str, int]]) -> list[Route]:
    """Each call as a client in the cluster makes it: to the Service's ClusterIP, or from outside
    to its NodePort on the node the external host is attached to. The Services come from the
    lab's API server (their addresses are allocated there)."""
    assert st.plan is not None
    api = kubeapi.Client(f"http://127.0.0.1:{st.ports['apiserver']}")
    services = {s["metadata"]["name"]: s for s in api.list("Service", NS)}
    entry = st.plan.node(st.plan.external.via_node).ip
    out = []
    for src, name, port in flows:
        svc = services.get(name)
        if svc is None or not svc["spec"].get("clusterIP"):
            raise lab.LabError(f"the Sock Shop's Service {NS}/{name} is not in the lab's API server")
        dst = _pod(name)  # one pod per Deployment, named after it, as its Service's only endpoint
        target = _target_port(svc, port, st.pods[dst])
        if src == "external":
            node_port = next(p["nodePort"] for p in svc["spec"]["ports"] if p["port"] == port)
            out.append(Route(src, dst, entry, node_port, target))
        else:
            out.append(Route(_pod(src), dst, svc["spec"]["clusterIP"], port, target))
    return out


def probe_flows(st: LabState, flows: list[Route], timeout: float = probe.TIMEOUT) -> list[probe.Result]:
    """Each flow once, through its Service; ``timeout``: how long a probe waits before it calls
    the connection blocked (longer on a busy machine)."""
    assert st.plan is not None
    pods = {p.key: p for p in st.plan.pods}
    todo = []
    for r in flows:
        netns = st.plan.external.netns if r.src == "external" else pods[r.src].netns
        todo.append((probe.Source(r.src, netns), probe.Target(r.dst, r.address, (("TCP", r.port),)), "TCP", r.port))
    return asyncio.run(probe.probe_cells(todo, timeout))


def _engine(st: LabState) -> Any:
    """The engine loaded with the lab's objects, for the expected verdicts and explanations."""
    try:
        from stockade.brain.engine import Engine
    except ImportError:
        return None
    assert st.plan is not None
    eng = Engine(beta_default_deny=True)
    eng.load(
        namespaces=st.namespaces.values(),
        pods=st.pods.values(),
        policies=st.policies.values(),
        nodes=[node_object(n) for n in st.plan.nodes],
        cluster_policies=st.cluster_policies.values(),
    )
    return eng


def _explain(eng: Any, st: LabState, src: str, dst: str, port: int) -> Any:
    try:
        from stockade.brain.admin.explain import explain
    except ImportError:
        return None
    assert st.plan is not None
    return explain(eng, st.plan.external.ip if src == "external" else src, dst, port)


def check(st: LabState, flows: list[tuple[str, str, int]] = SHOP_FLOWS) -> list[Flow]:
    todo = routes(st, flows)
    results = probe_flows(st, todo)
    eng = _engine(st)
    out = []
    for route, r in zip(todo, results, strict=True):
        # The policies judge the connection after kube-proxy's DNAT: the backend pod, its container port.
        ex = _explain(eng, st, r.src, route.dst, route.target) if eng is not None else None
        allowed = ex.allowed if ex is not None else None
        out.append(Flow(r.src, route.dst, route.target, r.connected, allowed, route.via))
    return out


def flow_table(flows: list[Flow], what: str = "the shop's connections") -> str:
    lines = [f"  {'FROM':<17} {'TO':<14} {'THROUGH THE SERVICE AT':<22} {'PORT':>5}  RESULT"]
    for f in flows:
        src, dst = f.src.removeprefix(f"{NS}/"), f.dst.removeprefix(f"{NS}/")
        mark = "works  " if f.connected else "BLOCKED"
        note = ""
        if f.expected is not None and f.expected != f.connected:
            note = f"   (the policies say {'allowed' if f.expected else 'blocked'}: enforcement is not in effect)"
        lines.append(f"  {src:<17} {dst:<14} {f.via:<22} {f.port:>5}  {mark}{note}")
    ok = sum(f.connected for f in flows)
    lines.append(f"  {ok} of {len(flows)} of {what} work, {len(flows) - ok} are blocked")
    return "\n".join(lines)


def blocked_counts(st: LabState) -> dict[tuple[str, str], float] | None:
    """stockade_brain_blocked_connections_total summed by (protocol, dport) over every running
    brain's /metrics (each counts what its own agents report)."""
    if "brain" not in st.processes:
        return None
    from prometheus_client.parser import text_string_to_metric_families

    from stockade.lab import brains

    texts = []
    for b in brains.of(st):
        if brains.process_state(st, b) != "running":
            continue
        try:
            texts.append(brains.metrics(st, b))
        except OSError:
            continue
    if not texts:
        return None
    counts: dict[tuple[str, str], float] = defaultdict(float)
    for text in texts:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "stockade_brain_blocked_connections_total":
                    counts[s.labels.get("protocol", "?"), s.labels.get("dport", "?")] += s.value
    return dict(counts)


def drop_records(st: LabState, limit: int = 10) -> list[dict[str, str]] | None:
    if "brain" not in st.processes or not st.redis_url:
        return None
    try:
        from stockade.brain.drops.redis_url import connect
        from stockade.brain.drops.store import RedisStore
    except ImportError:
        return None

    async def read() -> list[dict[str, str]]:
        client = connect(st.redis_url or "")
        try:
            return await RedisStore(client).recent_events({"namespace": NS}, limit=limit)
        finally:
            await client.aclose()

    try:
        return asyncio.run(read())
    except Exception:  # the demo goes on without the records
        return None


def write_state_file(cfg: LabConfig, name: str, text: str) -> str:
    path = cfg.state_dir / name
    path.write_text(text)
    return str(path)


INTRO = """\
The Sock Shop is a small online shop made of 14 services (front-end, catalogue, carts, orders,
databases, a queue...). This demo secures it the way the seed article does, with Kubernetes
NetworkPolicy, on a real 3-node lab built from network namespaces on this machine: every pod is
its own namespace with its own IP, and every connection below is a real TCP handshake, made the
way the shop makes it: to a Service. The external host dials front-end's NodePort; the services
dial each other's ClusterIPs; the lab's kube-proxy (nftables DNAT, as kube-proxy's nftables mode
does) sends each to the backend pod, and the node agents judge it there, on the container port
(PORT below) that the policies name. Each step shows the kubectl command that does it in a
cluster (`$ kubectl ...`); the lab runs the same objects through `stockade lab apply`, and with
--keep its API server answers kubectl too.
"""


def run(cfg: LabConfig, keep: bool, say: Say) -> int:
    shop = shop_dir()
    if not (shop / "complete-demo.yaml").exists():
        raise lab.LabError(f"the Sock Shop manifests are not in {shop}; set STOCKADE_SOCK_SHOP to their folder")
    say(INTRO)
    say("== 1. A 3-node lab running the Sock Shop (one pod per Deployment) and its Services")
    say("   In a cluster (the lab serves the Deployments' pods, built by `stockade lab up --cluster`):")
    kubectl(say, ["apply", "-f", shown(shop / "complete-demo.yaml")])
    lab.up(cfg, 3, [str(shop / "complete-demo.yaml")], "nftables", None, say)
    try:
        return _steps(cfg, shop, say)
    finally:
        if keep:
            _kept(cfg, say)
        else:
            say("\n== Tearing the lab down (--keep leaves it up)")
            lab.down(cfg, say)


def _kept(cfg: LabConfig, say: Say) -> None:
    say(
        f"\nThe lab stays up (--keep): try `stockade lab probe --from {NS}`; `stockade lab down` removes it.\n"
        "kubectl works against the lab's API server (namespaces, labels, policies: the brain enforces what it\n"
        "stores; a new pod needs `stockade lab apply -f`, which also wires its network namespace):\n"
        f"   $ export KUBECONFIG={cfg.state_dir.resolve() / 'kubeconfig'}"
    )
    kubectl(
        say,
        ["get", "pods,services", "-n", NS, "-o", "wide"],
        ["get", "networkpolicies", "-A"],
        ["get", "clusternetworkpolicies"],
    )


def _total(counts: dict[tuple[str, str], float] | None) -> float:
    return sum((counts or {}).values())


def _wait_counts(st: LabState, at_least: float, timeout: float = 30.0) -> dict[tuple[str, str], float] | None:
    """The counters once they reach `at_least` (the agents report in batches), or as they are."""
    deadline = time.monotonic() + timeout
    while True:
        counts = blocked_counts(st)
        if counts is None or _total(counts) >= at_least or time.monotonic() > deadline:
            return counts
        time.sleep(0.3)


def _steps(cfg: LabConfig, shop: Path, say: Say) -> int:
    st = lab.current(cfg)
    enforced = "brain" in st.processes and any(n.startswith("agent-") for n in st.processes)
    if not enforced:
        say(
            "\nNOTE: this build has no brain and agents yet, so nothing is enforced: every flow below works,\n"
            "and the table says where the policies would block it."
        )
    say("\n== 2. The shop's real traffic, with no policy yet: every connection works")
    kubectl(say, ["get", "networkpolicies", "-n", NS])
    say(flow_table(check(st)))

    say(
        f"\n== 3. The article's first step: annotate the namespace DefaultDeny ({BETA_ANNOTATION}).\n"
        "   Now no pod of the shop accepts any connection, until a policy allows it."
    )
    kubectl(say, ["annotate", "namespace", NS, f'{BETA_ANNOTATION}={{"ingress":{{"isolation":"DefaultDeny"}}}}'])
    ns_yaml = (
        f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n  annotations:\n"
        f'    {BETA_ANNOTATION}: \'{{"ingress":{{"isolation":"DefaultDeny"}}}}\'\n'
    )
    lab.apply(cfg, [write_state_file(cfg, "demo-default-deny.yaml", ns_yaml)], True, say)
    denied = check(lab.current(cfg))
    say(flow_table(denied))
    before = _wait_counts(st, sum(not f.connected for f in denied))

    say(
        f"\n== 4. The article's second step: apply the published policies ({shop / 'policies'}).\n"
        "   Each one lets one service's callers in. Some connections stay blocked: the policies have mistakes."
    )
    kubectl(say, ["apply", "-f", shown(shop / "policies")])
    lab.apply(cfg, [str(shop / "policies")], True, say)
    st = lab.current(cfg)
    since = time.time()
    flows = check(st)
    say(flow_table(flows))
    blocked = [f for f in flows if not f.connected or f.expected is False]

    say(
        "\n== 5. What the node agents counted for step 4: stockade_brain_blocked_connections_total, from the brain's\n"
        "   /metrics (what Prometheus scrapes; the alert rules watch its rate), by protocol and port"
    )
    after = _wait_counts(st, _total(before) + sum(not f.connected for f in flows))
    if after is None:
        say("  (no brain in this lab: no counts)")
    else:
        for key, n in sorted(after.items()):
            delta = n - (before or {}).get(key, 0.0)
            if delta:
                say(f"  {key[0]}/{key[1]}: {delta:.0f} blocked")
        say(f"  ({_total(after) - _total(before):.0f} in step 4; {_total(after):.0f} since the lab started)")

    say("\n== 6. The drop records of step 4 (the newest first, from Redis): who was blocked, where")
    say("   $ stockade drops follow   # as they happen; `stockade drops top` counts them")
    records = drop_records(st, limit=50)
    if records is None:
        say("  (no brain in this lab: no records)")
    for r in [r for r in records or [] if float(r.get("time") or 0) >= since - 1][:10]:
        say(
            f"  {r.get('src_namespace', '')}/{r.get('src_pod', '') or r.get('src', '')} -> "
            f"{r.get('dst_namespace', '')}/{r.get('dst_pod', '') or r.get('dst', '')} "
            f"{r.get('protocol', '')}/{r.get('dport', '')}, dropped on {r.get('node', '')} ({r.get('direction', '')})"
        )

    say("\n== 7. Why they are blocked, in words (the engine's explanation)")
    say("   $ stockade explain sock-shop/front-end sock-shop/carts --port 80   # and `stockade lint`")
    eng = _engine(st)
    if eng is None:
        say("  (the engine is not available in this build)")
        return 0
    hints: list[str] = []
    for f in blocked:
        ex = _explain(eng, st, f.src, f.dst, f.port)
        if ex is None:
            continue
        say("  " + "\n  ".join([ex.text().splitlines()[0], *(f"  - {r}" for r in ex.reasons)]))
        hints += [h for h in ex.hints if h not in hints and not h.startswith("to allow it")]
    if hints:
        say("\n   What lint says about the shop's policies (the usual cause of such surprises):")
        for h in hints:
            say(f"   * {h}")

    from stockade.lab import demo_tiers

    return demo_tiers.run(cfg, shop, say)
