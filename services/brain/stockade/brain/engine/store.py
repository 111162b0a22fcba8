"""The object store: the cluster objects the engine was given, as admitted, and who owns each address.

It holds pods, namespaces, nodes, services and policies; the objects refused by the shape checks
(and why); and address ownership: which endpoint pod (or refused, isolated pod) each IP belongs
to. It knows nothing of groups, chains or nodes' models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stockade.brain.engine import validate
from stockade.brain.engine.api import Rejection
from stockade.brain.engine.cnp import ClusterNetworkPolicy
from stockade.brain.engine.objects import NamespaceInfo, NodeInfo, PodInfo, implicit_namespace, parse_pod, refused_pod
from stockade.brain.engine.policy import Policy
from stockade.brain.engine.selectors import LabelIndex, Selector
from stockade.brain.engine.services import ServiceInfo

# How a refused pod's rejection ends when nothing can be dispatched for it (a gap said loudly).
UNFILTERED = "not enforced: its traffic cannot be filtered because "

# A pod whose owned addresses changed: (key, as it was, as it is); None: not an endpoint.
EndpointChange = tuple[str, PodInfo | None, PodInfo | None]


class Store:
    def __init__(self) -> None:
        self.ns: dict[str, NamespaceInfo] = {}
        self.ns_errors: dict[str, Rejection] = {}
        self.ns_labels = LabelIndex()
        self.pods: dict[str, PodInfo] = {}
        self.pods_by_ns: dict[str, set[str]] = {}
        self.claims: dict[str, set[str]] = {}  # ip -> candidate pod keys
        # Endpoint pods (candidates owning at least one of their IPs) -> the pod restricted to the
        # addresses it owns: what its dispatch entries and set elements are made of.
        self.endpoint: dict[str, PodInfo] = {}
        self.ip_owner: dict[str, str] = {}  # per address: a dual-stack pod owns each of its IPs
        # Refused pods (deny_all) owning at least one of their IPs -> the pod restricted to those:
        # dispatched to deny-all chains, in no address group (fail closed, never a peer).
        self.isolated: dict[str, PodInfo] = {}
        self.policies: dict[str, Policy] = {}
        self.rejected: dict[str, Rejection] = {}  # policies that failed to parse, by key
        # Objects refused by the shape checks (engine/validate.py), by "Kind namespace/name".
        self.refused: dict[str, Rejection] = {}
        self.node_objects: set[str] = set()
        self.node_info: dict[str, NodeInfo] = {}  # labels and addresses, for nodes peers
        self.cnps: dict[str, ClusterNetworkPolicy] = {}  # ClusterNetworkPolicies by name
        self.cnp_rejected: dict[str, Rejection] = {}
        self.services: dict[str, ServiceInfo] = {}  # for lint only: they change no rule

    # ---------------------------------------------------------------- admission

    def admit(self, obj: Mapping[str, Any], kind: str, addresses: bool = True) -> bool:
        """Whether ``obj`` passes the shape checks; records (or clears) its refusal."""
        found = validate.problem(obj, kind, addresses=addresses)
        if found is None:
            if self.refused:  # naming the object costs; most clusters refuse nothing
                self.refused.pop(validate.describe(obj, kind), None)
            return True
        what = validate.describe(obj, kind)
        self.refused[what] = Rejection(what, found[0], found[1])
        return False

    def pod_of(self, obj: Mapping[str, Any]) -> PodInfo:
        """The pod as the engine stores it; a refused pod is kept as a non-endpoint that says why."""
        if self.admit(obj, "Pod", addresses=False):  # parse_pod reads (and judges) the addresses
            pod = parse_pod(obj)
            if pod.problem:
                what = validate.describe(obj, "Pod")
                field, _, message = pod.problem.partition(": ")
                self.refused[what] = Rejection(what, field, f"{message}; {UNFILTERED}its addresses cannot be read")
            return pod
        # Refused: fail closed where its traffic can still be told apart (its addresses and node
        # read safely): deny all of it, and never let a policy allow it as a peer.
        what = validate.describe(obj, "Pod")
        rej = self.refused[what]
        pod, why = refused_pod(obj, f"{rej.field}: {rej.message}")
        tail = "isolated: all its traffic is denied until it is fixed" if pod.deny_all else UNFILTERED + why
        self.refused[what] = Rejection(what, rej.field, f"{rej.message}; {tail}")
        return pod

    # ---------------------------------------------------------------- namespaces

    def put_namespace(self, info: NamespaceInfo) -> NamespaceInfo | None:
        """Store a namespace; returns the one it replaced."""
        old = self.ns.get(info.name)
        if old is not None:
            self.ns_labels.remove(old.name, old.labels)
        self.ns[info.name] = info
        self.ns_labels.add(info.name, info.labels)
        return old

    def forget_namespace(self, name: str) -> bool:
        """Forget a deleted namespace no pod is in any more; False (kept) while one is."""
        if self.pods_by_ns.get(name):
            return False
        self.pods_by_ns.pop(name, None)
        old = self.ns.pop(name, None)
        if old is not None:
            self.ns_labels.remove(old.name, old.labels)
        return True

    def namespace_info(self, name: str) -> NamespaceInfo:
        return self.ns.get(name) or implicit_namespace(name)

    # ---------------------------------------------------------------- pods

    def load_pod(self, pod: PodInfo) -> None:
        """Store a pod during a cold start; `own_loaded` settles ownership once afterwards."""
        key, claims = pod.key, self.claims
        old = self.pods.get(key)
        if old is not None and (old.candidate or old.deny_all):
            for ip in old.ips:
                claims[ip].discard(key)
        self.pods[key] = pod
        self.pods_by_ns.setdefault(pod.namespace, set()).add(key)
        if pod.candidate or pod.deny_all:
            for ip in pod.ips:
                claims.setdefault(ip, set()).add(key)

    def own_loaded(self) -> None:
        pods, claims, owners = self.pods, self.claims, self.ip_owner
        for ip, keys in list(claims.items()):
            if not keys:
                del claims[ip]
                continue
            owners[ip] = next(iter(keys)) if len(keys) == 1 else max(keys, key=lambda k: (pods[k].created, k))
        for key, pod in pods.items():
            if pod.candidate or pod.deny_all:
                owned = tuple(ip for ip in pod.ips if owners.get(ip) == key)
                if owned:
                    (self.endpoint if pod.candidate else self.isolated)[key] = pod.owning(owned)

    def store_pod(self, key: str, pod: PodInfo | None) -> tuple[set[str], list[EndpointChange]]:
        """Store (or remove) a pod and settle ownership of its addresses. Returns the pods to
        refresh and the endpoint changes address groups must follow. The pod's namespace must
        already be stored."""
        old = self.pods.get(key)
        touched = {key}
        if old is not None:
            self.pods_by_ns[old.namespace].discard(key)
            if old.candidate or old.deny_all:
                for ip in old.ips:
                    self.claims[ip].discard(key)
        if pod is None:
            self.pods.pop(key, None)
        else:
            self.pods[key] = pod
            self.pods_by_ns.setdefault(pod.namespace, set()).add(key)
            # A refused pod claims its addresses too: whichever pod holds an address, its
            # traffic is filtered as that pod's (a refused one's: denied).
            if pod.candidate or pod.deny_all:
                for ip in pod.ips:
                    self.claims.setdefault(ip, set()).add(key)
        # Ownership of the IPs involved may move between pods (weave#2632: an IP reused by a new
        # pod before the finished one is gone belongs to the new one), address by address.
        ips = {ip for p in (old, pod) if p is not None for ip in p.ips}
        affected = {key}
        for ip in ips:
            prev = self.ip_owner.get(ip)
            if prev is not None:
                affected.add(prev)
            claims = self.claims.get(ip)
            if claims:
                owner = max(claims, key=lambda k: (self.pods[k].created, k))
                self.ip_owner[ip] = owner
                affected.add(owner)
            else:
                self.ip_owner.pop(ip, None)
                self.claims.pop(ip, None)
        changes: list[EndpointChange] = []
        owners = self.ip_owner
        for k in sorted(affected):
            before = self.endpoint.get(k)  # as it was: the addresses it owned
            cur = self.pods.get(k)
            now: PodInfo | None = None
            iso: PodInfo | None = None
            if cur is not None and (cur.candidate or cur.deny_all):
                owned = tuple(ip for ip in cur.ips if owners.get(ip) == k)
                if owned and cur.candidate:
                    now = cur.owning(owned)
                elif owned:
                    iso = cur.owning(owned)
            was_iso = self.isolated.pop(k, None)
            if iso is not None:
                self.isolated[k] = iso
            if (was_iso.ips if was_iso else None) != (iso.ips if iso else None):
                touched.add(k)  # its deny-all dispatch entries change; it is in no group
            if k != key and (before.ips if before else None) == (now.ips if now else None):
                continue
            if now is not None:
                self.endpoint[k] = now
            else:
                self.endpoint.pop(k, None)
            changes.append((k, before, now))
            touched.add(k)
        return touched, changes

    def pods_matching(self, namespace: str, selector: Selector) -> set[str]:
        """Keys of the namespace's pods whose labels ``selector`` matches."""
        return {k for k in self.pods_by_ns.get(namespace, ()) if selector.matches(self.pods[k].labels)}
