"""Reading Kubernetes manifests: files or folders, multi-document YAML, with errors that name
the file and the document. Deployments become one pod per replica; pods get nodes and IPs.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stockade.manifests import bounded_yaml, shapes

POLICY_KINDS = {"Namespace", "Pod", "Deployment", "NetworkPolicy", "ClusterNetworkPolicy", "Node"}
# Read for lint (a policy naming a Service's port instead of the container port) and the lab's
# kube-proxy; they change no rule.
SERVICE_KINDS = {"Service"}
# Kinds that are valid Kubernetes but say nothing about network policy: read and set aside.
IGNORED_KINDS = {
    "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
    "ClusterRoleBinding", "Ingress", "PersistentVolumeClaim", "PersistentVolume", "HorizontalPodAutoscaler",
    "PodDisruptionBudget", "Endpoints", "EndpointSlice", "LimitRange", "ResourceQuota", "StorageClass",
    "CustomResourceDefinition", "Job", "CronJob", "Node",
}  # fmt: skip
WORKLOAD_KINDS = {"StatefulSet", "ReplicaSet", "DaemonSet", "ReplicationController"}
CLUSTER_SCOPED = {"Namespace", "Node", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "ClusterNetworkPolicy"}  # fmt: skip


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the document."""


@dataclass(frozen=True)
class Document:
    obj: dict[str, Any]
    source: str  # "path/to/file.yaml: document 3"


def _files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml", ".json") and f.is_file())
            if not found:
                raise ManifestError(f"{p}: folder holds no .yaml, .yml or .json files")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise ManifestError(f"{p}: no such file or folder")
    return out


