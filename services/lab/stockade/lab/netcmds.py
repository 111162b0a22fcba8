"""The plan as `ip -batch` scripts: a pure function, so the wiring can be read and tested alone.

`root_script` runs in the host's namespace but only creates namespaces and links *inside* them
(``link add ... netns X``), so the host never holds a lab interface, even for a moment.
`ns_scripts` gives each namespace's own configuration, run as ``ip -n NS -batch -``.
"""

from __future__ import annotations

from stockade.lab.topology import ExternalPlan, NodePlan, Plan, PodPlan

BRIDGE = "br0"
Scripts = dict[str, list[str]]  # netns -> ip batch lines


def _add_to(scripts: Scripts, netns: str, *lines: str) -> None:
    scripts.setdefault(netns, []).extend(lines)


def pod_root_lines(plan: Plan, pod: PodPlan) -> list[str]:
    node = plan.node(pod.node)
    return [
        f"netns add {pod.netns}",
        f"link add {pod.veth} netns {node.netns} type veth peer name eth0 netns {pod.netns}",
    ]


def pod_lines(pod: PodPlan, node: NodePlan) -> list[str]:
    return [
        "link set lo up",
        f"addr add {pod.ip}/32 dev eth0",
        "link set eth0 up",
        f"route add {node.gateway}/32 dev eth0 scope link",
        f"route add default via {node.gateway} dev eth0",
    ]


def node_side_pod_lines(pod: PodPlan, node: NodePlan) -> list[str]:
    # Every pod-facing veth holds the same gateway address: the pod ARPs for it and the node
    # answers; the /32 route sends the pod's traffic back down its own veth.
    return [
        f"addr add {node.gateway}/32 dev {pod.veth}",
        f"link set {pod.veth} up",
        f"route add {pod.ip}/32 dev {pod.veth} scope link src {node.gateway}",
    ]


def root_script(plan: Plan) -> list[str]:
    lines = [f"netns add {plan.fabric_netns}", f"netns add {plan.external.netns}"]
    lines += [f"netns add {n.netns}" for n in plan.nodes]
    lines.append(f"link add {BRIDGE} netns {plan.fabric_netns} type bridge")
    lines += [
        f"link add {n.fabric_veth} netns {plan.fabric_netns} type veth peer name eth0 netns {n.netns}"
        for n in plan.nodes
    ]
    ext = plan.external
    lines.append(
        f"link add {ext.veth} netns {plan.node(ext.via_node).netns} type veth peer name eth0 netns {ext.netns}"
    )
    for pod in plan.pods:
        lines += pod_root_lines(plan, pod)
    return lines


def _node_lines(plan: Plan, node: NodePlan, ext: ExternalPlan) -> list[str]:
    lines = ["link set lo up", f"addr add {node.ip}/24 dev eth0", "link set eth0 up"]
    lines += [f"route add {other.pod_cidr} via {other.ip} dev eth0" for other in plan.nodes if other != node]
    if node.name == ext.via_node:
        lines += [
            f"addr add {ext.gateway}/32 dev {ext.veth}",
            f"link set {ext.veth} up",
            f"route add {ext.ip}/32 dev {ext.veth} scope link src {ext.gateway}",
        ]
    else:
        lines.append(f"route add {ext.ip}/32 via {plan.node(ext.via_node).ip} dev eth0")
    return lines


def ns_scripts(plan: Plan) -> Scripts:
    scripts: Scripts = {}
    _add_to(scripts, plan.fabric_netns, "link set lo up", f"link set {BRIDGE} up")
    for n in plan.nodes:
        _add_to(scripts, plan.fabric_netns, f"link set {n.fabric_veth} master {BRIDGE}", f"link set {n.fabric_veth} up")
        _add_to(scripts, n.netns, *_node_lines(plan, n, plan.external))
    ext = plan.external
    _add_to(
        scripts,
        ext.netns,
        "link set lo up",
        f"addr add {ext.ip}/32 dev eth0",
        "link set eth0 up",
        f"route add {ext.gateway}/32 dev eth0 scope link",
        f"route add default via {ext.gateway} dev eth0",
    )
    for pod in plan.pods:
        node = plan.node(pod.node)
        _add_to(scripts, pod.netns, *pod_lines(pod, node))
        _add_to(scripts, node.netns, *node_side_pod_lines(pod, node))
    return scripts


def add_pods_scripts(plan: Plan, pods: list[PodPlan]) -> tuple[list[str], Scripts]:
    """Root lines and per-namespace scripts that wire `pods` into an already-built lab."""
    root: list[str] = []
    scripts: Scripts = {}
    for pod in pods:
        node = plan.node(pod.node)
        root += pod_root_lines(plan, pod)
        _add_to(scripts, pod.netns, *pod_lines(pod, node))
        _add_to(scripts, node.netns, *node_side_pod_lines(pod, node))
    return root, scripts


def remove_pods_scripts(plan: Plan, pods: list[PodPlan]) -> tuple[list[str], Scripts]:
    """Deleting the node's end destroys the pair at once, even if something still holds the pod's
    namespace open; then the namespace's name goes."""
    scripts: Scripts = {}
    for pod in pods:
        _add_to(scripts, plan.node(pod.node).netns, f"link del {pod.veth}")
    return [f"netns del {pod.netns}" for pod in pods], scripts


# Sysctls: nodes route between pods, other nodes and the external host.
NODE_SYSCTLS = {"net/ipv4/ip_forward": "1"}
