"""The plan as `ip -batch` scripts: a pure function, so the wiring can be read and tested alone.

`root_script` runs in the host's namespace but only creates namespaces and links *inside* them
(``link add ... netns X``), so the host never holds a lab interface, even for a moment.
`ns_scripts` gives each namespace's own configuration, run as ``ip -n NS -batch -``.

Every IPv6 address is added ``nodad``: duplicate address detection would hold it "tentative"
(unusable) for a second or two after the link comes up, and a probe in that window would report
a block that no policy made. Nothing in a lab can duplicate an address: the plan assigns them.

A host-network pod is its node's namespace: nothing here makes, wires or removes anything for it.
"""

from __future__ import annotations

from stockade.lab.topology import POD_BRIDGE, ExternalPlan, NodePlan, Plan, PodPlan, family_of, host_len, prefix_len

BRIDGE = "br0"  # the fabric's, in the fabric namespace
Scripts = dict[str, list[str]]  # netns -> ip batch lines


def _add_to(scripts: Scripts, netns: str, *lines: str) -> None:
    scripts.setdefault(netns, []).extend(lines)


def _addr(ip: str, plen: int, dev: str) -> str:
    return f"addr add {ip}/{plen} dev {dev}" + (" nodad" if family_of(ip) == "ipv6" else "")


def _host_route(ip: str, dev: str, src: str | None = None) -> str:
    """A route to one host on the link `dev` (IPv6 routes have no scope)."""
    fam = family_of(ip)
    line = f"route add {ip}/{host_len(fam)} dev {dev}" + (" scope link" if fam == "ipv4" else "")
    return line + (f" src {src}" if src else "")


def _default_via(gateway: str, dev: str) -> str:
    return f"route add {'default' if family_of(gateway) == 'ipv4' else '::/0'} via {gateway} dev {dev}"


def wired(pods: list[PodPlan]) -> list[PodPlan]:
    """The pods with a namespace and link of their own: all but the host-network ones."""
    return [p for p in pods if not p.host_network]


def pod_root_lines(plan: Plan, pod: PodPlan) -> list[str]:
    node = plan.node(pod.node)
    return [
        f"netns add {pod.netns}",
        f"link add {pod.veth} netns {node.netns} type veth peer name eth0 netns {pod.netns}",
    ]


def pod_lines(plan: Plan, pod: PodPlan, node: NodePlan) -> list[str]:
    bridged = plan.topology == "bridge"
    lines = ["link set lo up"]
    # Routed: the pod's addresses are host routes, its gateway is reached by a link route.
    # Bridged: the pod holds its node's prefix, so its node's other pods are on-link.
    lines += [_addr(ip, prefix_len(family_of(ip)) if bridged else host_len(family_of(ip)), "eth0") for ip in pod.ips]
    lines.append("link set eth0 up")
    if not bridged:
        lines += [_host_route(gw, "eth0") for gw in node.gateways]
    lines += [_default_via(gw, "eth0") for gw in node.gateways]
    return lines


def node_side_pod_lines(plan: Plan, pod: PodPlan, node: NodePlan) -> list[str]:
    if plan.topology == "bridge":
        # hairpin: a pod reaching itself through a Service is DNATed back to its own port while
        # bridged (br_netfilter), which the bridge allows only in hairpin mode (kubelet's hairpin-veth)
        return [
            f"link set {pod.veth} master {POD_BRIDGE}",
            f"link set {pod.veth} type bridge_slave hairpin on",
            f"link set {pod.veth} up",
        ]
    # Every pod-facing veth holds the same gateway addresses: the pod resolves them and the node
    # answers; the host routes send the pod's traffic back down its own veth.
    lines = [_addr(gw, host_len(family_of(gw)), pod.veth) for gw in node.gateways]
    lines.append(f"link set {pod.veth} up")
    lines += [_host_route(ip, pod.veth, src=gw) for ip, gw in zip(pod.ips, node.gateways, strict=True)]
    return lines


def root_namespaces(plan: Plan) -> list[str]:
    """The namespaces of the fabric, the external host and the nodes (each pod's comes with its link)."""
    return [f"netns add {ns}" for ns in (plan.fabric_netns, plan.external.netns, *(n.netns for n in plan.nodes))]


