"""kube-proxy's nftables mode for one node, as a pure function: Services + EndpointSlices + Nodes in,
one ``nft -f`` transaction out that replaces the table ``inet stockade-kube-proxy`` (and touches
nothing else: the agent's ``inet stockade`` table is its own).

Layout, after kube-proxy's nftables proxier (both families in one ``inet`` table)::

    chain nat-prerouting   hook prerouting priority dstnat   (pods and the outside world)
    chain nat-output       hook output priority dstnat       (the node itself)
        -> chain services:  ClusterIP . proto . port  vmap @service-ips4/6
                            this node's IPs: proto . nodePort  vmap @service-nodeports4/6
    chain svcF-NS/NAME/PROTO/PORT   ClusterIP: masquerade only what does not come from a pod
                                    (not pod -> ClusterIP), then numgen random over ready endpoints
    chain extF-NS/NAME/PROTO/PORT   NodePort. Cluster: masquerade, any ready endpoint.
                                    Local: this node's endpoints only, client IP kept (none: drop);
                                    pods and the node itself still reach every endpoint, as kube-proxy
    chain epF-...          one per endpoint: masquerade hairpin (a pod reaching itself), DNAT
    chain nat-postrouting  hook postrouting priority srcnat: masquerade what carries the mark
    chain filter-input / filter-forward / filter-output   (priority filter - 5)
        a Service with no ready endpoint rejects (ICMP port unreachable), as kube-proxy does

DNAT happens at ``dstnat`` (-100), before the forward hook where the agent's policy chains run
(priority ``filter``, 0): policies see the backend pod's address and container port.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stockade.lab.kubeproxy.objects import Node, Service, ServicePort, Slice, family

TABLE = "inet stockade-kube-proxy"
MASQ_MARK = 0x4000
FILTER_PRIORITY = "filter - 5"
_IP = {4: "ip", 6: "ip6"}
_ADDR = {4: "ipv4_addr", 6: "ipv6_addr"}


@dataclass(frozen=True, order=True)
class Backend:
    ip: str
    port: int
    node: str | None


def _fam_ip(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if family(ip) == 6 else f"{ip}:{port}"


def _id(svc: Service, sp: ServicePort) -> str:
    return f"{svc.namespace}/{svc.name}/{sp.protocol.lower()}/{sp.port}"


def _ep_chain(fam: int, svc: Service, sp: ServicePort, b: Backend) -> str:
    return f"ep{fam}-{_id(svc, sp)}/{b.ip.replace(':', '.')}/{b.port}"


def backends(svc: Service, sp: ServicePort, fam: int, slices: Iterable[Slice]) -> list[Backend]:
    """The ready endpoints of one Service port in one family (the slice port of the same name and
    protocol gives the target port, resolved per slice as the EndpointSlice controller does)."""
    out: set[Backend] = set()
    for sl in slices:
        if sl.family != fam or sl.namespace != svc.namespace or sl.service != svc.name:
            continue
        port = next((p.port for p in sl.ports if p.name == sp.name and p.protocol == sp.protocol), None)
        if port is None:
            continue
        out.update(Backend(ep.ip, port, ep.node) for ep in sl.endpoints if ep.ready)
    return sorted(out)


def _pick(fam: int, svc: Service, sp: ServicePort, chosen: Sequence[Backend]) -> str:
    """Spread new connections evenly over `chosen` (conntrack keeps each on its endpoint)."""
    names = [_ep_chain(fam, svc, sp, b) for b in chosen]
    if len(names) == 1:
        return f"goto {names[0]}"
    arms = ", ".join(f"{i} : goto {n}" for i, n in enumerate(names))
    return f"numgen random mod {len(names)} vmap {{ {arms} }}"


class _Script:
    def __init__(self) -> None:
        self.chains: dict[str, list[str]] = {}
        self.elements: dict[str, list[str]] = defaultdict(list)

    def chain(self, name: str, *lines: str) -> None:
        self.chains[name] = list(lines)


def render(node: str, nodes: Sequence[Node], services: Iterable[Service], slices: Iterable[Slice]) -> str:
    """The transaction for `node`: its NodePorts answer on its own InternalIPs; the pod CIDRs of all
    `nodes` tell pod traffic (never masqueraded towards a ClusterIP) from the rest."""
    slices = list(slices)
    me = next((n for n in nodes if n.name == node), None)
    node_ips = {f: sorted(ip for ip in (me.ips if me else ()) if family(ip) == f) for f in (4, 6)}
    cidrs = {f: sorted({c for n in nodes for c in n.pod_cidrs if ipaddress.ip_network(c).version == f}) for f in (4, 6)}
    s = _Script()
    for svc in sorted(services, key=lambda x: x.key):
        for cip in svc.cluster_ips:
            fam = family(cip)
            for sp in svc.ports:
                _service_port(s, node, fam, cip, svc, sp, backends(svc, sp, fam, slices), bool(cidrs[fam]), node_ips)
    return _text(s, node_ips, cidrs)


def _service_port(
    s: _Script,
    node: str,
    fam: int,
    cip: str,
    svc: Service,
    sp: ServicePort,
    eps: list[Backend],
    have_cidrs: bool,
    node_ips: dict[int, list[str]],
) -> None:
    ip, proto = _IP[fam], sp.protocol.lower()
    local = [b for b in eps if b.node == node]
    nodeport = sp.node_port is not None and bool(node_ips[fam])
    if not eps:  # kube-proxy rejects: the client learns at once that nothing serves it
        s.elements[f"no-endpoint-services{fam}"].append(f"{cip} . {proto} . {sp.port} : goto reject-chain")
        if nodeport:
            s.elements[f"no-endpoint-nodeports{fam}"].append(f"{proto} . {sp.node_port} : goto reject-chain")
        return
    for b in eps:
        s.chain(
            _ep_chain(fam, svc, sp, b),
            f"{ip} saddr {b.ip} jump mark-for-masquerade",  # hairpin: a pod reaching itself
            f"meta l4proto {proto} dnat {ip} to {_fam_ip(b.ip, b.port)}",
        )
    name = f"svc{fam}-{_id(svc, sp)}"
    s.elements[f"service-ips{fam}"].append(f"{cip} . {proto} . {sp.port} : goto {name}")
    internal = local if svc.internal_local else eps
    s.chain(
        name,
        # From outside the pod network (the node itself, the external host): masquerade, so the
        # reply comes back through this node. Pod -> ClusterIP keeps its source.
        *([f"{ip} saddr != @cluster-cidrs{fam} jump mark-for-masquerade"] if have_cidrs else []),
        _pick(fam, svc, sp, internal) if internal else "drop",  # internalTrafficPolicy Local, none here
    )
    if not nodeport:
        return
    ext = f"ext{fam}-{_id(svc, sp)}"
    s.elements[f"service-nodeports{fam}"].append(f"{proto} . {sp.node_port} : goto {ext}")
    if not svc.external_local:
        s.chain(ext, "jump mark-for-masquerade", _pick(fam, svc, sp, eps))
        return
    s.chain(
        ext,
        # Pods and the node itself reach a Local NodePort like any Service (kube-proxy does too).
        *([f"{ip} saddr @cluster-cidrs{fam} {_pick(fam, svc, sp, eps)}"] if have_cidrs else []),
        "fib saddr type local jump mark-for-masquerade",
        f"fib saddr type local {_pick(fam, svc, sp, eps)}",
        _pick(fam, svc, sp, local) if local else "drop",  # the outside world: this node's pods only
    )


def _decl(name: str, lines: list[str], elements: list[str]) -> list[str]:
    body = [f"    {line}" for line in lines]
    if elements:
        body.append(f"    elements = {{ {', '.join(sorted(elements))} }}")
    return [f"  {name} {{", *body, "  }"]


def _text(s: _Script, node_ips: dict[int, list[str]], cidrs: dict[int, list[str]]) -> str:
    out = [f"table {TABLE} {{}}", f"delete table {TABLE}", f"table {TABLE} {{"]
    for f in (4, 6):
        out += _decl(f"set cluster-cidrs{f}", [f"type {_ADDR[f]}; flags interval;"], cidrs[f])
        out += _decl(f"set nodeport-ips{f}", [f"type {_ADDR[f]};"], node_ips[f])
        out += _decl(
            f"map service-ips{f}",
            [f"type {_ADDR[f]} . inet_proto . inet_service : verdict;"],
            s.elements[f"service-ips{f}"],
        )
        out += _decl(
            f"map no-endpoint-services{f}",
            [f"type {_ADDR[f]} . inet_proto . inet_service : verdict;"],
            s.elements[f"no-endpoint-services{f}"],
        )
        for m in ("service-nodeports", "no-endpoint-nodeports"):
            out += _decl(f"map {m}{f}", ["type inet_proto . inet_service : verdict;"], s.elements[f"{m}{f}"])
    fixed = {
        "reject-chain": ["reject with icmpx port-unreachable"],
        "mark-for-masquerade": [f"meta mark set meta mark | {MASQ_MARK:#x}"],
        "masquerading": [
            f"meta mark & {MASQ_MARK:#x} == 0 return",
            f"meta mark set meta mark ^ {MASQ_MARK:#x}",
            "masquerade fully-random",
        ],
        "services": [
            "ip daddr . meta l4proto . th dport vmap @service-ips4",
            "ip6 daddr . meta l4proto . th dport vmap @service-ips6",
            "ip daddr @nodeport-ips4 meta l4proto . th dport vmap @service-nodeports4",
            "ip6 daddr @nodeport-ips6 meta l4proto . th dport vmap @service-nodeports6",
        ],
        "endpoints-check": [
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services4",
            "ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services6",
        ],
        "nodeport-endpoints-check": [
            "ip daddr @nodeport-ips4 meta l4proto . th dport vmap @no-endpoint-nodeports4",
            "ip6 daddr @nodeport-ips6 meta l4proto . th dport vmap @no-endpoint-nodeports6",
        ],
        "nat-prerouting": ["type nat hook prerouting priority dstnat; policy accept;", "jump services"],
        # -100 is dstnat; nft accepts that name only on prerouting.
        "nat-output": ["type nat hook output priority -100; policy accept;", "jump services"],
        "nat-postrouting": ["type nat hook postrouting priority srcnat; policy accept;", "jump masquerading"],
        "filter-input": [
            f"type filter hook input priority {FILTER_PRIORITY}; policy accept;",
            "ct state new jump endpoints-check",
            "ct state new jump nodeport-endpoints-check",
        ],
        "filter-forward": [
            f"type filter hook forward priority {FILTER_PRIORITY}; policy accept;",
            "ct state new jump endpoints-check",
        ],
        "filter-output": [
            f"type filter hook output priority {FILTER_PRIORITY}; policy accept;",
            "ct state new jump endpoints-check",
            "ct state new jump nodeport-endpoints-check",
        ],
    }
    # Endpoint chains first: a chain must exist before a rule jumps to it.
    for name in sorted(s.chains, key=lambda n: (not n.startswith("ep"), n)):
        out += _decl(f"chain {name}", s.chains[name], [])
    for name, lines in fixed.items():
        out += _decl(f"chain {name}", lines, [])
    out.append("}")
    return "\n".join(out) + "\n"


@dataclass(frozen=True, order=True)
class UdpFlow:
    """Where conntrack may hold UDP flows DNATed to an endpoint: to a ClusterIP (address, port)
    or to a NodePort (address None)."""

    address: str | None
    port: int
    endpoint: str


def udp_flows(node: str, nodes: Sequence[Node], services: Iterable[Service], slices: Iterable[Slice]) -> set[UdpFlow]:
    """Every (Service address, endpoint) pair a UDP flow may be DNATed along on `node`. When one
    goes, its conntrack entries must go too, or a long-lived UDP client keeps sending to an
    endpoint that is no more (kube-proxy clears them the same way; TCP ends on its own)."""
    slices = list(slices)
    out: set[UdpFlow] = set()
    me = next((n for n in nodes if n.name == node), None)
    for svc in services:
        for cip in svc.cluster_ips:
            fam = family(cip)
            for sp in svc.ports:
                if sp.protocol != "UDP":
                    continue
                for b in backends(svc, sp, fam, slices):
                    out.add(UdpFlow(cip, sp.port, b.ip))
                    if sp.node_port is not None and me is not None and any(family(ip) == fam for ip in me.ips):
                        out.add(UdpFlow(None, sp.node_port, b.ip))
    return out


def conntrack_delete(flow: UdpFlow) -> list[str]:
    """The `conntrack` command that forgets the flows of `flow`."""
    fam = ["-f", "ipv6"] if family(flow.endpoint) == 6 else []
    dst = ["--orig-dst", flow.address] if flow.address else []
    return ["conntrack", "-D", *fam, "-p", "udp", *dst, "--orig-port-dst", str(flow.port), "--dst-nat", flow.endpoint]


def summary(services: Iterable[Service], slices: Iterable[Slice]) -> str:
    services, slices = list(services), list(slices)
    ready = sum(1 for sl in slices for ep in sl.endpoints if ep.ready)
    return f"{len(services)} services, {len(slices)} endpoint slices, {ready} ready endpoints"
