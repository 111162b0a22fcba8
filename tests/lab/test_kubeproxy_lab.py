"""The lab's kube-proxy with real packets: ClusterIP from pods (no SNAT) and from the node itself,
NodePort from the external host with externalTrafficPolicy Cluster (masqueraded) and Local (client
IP kept, this node's endpoints only), rejection without endpoints, and endpoints that follow the
pods (`lab apply --wait` / `lab delete --wait` return with the nodes already in step).

Which backend took a connection, and from which source address, is seen by listeners this test
opens inside the backend pods (port 7070, not served by the lab's pod servers)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import select
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade.lab import kubeapi, nsenter, probe
from stockade.lab.state import LabState

from .lab_ops import lab_state
from .labenv import Lab

pytestmark = pytest.mark.root

SINK = 7070
CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x, labels: {app: client}}
spec:
  containers: [{name: c, ports: [{containerPort: 9}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        ports: [{containerPort: 8080, name: http}, {containerPort: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: sink, namespace: x}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 7000, targetPort: 7070, nodePort: 30070}]
---
apiVersion: v1
kind: Service
metadata: {name: sink-local, namespace: x}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 7001, targetPort: 7070, nodePort: 30071}]
---
apiVersion: v1
kind: Service
metadata: {name: sink-udp, namespace: x}
spec:
  selector: {app: web}
  ports: [{port: 7002, targetPort: 7070, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: nothing, namespace: x}
spec:
  selector: {app: none}
  ports: [{port: 80}]
"""

SCALED = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        ports: [{containerPort: 8080, name: http}, {containerPort: 53, protocol: UDP}]
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("kubeproxy")
    lab = Lab(tmp, "st-kpl-")
    lab.run("down", check=False)
    out = lab.run("up", "--nodes", "3", "--cluster", lab.write("cluster.yaml", CLUSTER), timeout=120).stdout
    assert "kube-proxy: 5 services programmed on every node" in out, out
    yield lab
    lab.run("down", check=False)


def services(st: LabState) -> dict[str, dict[str, Any]]:
    api = kubeapi.Client(f"http://127.0.0.1:{st.ports['apiserver']}")
    return {s["metadata"]["name"]: s for s in api.list("Service", "x")}


def cluster_ip(st: LabState, name: str) -> str:
    return str(services(st)[name]["spec"]["clusterIP"])


def netns_of(st: LabState, who: str) -> str:
    assert st.plan is not None
    if who == "external":
        return st.plan.external.netns
    if who.startswith("node-"):
        return st.plan.node(who).netns
    pod = st.plan.pod(f"x/{who}")
    assert pod is not None, who
    return pod.netns