def root_links(plan: Plan) -> list[str]:
    """The links, once `root_namespaces` exist (and the nodes' sysctls are set, so the links
    inherit them)."""
    lines = [f"link add {BRIDGE} netns {plan.fabric_netns} type bridge"]
    lines += [
        f"link add {n.fabric_veth} netns {plan.fabric_netns} type veth peer name eth0 address {fabric_mac(n)} "
        f"netns {n.netns}"
        for n in plan.nodes
    ]
    ext = plan.external
    lines.append(
        f"link add {ext.veth} address {EXTERNAL_GW_MAC} netns {plan.node(ext.via_node).netns} type veth "
        f"peer name eth0 address {EXTERNAL_MAC} netns {ext.netns}"
    )
    for pod in wired(plan.pods):
        lines += pod_root_lines(plan, pod)
    return lines


def root_script(plan: Plan) -> list[str]:
    return root_namespaces(plan) + root_links(plan)


def _node_lines(plan: Plan, node: NodePlan, ext: ExternalPlan) -> list[str]:
    lines = ["link set lo up"]
    lines += [_addr(ip, prefix_len(family_of(ip)), "eth0") for ip in node.ips]
    lines.append("link set eth0 up")
    for other in plan.nodes:
        if other != node:
            lines += [_neigh(ip, fabric_mac(other), "eth0") for ip in other.ips]
            lines += [
                f"route add {cidr} via {ip} dev eth0" for cidr, ip in zip(other.pod_cidrs, other.ips, strict=True)
            ]
    if plan.topology == "bridge":
        # The pods' bridge holds the gateways with their prefix: the node's pod ranges are on-link.
        # A fixed address: a bridge otherwise takes the lowest of its ports', and changes it when
        # that port goes (a deleted pod), leaving every pod with a stale neighbour for its gateway.
        lines.append(f"link add {POD_BRIDGE} address {bridge_mac(node)} type bridge")
        lines += [_addr(gw, prefix_len(family_of(gw)), POD_BRIDGE) for gw in node.gateways]
        lines.append(f"link set {POD_BRIDGE} up")
    if node.name == ext.via_node:
        lines += [_addr(gw, host_len(family_of(gw)), ext.veth) for gw in ext.gateways]
        lines.append(f"link set {ext.veth} up")
        lines += [_neigh(ip, EXTERNAL_MAC, ext.veth) for ip in ext.ips]
        lines += [_host_route(ip, ext.veth, src=gw) for ip, gw in zip(ext.ips, ext.gateways, strict=True)]
    else:
        via = plan.node(ext.via_node)
        lines += [
            f"route add {ip}/{host_len(family_of(ip))} via {hop} dev eth0"
            for ip, hop in zip(ext.ips, via.ips, strict=True)
        ]
    return lines


# The links between nodes, and to the external host, have fixed addresses and permanent
# neighbour entries. The kernel's neighbour tables are shared by every namespace on the host
# (net.ipv{4,6}.neigh.default.gc_thresh3, 1024 by default, counts all of them): a mesh of nodes
# learning each other dynamically needs about nodes² entries per family (twice that for IPv6,
# whose link-local addresses are learnt too), and a 50-node dual-stack lab overflowed it
# ("ndisc_cache: neighbor table overflow": cross-node traffic lost). Permanent entries are not
# counted. Pods' neighbours stay dynamic: between pods of one bridge, neighbour discovery crosses
# the node's rules, which must let it through.
EXTERNAL_MAC = "0a:58:0a:ef:00:02"  # the external host's eth0 (cf. 10.239.0.2)
EXTERNAL_GW_MAC = "0a:58:0a:ef:00:01"  # node 1's end of that link


def fabric_mac(node: NodePlan) -> str:
    """A node's fabric address: 0a:58 and then its IPv4 fabric address's bytes."""
    return f"0a:58:0a:f0:00:{10 + node.index:02x}"


def _neigh(ip: str, mac: str, dev: str) -> str:
    return f"neigh add {ip} lladdr {mac} dev {dev} nud permanent"


def bridge_mac(node: NodePlan) -> str:
    """The pod bridge's MAC: locally administered, 0a:58 and then the IPv4 gateway's bytes (as the
    bridge CNI plugin derives its own), so unique per node."""
    return f"0a:58:0a:f4:{node.index:02x}:01"


