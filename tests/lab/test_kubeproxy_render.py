"""The lab's kube-proxy renderer: kube-proxy's nftables semantics from Services and EndpointSlices
built here (pure), and the script loaded by the real nft in a namespace of its own (root)."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest

from stockade.lab.kubeproxy import objects, render

NODES = [
    objects.Node("node-1", ("10.240.0.11", "fd00:10:240::b"), ("10.244.1.0/24", "fd00:10:244:1::/64")),
    objects.Node("node-2", ("10.240.0.12", "fd00:10:240::c"), ("10.244.2.0/24", "fd00:10:244:2::/64")),
]


def svc(name: str, ports: list[dict[str, Any]], ips: tuple[str, ...] = ("10.96.0.10",), **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "x"}, "spec": {"clusterIPs": list(ips), "ports": ports, **spec}}


def ep(ip: str, node: str, ready: bool | None = True) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [ip], "nodeName": node}
    if ready is not None:
        out["conditions"] = {"ready": ready}
    return out


def eps(
    name: str, service: str, eplist: list[dict[str, Any]], port: int = 8080, fam: str = "IPv4", pname: str = ""
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "x", "labels": {"kubernetes.io/service-name": service}},
        "addressType": fam,
        "ports": [{"name": pname, "port": port, "protocol": "TCP"}],
        "endpoints": eplist,
    }


def rendered(node: str, services: list[dict[str, Any]], slices: list[dict[str, Any]]) -> str:
    parsed = [s for s in map(objects.parse_slice, slices) if s is not None]
    return render.render(node, NODES, [objects.parse_service(s) for s in services], parsed)


def chain(text: str, name: str) -> list[str]:
    m = re.search(r"^  chain " + re.escape(name) + r" \{\n(.*?)^  \}", text, re.S | re.M)
    assert m, f"no chain {name}"
    return [line.strip() for line in m.group(1).splitlines()]


def elements(text: str, name: str) -> list[str]:
    m = re.search(r"^  (?:map|set) " + re.escape(name) + r" \{\n(.*?)^  \}", text, re.S | re.M)
    assert m, f"no map {name}"
    found = re.search(r"elements = \{ (.*) \}", m.group(1))
    return found.group(1).split(", ") if found else []


AB = [eps("a-1", "a", [ep("10.244.1.5", "node-1"), ep("10.244.2.5", "node-2"), ep("10.244.2.9", "node-2", False)])]


def test_cluster_ip_dnat_to_ready_endpoints_and_no_snat_from_pods() -> None:
    text = rendered("node-1", [svc("a", [{"port": 80, "targetPort": 8080}])], AB)
    assert text.startswith("table inet stockade-kube-proxy {}\ndelete table inet stockade-kube-proxy\n")
    assert "inet stockade " not in text and "table inet stockade {" not in text  # the agent's table is not touched
    assert elements(text, "service-ips4") == ["10.96.0.10 . tcp . 80 : goto svc4-x/a/tcp/80"]
    lines = chain(text, "svc4-x/a/tcp/80")
    # masquerade only what does not come from the pod network: pod -> ClusterIP keeps its source
    assert lines[0] == "ip saddr != @cluster-cidrs4 jump mark-for-masquerade"
    assert elements(text, "cluster-cidrs4") == ["10.244.1.0/24", "10.244.2.0/24"]
    assert lines[1] == (
        "numgen random mod 2 vmap { 0 : goto ep4-x/a/tcp/80/10.244.1.5/8080, 1 : goto ep4-x/a/tcp/80/10.244.2.5/8080 }"
    )
    assert "10.244.2.9" not in text  # not ready
    assert chain(text, "ep4-x/a/tcp/80/10.244.2.5/8080") == [
        "ip saddr 10.244.2.5 jump mark-for-masquerade",  # hairpin only
        "meta l4proto tcp dnat ip to 10.244.2.5:8080",
    ]
    assert chain(text, "nat-prerouting")[0] == "type nat hook prerouting priority dstnat; policy accept;"
    assert chain(text, "nat-output")[0] == "type nat hook output priority -100; policy accept;"
    assert chain(text, "masquerading") == [
        "meta mark & 0x4000 == 0 return",
        "meta mark set meta mark ^ 0x4000",
        "masquerade fully-random",
    ]
    assert elements(text, "no-endpoint-services4") == []


def test_unset_ready_counts_as_ready() -> None:
    text = rendered("node-1", [svc("a", [{"port": 80}])], [eps("a-1", "a", [ep("10.244.1.5", "node-1", None)])])
    assert chain(text, "svc4-x/a/tcp/80")[1] == "goto ep4-x/a/tcp/80/10.244.1.5/8080"


def test_no_ready_endpoint_rejects_cluster_ip_and_node_port() -> None:
    service = svc("a", [{"port": 80, "nodePort": 30001}], type="NodePort")
    down = [eps("a-1", "a", [ep("10.244.1.5", "node-1", False)])]
    text = rendered("node-1", [service], down)
    assert elements(text, "no-endpoint-services4") == ["10.96.0.10 . tcp . 80 : goto reject-chain"]
    assert elements(text, "no-endpoint-nodeports4") == ["tcp . 30001 : goto reject-chain"]
    assert elements(text, "service-ips4") == [] and elements(text, "service-nodeports4") == []
    assert chain(text, "reject-chain") == ["reject with icmpx port-unreachable"]
    assert "ct state new jump endpoints-check" in chain(text, "filter-forward")
    assert "ct state new jump nodeport-endpoints-check" in chain(text, "filter-input")


def test_node_port_cluster_masquerades_to_any_endpoint() -> None:
    service = svc("a", [{"port": 80, "nodePort": 30001}], type="NodePort")
    for node, ip in (("node-1", "10.240.0.11"), ("node-2", "10.240.0.12")):
        text = rendered(node, [service], AB)
        assert elements(text, "nodeport-ips4") == [ip]  # each node answers on its own address
        assert elements(text, "service-nodeports4") == ["tcp . 30001 : goto ext4-x/a/tcp/80"]
        lines = chain(text, "ext4-x/a/tcp/80")
        assert lines[0] == "jump mark-for-masquerade"
        assert "10.244.1.5/8080" in lines[1] and "10.244.2.5/8080" in lines[1]
    assert "ip daddr @nodeport-ips4 meta l4proto . th dport vmap @service-nodeports4" in chain(text, "services")


def test_node_port_local_keeps_client_ip_and_uses_local_endpoints_only() -> None:
    service = svc("a", [{"port": 80, "nodePort": 30001}], type="NodePort", externalTrafficPolicy="Local")
    one = chain(rendered("node-1", [service], AB), "ext4-x/a/tcp/80")
    assert "jump mark-for-masquerade" not in one  # no unconditional SNAT: the client IP is kept
    assert one[-1] == "goto ep4-x/a/tcp/80/10.244.1.5/8080"  # the outside world: this node's endpoint
    assert one[0].startswith("ip saddr @cluster-cidrs4 numgen random mod 2")  # pods: every endpoint
    assert one[1:3] == [
        "fib saddr type local jump mark-for-masquerade",
        "fib saddr type local numgen random mod 2 vmap "
        "{ 0 : goto ep4-x/a/tcp/80/10.244.1.5/8080, 1 : goto ep4-x/a/tcp/80/10.244.2.5/8080 }",
    ]
    two = chain(rendered("node-2", [service], AB), "ext4-x/a/tcp/80")
    assert "10.244.1.5/8080" not in two[-1] and "10.244.2.5/8080" in two[-1]
    only_on_2 = [eps("a-1", "a", [ep("10.244.2.5", "node-2")])]
    assert chain(rendered("node-1", [service], only_on_2), "ext4-x/a/tcp/80")[-1] == "drop"  # none here


def test_internal_traffic_policy_local() -> None:
    service = svc("a", [{"port": 80}], internalTrafficPolicy="Local")
    text = rendered("node-1", [service], AB)
    assert chain(text, "svc4-x/a/tcp/80")[-1] == "goto ep4-x/a/tcp/80/10.244.1.5/8080"


def test_dual_stack_service_renders_both_families() -> None:
    service = svc("a", [{"port": 80, "nodePort": 30001}], ("10.96.0.10", "fd00:10:96::a"), type="NodePort")
    slices = [*AB, eps("a-2", "a", [ep("fd00:10:244:2::5", "node-2")], fam="IPv6")]
    text = rendered("node-1", [service], slices)
    assert elements(text, "service-ips6") == ["fd00:10:96::a . tcp . 80 : goto svc6-x/a/tcp/80"]
    assert elements(text, "nodeport-ips6") == ["fd00:10:240::b"]
    assert elements(text, "service-nodeports6") == ["tcp . 30001 : goto ext6-x/a/tcp/80"]
    assert chain(text, "svc6-x/a/tcp/80") == [
        "ip6 saddr != @cluster-cidrs6 jump mark-for-masquerade",
        "goto ep6-x/a/tcp/80/fd00.10.244.2..5/8080",
    ]
    assert (
        chain(text, "ep6-x/a/tcp/80/fd00.10.244.2..5/8080")[1] == "meta l4proto tcp dnat ip6 to [fd00:10:244:2::5]:8080"
    )
    v4 = chain(text, "svc4-x/a/tcp/80")[1]
    assert "fd00" not in v4  # an IPv4 ClusterIP only ever leads to IPv4 endpoints


def test_named_target_ports_resolve_per_slice_and_protocols_are_kept() -> None:
    service = svc(
        "r",
        [
            {"name": "amqp", "port": 5672, "targetPort": 5672},
            {"name": "metrics", "port": 9090, "targetPort": "exporter"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ],
    )
    sl = {
        "metadata": {"name": "r-1", "namespace": "x", "labels": {"kubernetes.io/service-name": "r"}},
        "addressType": "IPv4",
        "ports": [
            {"name": "amqp", "port": 5672, "protocol": "TCP"},
            {"name": "metrics", "port": 9091, "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"},
        ],
        "endpoints": [ep("10.244.1.7", "node-1")],
    }
    text = rendered("node-1", [service], [sl])
    assert chain(text, "ep4-x/r/tcp/9090/10.244.1.7/9091")[1] == "meta l4proto tcp dnat ip to 10.244.1.7:9091"
    assert chain(text, "ep4-x/r/udp/53/10.244.1.7/5353")[1] == "meta l4proto udp dnat ip to 10.244.1.7:5353"
    assert "10.96.0.10 . udp . 53 : goto svc4-x/r/udp/53" in elements(text, "service-ips4")


def test_headless_and_external_name_services_are_not_proxied() -> None:
    services = [svc("h", [{"port": 80}], ("None",)), svc("e", [{"port": 80}], (), type="ExternalName")]
    text = rendered("node-1", services, [eps("h-1", "h", [ep("10.244.1.5", "node-1")])])
    assert elements(text, "service-ips4") == [] and elements(text, "no-endpoint-services4") == []


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (svc("a", [{"port": 70000}]), "Service x/a: spec.ports[0].port: 70000 is not a port number"),
        (svc("a", [{"port": 80, "protocol": "ICMP"}]), "Service x/a: spec.ports[0]: protocol 'ICMP' is not one of"),
        (svc("a", [{"port": 80}], ("10.96.0.300",)), "Service x/a: spec.clusterIPs[0]: '10.96.0.300' is not an IP"),
        (svc("a", [], ("10.96.0.1", "10.96.0.2")), "two addresses of one family"),
    ],
)
def test_bad_services_name_the_field(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(objects.ObjectError, match=re.escape(message)):
        objects.parse_service(obj)


def test_bad_slices_name_the_field() -> None:
    with pytest.raises(objects.ObjectError, match=r"EndpointSlice x/a-1: endpoints\[0\].addresses\[0\] fd00::1 is not"):
        objects.parse_slice(eps("a-1", "a", [ep("fd00::1", "node-1")]))
    with pytest.raises(objects.ObjectError, match=r"EndpointSlice x/a-1: ports\[0\].port: 0 is not a port"):
        objects.parse_slice(eps("a-1", "a", [], port=0))
    assert objects.parse_slice(eps("a-1", "a", [], fam="FQDN")) is None


@pytest.mark.root
def test_the_real_nft_loads_it_and_replaces_it_in_one_transaction() -> None:
    netns = f"st{os.environ.get('STOCKADE_TEST_SLOT', '')}-kp-render"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        service = svc("a", [{"port": 80, "nodePort": 30001}], ("10.96.0.10", "fd00:10:96::a"), type="NodePort")
        local = svc(
            "b",
            [{"port": 81, "nodePort": 30002, "protocol": "UDP"}],
            ("10.96.0.11",),
            type="NodePort",
            externalTrafficPolicy="Local",
        )
        empty = svc("c", [{"port": 82, "protocol": "SCTP"}], ("10.96.0.12",))
        slices = [
            *AB,
            eps("a-2", "a", [ep("fd00:10:244:2::5", "node-2")], fam="IPv6"),
            eps("b-1", "b", [ep("10.244.2.6", "node-2")], port=81),
        ]
        for text in (rendered("node-1", [service, local, empty], slices), rendered("node-1", [empty], [])):
            res = subprocess.run(
                ["ip", "netns", "exec", netns, "nft", "-f", "-"],
                input=text,
                text=True,
                capture_output=True,
                check=False,
            )
            assert res.returncode == 0, res.stderr
        listing = subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "list", "ruleset"], text=True, capture_output=True, check=True
        ).stdout
        assert "svc4-x/a/tcp/80" not in listing  # replaced, not merged
        assert "10.96.0.12 . sctp . 82 : goto reject-chain" in listing
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