def _describe(obj: Mapping[str, Any]) -> str:
    """``NetworkPolicy default/foo`` for messages, from fields already known to be strings."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name = meta.get("name") if isinstance(meta.get("name"), str) else "?"
    if obj.get("kind") in CLUSTER_SCOPED:
        return f"{obj.get('kind')} {name}"
    ns = meta.get("namespace")
    return f"{obj.get('kind')} {ns if isinstance(ns, str) and ns else 'default'}/{name}"


def _read_yaml(f: Path) -> list[Any]:
    try:
        size = f.stat().st_size
        if size > bounded_yaml.MAX_BYTES:
            raise ManifestError(f"{f}: {size:,} bytes; manifests over {bounded_yaml.MAX_BYTES:,} bytes are refused")
        text = f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{f}: cannot read: {e}") from None
    try:
        return bounded_yaml.load_all(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        if isinstance(e, yaml.reader.ReaderError):
            code = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or " ")
            problem = f"character #x{code:04x} at position {e.position}: {e.reason}"
        raise ManifestError(f"{f}: invalid YAML in document {getattr(e, 'document', 1)}{where}: {problem}") from None
    except RecursionError:
        raise ManifestError(f"{f}: invalid YAML: nested too deeply") from None


def _check(obj: Any, src: str) -> Document:
    """``obj`` as a Document, or the ManifestError naming its file, document and field."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{src}: expected a Kubernetes object (a mapping), got {type(obj).__name__}")
    kind = obj.get("kind")
    if not kind:
        raise ManifestError(f"{src}: has no kind")
    if not isinstance(kind, str):
        raise ManifestError(f"{src}: kind: must be a string, got {type(kind).__name__}")
    if kind not in POLICY_KINDS | SERVICE_KINDS | IGNORED_KINDS | WORKLOAD_KINDS:
        raise ManifestError(f"{src}: unknown kind {kind!r:.60}; expected one of {', '.join(sorted(POLICY_KINDS))}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict | None) or not (meta or {}).get("name"):
        raise ManifestError(f"{src}: {kind} has no metadata.name")
    try:
        shapes.check_object(obj)
    except shapes.ShapeError as e:
        raise ManifestError(f"{src} ({_describe(obj)}): {e}") from None
    return Document(obj, src)


def read_documents(paths: Iterable[str | Path]) -> list[Document]:
    """Every Kubernetes object in the given files and folders (List kinds are flattened), each
    checked for the shape of what the loader reads; ManifestError names file, document and field."""
    docs: list[Document] = []
    for f in _files(paths):
        for i, obj in enumerate(_read_yaml(f), start=1):
            if obj is None:
                continue
            src = f"{f}: document {i}"
            kind = obj.get("kind") if isinstance(obj, dict) else None
            if isinstance(kind, str) and (kind == "List" or (kind.endswith("List") and "items" in obj)):
                items = obj.get("items") or []
                if not isinstance(items, list):
                    raise ManifestError(f"{src} ({kind}): items: must be a list")
                docs.extend(_check(item, f"{src}, item {j}") for j, item in enumerate(items))
                continue
            docs.append(_check(obj, src))
    return docs


@dataclass
class Cluster:
    """The objects that matter to network policy, as API-shaped dicts."""

    namespaces: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    policies: list[dict[str, Any]]
    ignored: list[str]
    services: list[dict[str, Any]] = field(default_factory=list)  # namespace set ("default" if none)
    cluster_policies: list[dict[str, Any]] = field(default_factory=list)  # ClusterNetworkPolicies
    nodes: list[dict[str, Any]] = field(default_factory=list)  # Node objects the manifests hold

    def objects(self) -> list[dict[str, Any]]:
        """What the policy engine compiles (Services are separate: they change no rule)."""
        return self.namespaces + self.pods + self.policies


def _namespace_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")


def expand_workload(obj: Mapping[str, Any], source: str = "") -> list[dict[str, Any]]:
    """A Deployment (or another replicated workload) as its pods: one per replica."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        raise ManifestError(f"{source}: spec.replicas must be a whole number, got {replicas!r}")
    tmeta = template.get("metadata") or {}
    pods = []
    for i in range(replicas):
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{meta['name']}-{i}" if replicas > 1 else str(meta["name"]),
                    "namespace": _namespace_of(obj),
                    "labels": dict(tmeta.get("labels") or {}),
                    "annotations": dict(tmeta.get("annotations") or {}),
                },
                "spec": copy.deepcopy(template.get("spec") or {}),
            }
        )
    return pods


def build_cluster(docs: Sequence[Document]) -> Cluster:
    namespaces: dict[str, dict[str, Any]] = {}
    pods: dict[str, dict[str, Any]] = {}
    policies: dict[str, dict[str, Any]] = {}
    services: dict[str, dict[str, Any]] = {}
    cnps: dict[str, dict[str, Any]] = {}
    nodes: dict[str, dict[str, Any]] = {}
    ignored: list[str] = []
    for d in docs:
        kind = d.obj["kind"]
        if kind == "Namespace":
            namespaces[d.obj["metadata"]["name"]] = copy.deepcopy(d.obj)
        elif kind == "Pod":
            pod = copy.deepcopy(d.obj)
            pods[f"{_namespace_of(pod)}/{pod['metadata']['name']}"] = pod
        elif kind in ("Deployment", *WORKLOAD_KINDS):
            for pod in expand_workload(d.obj, d.source):
                pods[f"{_namespace_of(pod)}/{pod['metadata']['name']}"] = pod
        elif kind == "NetworkPolicy":
            pol = copy.deepcopy(d.obj)
            pol.setdefault("metadata", {}).setdefault("namespace", "default")
            policies[f"{_namespace_of(pol)}/{pol['metadata']['name']}"] = pol
        elif kind == "Service":
            svc = copy.deepcopy(d.obj)
            svc.setdefault("metadata", {}).setdefault("namespace", "default")
            services[f"{_namespace_of(svc)}/{svc['metadata']['name']}"] = svc
        elif kind == "ClusterNetworkPolicy":
            cnps[d.obj["metadata"]["name"]] = copy.deepcopy(d.obj)
        elif kind == "Node":
            nodes[d.obj["metadata"]["name"]] = copy.deepcopy(d.obj)
        else:
            ignored.append(f"{kind} {d.obj['metadata']['name']}")
    # Pods in namespaces that have no Namespace document still need one.
    for pod in pods.values():
        ns = _namespace_of(pod)
        namespaces.setdefault(ns, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for pol in policies.values():
        ns = _namespace_of(pol)
        namespaces.setdefault(ns, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    return Cluster(
        list(namespaces.values()),
        list(pods.values()),
        list(policies.values()),
        ignored,
        list(services.values()),
        list(cnps.values()),
        list(nodes.values()),
    )


def node_names(count: int) -> list[str]:
    return [f"node-{i + 1}" for i in range(count)]


def node_address(index: int, version: int) -> str:
    """The index-th node's own address (0-based), outside every pod range: 192.168.0.<index+1>
    (past 254 nodes: 192.168.<hi>.<lo>), fd00:192:168::<index+1>."""
    if version == 6:
        return str(ipaddress.IPv6Address("fd00:192:168::") + index + 1)
    return str(ipaddress.IPv4Address("192.168.0.0") + index + 1 + (index + 1) // 255)


def complete_nodes(
    nodes: Sequence[dict[str, Any]], names: Sequence[str], pods: Sequence[dict[str, Any]], family: str = "ipv4"
) -> list[dict[str, Any]]:
    """Node objects for ``names`` and every node a pod names, the manifests' own (``nodes``) kept
    as written; one made up has the ``kubernetes.io/hostname`` label and an InternalIP per family
    of ``family`` (`node_address`). Host-network pods without addresses get their node's."""
    by_name = {n["metadata"]["name"]: n for n in nodes}
    wanted = list(dict.fromkeys([*by_name, *names, *((p.get("spec") or {}).get("nodeName") for p in pods)]))
    versions = {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}[family]
    out = []
    for i, name in enumerate(n for n in wanted if n):
        node = by_name.get(name)
        if node is None:
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "status": {"addresses": [{"type": "InternalIP", "address": node_address(i, v)} for v in versions]},
            }
        out.append(node)
    addresses = {
        n["metadata"]["name"]: [
            a["address"] for a in (n.get("status") or {}).get("addresses") or () if a.get("type") != "Hostname"
        ]
        for n in out
    }
    for pod in pods:
        spec, status = pod.get("spec") or {}, pod.setdefault("status", {})
        ips = addresses.get(spec.get("nodeName") or "", [])
        if spec.get("hostNetwork") and ips and not status.get("podIP") and not status.get("podIPs"):
            status["podIP"] = ips[0]
            status["podIPs"] = [{"ip": ip} for ip in ips]
            status.setdefault("phase", "Running")
    return out