@contextlib.contextmanager
def listeners(st: LabState, pods: list[str], af: int = socket.AF_INET) -> Iterator[dict[str, socket.socket]]:
    socks = {}
    try:
        for name in pods:
            s = nsenter.socket_in(netns_of(st, name), af, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::" if af == socket.AF_INET6 else "0.0.0.0", SINK))
            s.listen(16)
            socks[name] = s
        yield socks
    finally:
        for s in socks.values():
            s.close()


def seen_by(
    src: str, st: LabState, ip: str, port: int, socks: dict[str, socket.socket], wait: float = 10.0
) -> tuple[str, str] | None:
    """Connect from `src` to ip:port; (backend pod that accepted it, the source address it saw),
    or None when the connection was not made within `wait` seconds."""
    c = nsenter.socket_in(netns_of(st, src), socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    with c:
        c.settimeout(wait)
        try:
            c.connect((ip, port))
        except OSError:
            return None
        ready, _, _ = select.select(list(socks.values()), [], [], wait)
        assert ready, "connected, but no listener got it"
        who = next(n for n, s in socks.items() if s is ready[0])
        conn, peer = ready[0].accept()
        conn.close()
        return who, peer[0]


@contextlib.contextmanager
def udp_listeners(st: LabState, pods: list[str]) -> Iterator[dict[str, socket.socket]]:
    socks = {}
    try:
        for name in pods:
            s = nsenter.socket_in(netns_of(st, name), socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", SINK))
            socks[name] = s
        yield socks
    finally:
        for s in socks.values():
            s.close()


def udp_seen(c: socket.socket, ip: str, port: int, socks: dict[str, socket.socket], wait: float = 10.0) -> str | None:
    """Send one datagram on `c`; the backend pod whose listener got it."""
    c.sendto(b"stockade", (ip, port))
    ready, _, _ = select.select(list(socks.values()), [], [], wait)
    if not ready:
        return None
    ready[0].recvfrom(64)
    return next(n for n, s in socks.items() if s is ready[0])


def connect_error(src: str, st: LabState, ip: str, port: int, wait: float = 10.0) -> type[OSError] | None:
    c = nsenter.socket_in(netns_of(st, src), socket.AF_INET, socket.SOCK_STREAM)
    with c:
        c.settimeout(wait)
        try:
            c.connect((ip, port))
        except OSError as e:
            return type(e)
    return None


def pod_ip(st: LabState, name: str) -> str:
    assert st.plan is not None
    pod = st.plan.pod(f"x/{name}")
    assert pod is not None
    return pod.ip


def node_ip(st: LabState, name: str) -> str:
    assert st.plan is not None
    return st.plan.node(name).ip


def gateway(st: LabState, name: str) -> str:
    assert st.plan is not None
    return st.plan.node(name).gateway


def ruleset(st: LabState, node: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", netns_of(st, node), "nft", "list", "table", "inet", "stockade-kube-proxy"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_cluster_ip_from_pods_keeps_the_source_and_spreads_over_endpoints(shop: Lab) -> None:
    st = lab_state(shop)
    ip = cluster_ip(st, "sink")
    with listeners(st, ["web-0", "web-1"]) as socks:
        seen = [seen_by("client", st, ip, 7000, socks) for _ in range(24)]
    assert all(s is not None for s in seen)
    assert {s[1] for s in seen if s} == {pod_ip(st, "client")}  # pod -> ClusterIP: no SNAT
    # numgen random over two endpoints: 24 connections all on one has odds 2 * 2^-24
    assert {s[0] for s in seen if s} == {"web-0", "web-1"}


def test_cluster_ip_hairpin_and_from_the_node_itself(shop: Lab) -> None:
    st = lab_state(shop)
    ip = cluster_ip(st, "sink")
    with listeners(st, ["web-0", "web-1"]) as socks:
        hits = [seen_by("web-0", st, ip, 7000, socks) for _ in range(24)]
        # A pod reaching itself through its Service is masqueraded to its node's gateway (else
        # the reply would never leave it); reaching another pod it keeps its own address.
        assert set(hits) == {("web-0", gateway(st, "node-2")), ("web-1", pod_ip(st, "web-0"))}
        # The node's own connections (nat output hook) are masqueraded: not from a pod.
        from_node = {seen_by("node-2", st, ip, 7000, socks) for _ in range(24)}
        assert from_node == {("web-0", gateway(st, "node-2")), ("web-1", node_ip(st, "node-2"))}


def test_node_port_cluster_masquerades_local_keeps_the_client(shop: Lab) -> None:
    st = lab_state(shop)
    assert st.plan is not None
    ext = st.plan.external.ip
    with listeners(st, ["web-0", "web-1"]) as socks:
        for node in ("node-1", "node-2", "node-3"):
            got = seen_by("external", st, node_ip(st, node), 30070, socks)
            assert got is not None, node
            # Cluster: SNAT to the node's address towards the backend, so the reply comes back
            assert got[1] in (node_ip(st, node), gateway(st, node)) and got[1] != ext
        # Local: node-2 and node-3 each have one endpoint, and the backend sees the client itself
        assert seen_by("external", st, node_ip(st, "node-2"), 30071, socks) == ("web-0", ext)
        assert seen_by("external", st, node_ip(st, "node-3"), 30071, socks) == ("web-1", ext)
        # node-1 has none: dropped (no SNAT to somewhere else, as kube-proxy does)
        assert seen_by("external", st, node_ip(st, "node-1"), 30071, socks, wait=2) is None


def test_a_service_without_endpoints_rejects_until_it_is_deleted(shop: Lab) -> None:
    st = lab_state(shop)
    ip = cluster_ip(st, "nothing")
    assert connect_error("client", st, ip, 80) is ConnectionRefusedError  # ICMP port unreachable
    assert f"{ip} . tcp . 80 : goto reject-chain" in ruleset(st, "node-2")
    gone = shop.run(
        "delete", "--wait", "-f", shop.write("nothing.yaml", "kind: Service\nmetadata: {name: nothing, namespace: x}\n")
    )
    assert "service/x/nothing deleted" in gone.stdout and "services in step on every node" in gone.stdout
    assert ip not in ruleset(st, "node-2") and "nothing" not in services(st)


def test_endpoints_follow_the_pods(shop: Lab) -> None:
    st = lab_state(shop)
    out = shop.run("apply", "--wait", "-f", shop.write("scaled.yaml", SCALED)).stdout
    assert "pod/x/web-2 created" in out and "services in step on every node" in out
    st = lab_state(shop)
    web2 = pod_ip(st, "web-2")
    assert st.plan is not None and st.plan.pod("x/web-2").node == "node-1"  # type: ignore[union-attr]
    assert f"dnat ip to {web2}:8080" in ruleset(st, "node-3")  # every node knows the new endpoint
    ext = st.plan.external.ip
    with listeners(st, ["web-0", "web-1", "web-2"]) as socks:
        assert seen_by("external", st, node_ip(st, "node-1"), 30071, socks) == ("web-2", ext)
    # A long-lived UDP "connection" through the Service, held by conntrack on web-0 ...
    udp_ip = cluster_ip(st, "sink-udp")
    with udp_listeners(st, ["web-0", "web-1", "web-2"]) as socks:
        stuck = None
        for _ in range(32):  # numgen random over 3: the odds of never hitting web-0 are (2/3)^32
            c = nsenter.socket_in(netns_of(st, "client"), socket.AF_INET, socket.SOCK_DGRAM)
            if udp_seen(c, udp_ip, 7002, socks) == "web-0":
                stuck = c
                break
            c.close()
        assert stuck is not None
        socks.pop("web-0").close()
        gone = shop.run(
            "delete", "--wait", "-f", shop.write("gone.yaml", "kind: Pod\nmetadata: {name: web-0, namespace: x}\n")
        )
        assert "services in step on every node" in gone.stdout
        # ... goes to a live endpoint at its next datagram: its conntrack entries went with web-0
        with stuck:
            assert udp_seen(stuck, udp_ip, 7002, socks) in ("web-1", "web-2")
    st = lab_state(shop)
    assert "10.244.2.2" not in ruleset(st, "node-1")
    with listeners(st, ["web-1", "web-2"]) as socks:
        assert seen_by("external", st, node_ip(st, "node-2"), 30071, socks, wait=2) is None  # its endpoint went
        seen = {seen_by("client", st, cluster_ip(st, "sink"), 7000, socks) for _ in range(16)}
    assert seen <= {("web-1", pod_ip(st, "client")), ("web-2", pod_ip(st, "client"))} and None not in seen


def test_kubectl_shows_the_allocated_addresses(shop: Lab) -> None:
    st = lab_state(shop)
    kubeconfig = Path(shop.dir) / "kubeconfig"
    res = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "services", "-A", "-o", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    import json

    items = {i["metadata"]["name"]: i for i in json.loads(res.stdout)["items"]}
    assert items["web"]["spec"]["clusterIP"] == cluster_ip(st, "web")
    assert items["web"]["spec"]["ports"][0]["nodePort"] == 30080


DUAL = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x, labels: {app: client}}
spec:
  containers: [{name: c, ports: [{containerPort: 9}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  selector: {app: web}
  ports: [{port: 80, targetPort: http, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: sink-local, namespace: x}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  ipFamilyPolicy: RequireDualStack
  selector: {app: web}
  ports: [{port: 7001, targetPort: 7070, nodePort: 30071}]
"""


@pytest.mark.parametrize("topology", ["routed", "bridge"])
def test_dual_stack_services(tmp_path: Path, topology: str) -> None:
    lab = Lab(tmp_path, f"st-kp6{topology[0]}-")
    lab.run("down", check=False)
    try:
        cluster = lab.write("dual.yaml", DUAL)
        lab.run("up", "--nodes", "3", "--ip-family", "dual", "--topology", topology, "--cluster", cluster, timeout=120)
        st = lab_state(lab)
        assert st.plan is not None
        web = services(st)["web"]["spec"]["clusterIPs"]
        assert [ipaddress.ip_address(ip).version for ip in web] == [4, 6]
        # every cell open: a patient timeout costs nothing, and a busy machine may take over 1 s
        doc = lab.json("probe", "--via-service", "--from", "x/client,external", "--to", "x/web", "--timeout", "10")
        got = {(r["from"], r["via"], r["family"], r["node"]): r["connected"] for r in doc["results"]}
        want = {("x/client", "ClusterIP", f, None): True for f in ("ipv4", "ipv6")}
        want |= {("external", "NodePort", f, n.name): True for f in ("ipv4", "ipv6") for n in st.plan.nodes}
        assert got == want
        # IPv6 Local NodePort: the backend sees the external host's own IPv6 address
        ext6 = next(ip for ip in st.plan.external.ips if ":" in ip)
        node2 = next(ip for ip in st.plan.node("node-2").ips if ":" in ip)
        node1 = next(ip for ip in st.plan.node("node-1").ips if ":" in ip)
        with listeners(st, ["web-0", "web-1"], socket.AF_INET6) as socks:
            assert seen_by("external", st, node2, 30071, socks) == ("web-0", ext6)
            assert seen_by("external", st, node1, 30071, socks, wait=2) is None  # no endpoint on node-1
            client6 = next(ip for ip in st.plan.pod("x/client").ips if ":" in ip)  # type: ignore[union-attr]
            sink6 = services(st)["sink-local"]["spec"]["clusterIPs"][1]
            assert seen_by("client", st, sink6, 7001, socks)[1] == client6  # type: ignore[index]
        # Backends reaching their own Service, both families: itself included (hairpin; on a
        # bridge that needs the port's hairpin mode, as kubelet sets it).
        for af, ip in ((socket.AF_INET, services(st)["sink-local"]["spec"]["clusterIPs"][0]), (socket.AF_INET6, sink6)):
            with listeners(st, ["web-0", "web-1"], af) as socks:
                hits = {seen_by("web-0", st, ip, 7001, socks) for _ in range(24)}
            assert None not in hits and {h[0] for h in hits if h} == {"web-0", "web-1"}, (ip, hits)
    finally:
        lab.run("down", check=False)


STALE = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 9}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: x, labels: {app: web}}
spec:
  nodeName: node-2
  containers: [{name: c, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def _nft(netns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script, text=True, check=True)


def _syn_sent(netns: str, src: str, dst: str) -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "conntrack", "-L", "-p", "tcp", "--orig-src", src, "--orig-dst", dst],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if "SYN_SENT" in line]


def test_a_probe_never_rides_an_earlier_attempts_stale_dnat(tmp_path: Path) -> None:
    """The e2e flake "svc/x/b (to no backend): probed open", constructed: an earlier probe's SYN
    was DNATed on the client's node and dropped further on, so that node keeps a SYN_SENT entry
    (120 s) with the DNAT to the endpoint of then; the endpoint leaves the Service; a later SYN
    with the same 5-tuple is a retransmit to conntrack and still goes there (kube-proxy clears UDP
    entries only, so a cluster does this too). The kernel reuses a port for a destination by
    chance (its choice jumps about every 10 s); here the client's port range is one port pair,
    so a probe that let the kernel choose would get 40000 both times, every time."""
    lab = Lab(tmp_path, "st-kps-")
    lab.run("down", check=False)
    try:
        lab.run("up", "--nodes", "2", "--cluster", lab.write("stale.yaml", STALE), timeout=120)
        st = lab_state(lab)
        ip, client, web = cluster_ip(st, "web"), netns_of(st, "client"), netns_of(st, "web")
        nsenter.write_sysctl(client, "net/ipv4/ip_local_port_range", "40000 40001")
        _nft(
            web, "table inet st-test {\n chain in {\n type filter hook input priority 0;\n tcp dport 8080 drop\n }\n}\n"
        )
        assert not asyncio.run(probe.probe_one(client, ip, "TCP", 80))  # dropped at web, after DNAT on node-1
        stale = _syn_sent(netns_of(st, "node-1"), pod_ip(st, "client"), ip)
        assert len(stale) == 1 and f"src={pod_ip(st, 'web')} " in stale[0], stale  # DNATed to web, unreplied
        moved = STALE.replace("labels: {app: web}", "labels: {app: moved}")
        assert (
            "services in step on every node" in lab.run("apply", "--wait", "-f", lab.write("moved.yaml", moved)).stdout
        )
        assert f"{ip} . tcp . 80 : goto reject-chain" in ruleset(st, "node-1")  # no endpoint: rejected
        _nft(web, "delete table inet st-test\n")  # web would answer now, if anything still led there
        assert not asyncio.run(probe.probe_one(client, ip, "TCP", 80))
        # What that probe would have met with the earlier one's port (as a client in a cluster does):
        sport = int(stale[0].split("sport=")[1].split()[0])
        c = nsenter.socket_in(client, socket.AF_INET, socket.SOCK_STREAM)
        with c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            c.bind(("0.0.0.0", sport))
            c.settimeout(5)
            c.connect((ip, 80))  # through the stale entry to web, although the Service has no endpoint
    finally:
        lab.run("down", check=False)