def ns_scripts(plan: Plan) -> Scripts:
    scripts: Scripts = {}
    _add_to(scripts, plan.fabric_netns, "link set lo up", f"link set {BRIDGE} up")
    for n in plan.nodes:
        _add_to(scripts, plan.fabric_netns, f"link set {n.fabric_veth} master {BRIDGE}", f"link set {n.fabric_veth} up")
        _add_to(scripts, n.netns, *_node_lines(plan, n, plan.external))
    ext = plan.external
    _add_to(scripts, ext.netns, "link set lo up")
    _add_to(scripts, ext.netns, *(_addr(ip, host_len(family_of(ip)), "eth0") for ip in ext.ips))
    _add_to(scripts, ext.netns, "link set eth0 up")
    _add_to(scripts, ext.netns, *(_neigh(gw, EXTERNAL_GW_MAC, "eth0") for gw in ext.gateways))
    _add_to(scripts, ext.netns, *(_host_route(gw, "eth0") for gw in ext.gateways))
    _add_to(scripts, ext.netns, *(_default_via(gw, "eth0") for gw in ext.gateways))
    for pod in wired(plan.pods):
        node = plan.node(pod.node)
        _add_to(scripts, pod.netns, *pod_lines(plan, pod, node))
        _add_to(scripts, node.netns, *node_side_pod_lines(plan, pod, node))
    return scripts


def add_pods_scripts(plan: Plan, pods: list[PodPlan]) -> tuple[list[str], Scripts]:
    """Root lines and per-namespace scripts that wire `pods` into an already-built lab."""
    root: list[str] = []
    scripts: Scripts = {}
    for pod in wired(pods):
        node = plan.node(pod.node)
        root += pod_root_lines(plan, pod)
        _add_to(scripts, pod.netns, *pod_lines(plan, pod, node))
        _add_to(scripts, node.netns, *node_side_pod_lines(plan, pod, node))
    return root, scripts


def remove_pods_scripts(plan: Plan, pods: list[PodPlan]) -> tuple[list[str], Scripts]:
    """Deleting the node's end destroys the pair at once (and takes it off the pod bridge), even
    if something still holds the pod's namespace open; then the namespace's name goes. A
    host-network pod's namespace is its node's: untouched."""
    scripts: Scripts = {}
    for pod in wired(pods):
        _add_to(scripts, plan.node(pod.node).netns, f"link del {pod.veth}")
    return [f"netns del {pod.netns}" for pod in wired(pods)], scripts


def node_sysctls(plan: Plan) -> dict[str, str]:
    """Set in each node's namespace before its links are made (new links inherit `default`).

    Nodes route between pods, other nodes and the external host, in each family of the lab
    (writing `all` also sets `default`). With IPv6, a node forwarding a packet to one of its pods
    solicits the pod's address from its own link-local address (the packet's source is not its
    own), and sends nothing while that is still tentative: with duplicate address detection on,
    the first IPv6 connections to pods were lost for seconds after the links came up (measured:
    from the external host to each of 9 pods of a 3-node dual-stack lab, all 9 IPv6 attempts
    timed out, twice in a row; none with it off). The lab's addresses cannot collide.

    The bridge-netfilter switches stay at the kernel's defaults: making bridged traffic visible
    to the rules is the agent's job to check, and a lab that set them would hide a node that
    fails it."""
    out = {}
    if "ipv4" in plan.families:
        out["net/ipv4/ip_forward"] = "1"
    if "ipv6" in plan.families:
        out["net/ipv6/conf/all/forwarding"] = "1"
        out["net/ipv6/conf/all/accept_dad"] = "0"
        out["net/ipv6/conf/default/accept_dad"] = "0"
    return out


Check = tuple[str, str, str]  # (what, netns, address): a connection from netns to address must get an answer


def settle_checks(plan: Plan, pods: list[PodPlan] | None = None) -> list[Check]:
    """The IPv6 paths whose neighbours `netio.settle` resolves before the lab says it is up:
    every pod (or just `pods`, added to a running lab) to its node's gateway, so pod and node
    learn each other. The links between nodes and to the external host need none: their
    neighbours are permanent. IPv4's ARP needs no such care: nothing there is tentative."""
    if "ipv6" not in plan.families:
        return []
    return [
        (f"{pod.key} to its gateway", pod.netns, _v6(plan.node(pod.node).gateways))
        for pod in wired(plan.pods if pods is None else pods)
    ]


def _v6(ips: tuple[str, ...]) -> str:
    return next(ip for ip in ips if family_of(ip) == "ipv6")