IP_FAMILIES = ("ipv4", "ipv6", "dual")


def node_pod_cidr(index: int) -> ipaddress.IPv4Network:
    """The pod range of the index-th node (0-based): 10.244.<index+1>.0/24."""
    return ipaddress.IPv4Network(f"10.244.{index + 1}.0/24")


def node_pod_cidr6(index: int) -> ipaddress.IPv6Network:
    """The IPv6 pod range of the index-th node (0-based): fd00:10:244:<index+1>::/64, as the lab's."""
    return ipaddress.IPv6Network(f"fd00:10:244:{index + 1:x}::/64")


def _host_addresses(index: int, host: int, family: str) -> list[str]:
    """Host number ``host`` of a node's range in each family (the same number in both, IPv4 first)."""
    v4 = str(node_pod_cidr(index).network_address + host)
    v6 = str(node_pod_cidr6(index).network_address + host)
    return {"ipv4": [v4], "ipv6": [v6], "dual": [v4, v6]}[family]


def assign_addresses(pods: Sequence[dict[str, Any]], nodes: Sequence[str], family: str = "ipv4") -> None:
    """Give pods without a node one (round-robin) and pods without an IP addresses from their node's
    ranges: ``family`` ipv4, ipv6 or dual (``status.podIP`` the first, ``status.podIPs`` all).

    Pods that name a node keep it; IPs already set are kept. Pods become Running. A node's /24
    holds 253 pods; the rest (and pods of the 256th node on) get addresses from SPILL_V4/SPILL_V6.
    """
    if not nodes:
        raise ValueError("need at least one node")
    if family not in IP_FAMILIES:
        raise ValueError(f"IP family {family!r}: use one of {', '.join(IP_FAMILIES)}")
    index = {n: i for i, n in enumerate(nodes)}
    used: dict[str, set[str]] = {n: set() for n in nodes}
    for pod in pods:
        status = pod.get("status") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if node in used:
            used[node] |= {str(e.get("ip")) for e in status.get("podIPs") or [] if isinstance(e, dict)}
            if status.get("podIP"):
                used[node].add(str(status["podIP"]))
    rr = spill = 0
    full: set[str] = set()  # nodes whose /24 has no free address left
    cursor: dict[str, int] = {}  # per node: the host number to look from next
    for pod in sorted(pods, key=lambda p: (_namespace_of(p), p["metadata"]["name"])):
        # `spec: null` / `status: null` are absent fields in YAML as in the API (shapes.py allows them)
        if pod.get("spec") is None:
            pod["spec"] = {}
        if pod.get("status") is None:
            pod["status"] = {}
        spec, status = pod["spec"], pod["status"]
        node = spec.get("nodeName")
        if not node:
            node = nodes[rr % len(nodes)]
            rr += 1
            spec["nodeName"] = node
        if node not in index:
            index[node] = len(index)
            used[node] = set()
        if spec.get("hostNetwork"):
            continue
        if not status.get("podIP") and not status.get("podIPs"):
            found = None if node in full else _free_in_range(index[node], family, used[node], cursor.get(node, 2))
            if found is None:
                full.add(node)
                ips, spill = _spill_address(spill, family, used)
            else:
                ips, cursor[node] = found[0], found[1] + 1
            status["podIP"] = ips[0]
            status["podIPs"] = [{"ip": ip} for ip in ips]
            used[node] |= set(ips)
        status.setdefault("phase", "Running")


# Where pods go once their node's /24 is full or a node has no /24 (the 256th node on): one pool
# for all nodes, so any number of pods fits on any number of nodes (the engine keys on IPs, not
# on which range an address came from).
SPILL_V4 = ipaddress.IPv4Network("10.128.0.0/9")
SPILL_V6 = ipaddress.IPv6Network("fd00:10:245::/64")


def _free_in_range(index: int, family: str, used: set[str], start: int) -> tuple[list[str], int] | None:
    """The first free host from ``start`` on (hosts below it were taken already) and its number."""
    if index > 254:
        return None
    for host in range(start, 255):  # .1 is the node's gateway address
        ips = _host_addresses(index, host, family)
        if not used & set(ips):
            return ips, host
    return None


def _spill_address(k: int, family: str, used: Mapping[str, set[str]]) -> tuple[list[str], int]:
    """The first spill-pool address from number ``k`` on that no pod holds, and the next number."""
    while k < SPILL_V4.num_addresses - 2:
        k += 1
        v4, v6 = str(SPILL_V4.network_address + k), str(SPILL_V6.network_address + k)
        ips = {"ipv4": [v4], "ipv6": [v6], "dual": [v4, v6]}[family]
        if not any(ip in u for u in used.values() for ip in ips):
            return ips, k
    raise ValueError(f"more pods than the {SPILL_V4.num_addresses:,} addresses of the spill range {SPILL_V4}")


def declared_ports(pod: Mapping[str, Any]) -> list[tuple[int, str]]:
    """Every (containerPort, protocol) the pod declares."""
    out = set()
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("containerPort"):
                out.add((int(p["containerPort"]), str(p.get("protocol") or "TCP")))
    return sorted(out)
