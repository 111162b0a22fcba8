"""The EndpointSlice controller (kube-controller-manager's job in a real cluster), run inside the
lab's API server: for every Service with a selector, slices of the pods it selects.

As the real controller does: one set of slices per address family the Service has
(``spec.ipFamilies``), labelled ``kubernetes.io/service-name`` and
``endpointslice.kubernetes.io/managed-by``, owned by the Service; an endpoint per pod that is not
finished and has an address of that family, with ``conditions.ready`` (pod Ready and not
terminating, or ``publishNotReadyAddresses``), ``serving``, ``terminating``, ``nodeName`` and
``targetRef``; ``ports`` resolved from each ``targetPort`` (a number, or a container port name
looked up in every pod, so pods that resolve a name differently land in different slices, and a
port a pod cannot resolve is left out for that pod); at most 100 endpoints a slice; one empty
slice when nothing is selected. Slices follow every Pod and Service change, are put back when
someone edits or deletes them, and go with their Service.

Difference from the real one: it runs synchronously inside each write (no work queue, no
batching), so a Pod's or Service's event is followed at once by its slices' events.

Every field is read through ``_d``/``_l``: an object stored by fault injection (a list for labels,
a string for a spec) selects nothing and resolves nothing, instead of failing the write.
"""

from __future__ import annotations

from typing import Any

from ..store import Event, Obj, Store

SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS = 100
FINISHED = ("Succeeded", "Failed")

PortKey = tuple[tuple[str, int, str], ...]


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _labels(obj: Obj) -> dict[str, Any]:
    return _d(_d(obj.get("metadata")).get("labels"))


def _selector(svc: Obj) -> dict[str, Any]:
    return _d(_d(svc.get("spec")).get("selector"))


def _selects(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_ips(pod: Obj, family: str) -> list[str]:
    status = _d(pod.get("status"))
    ips = [e["ip"] for e in _l(status.get("podIPs")) if isinstance(e, dict) and isinstance(e.get("ip"), str)]
    if not ips and isinstance(status.get("podIP"), str) and status["podIP"]:
        ips = [status["podIP"]]
    return [ip for ip in ips if (":" in ip) == (family == "IPv6")]


def _ready(pod: Obj) -> bool:
    for c in _l(_d(pod.get("status")).get("conditions")):
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def resolve_port(pod: Obj, target: Any, protocol: str) -> int | None:
    """podutil.FindPort: a number as is; a name via the pod's container ports of that protocol."""
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    for c in _l(_d(pod.get("spec")).get("containers")):
        for p in _l(_d(c).get("ports")):
            p = _d(p)
            port = p.get("containerPort")
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol and isinstance(port, int):
                return port
    return None


def address_types(spec: Obj) -> list[str]:
    fams = [f for f in _l(spec.get("ipFamilies")) if f in ("IPv4", "IPv6")]
    if fams:
        return fams
    ip = spec.get("clusterIP")
    return ["IPv6"] if isinstance(ip, str) and ":" in ip else ["IPv4"]


class EndpointSliceController:
    def __init__(self, store: Store):
        self.store = store
        self._busy = False
        # Per namespace, so a change costs what its namespace holds, not the whole cluster.
        self._pods: dict[str, dict[str, Obj]] = {}
        self._services: dict[str, dict[str, Obj]] = {}
        self._slices: dict[tuple[str, str], dict[str, Obj]] = {}  # (namespace, service) → ours
        self._members: dict[tuple[str, str], set[str]] = {}  # (namespace, service) → pods selected
        for (ns, name), o in store.objects["pods"].items():
            self._pods.setdefault(ns, {})[name] = o
        for (ns, name), o in store.objects["services"].items():
            self._services.setdefault(ns, {})[name] = o
        for (ns, name), o in store.objects["endpointslices"].items():
            if _owner(o):
                self._slices.setdefault((ns, _owner(o)), {})[name] = o
        for (ns, name), o in store.objects["services"].items():
            self._select(ns, name, o)
        store.observers.append(self.observe)

    def _index(self, ev: Event) -> None:
        meta = ev.obj["metadata"]
        if ev.storage == "endpointslices":
            ns, name = meta.get("namespace") or "", meta["name"]
            if ev.old is not None and _owner(ev.old):
                self._slices.get((ns, _owner(ev.old)), {}).pop(name, None)
            if ev.type != "DELETED" and _owner(ev.obj):
                self._slices.setdefault((ns, _owner(ev.obj)), {})[name] = ev.obj
            return
        index = self._pods if ev.storage == "pods" else self._services
        ns = meta.get("namespace") or ""
        if ev.type == "DELETED":
            index.get(ns, {}).pop(meta["name"], None)
        else:
            index.setdefault(ns, {})[meta["name"]] = ev.obj
        if ev.storage == "services":
            self._select(ns, meta["name"], None if ev.type == "DELETED" else ev.obj)
            return
        labels = _labels(ev.obj)
        for sname, svc in self._services.get(ns, {}).items():
            sel = _selector(svc)
            members = self._members.setdefault((ns, sname), set())
            if ev.type != "DELETED" and sel and _selects(sel, labels):
                members.add(meta["name"])
            else:
                members.discard(meta["name"])

    def _select(self, ns: str, name: str, svc: Obj | None) -> None:
        """The pods a Service selects, found once when it changes (then kept by pod events)."""
        sel = _selector(svc or {})
        if svc is None or not sel:
            self._members.pop((ns, name), None)
            return
        pods = self._pods.get(ns, {})
        self._members[(ns, name)] = {p for p, o in pods.items() if _selects(sel, _labels(o))}

    # -- events ----------------------------------------------------------------------------------

    def observe(self, ev: Event) -> None:
        if ev.storage in ("pods", "services", "endpointslices"):
            self._index(ev)
        if self._busy:
            return  # our own writes
        meta = ev.obj.get("metadata") or {}
        ns = meta.get("namespace") or ""
        if ev.storage == "services":
            self.sync(ns, meta["name"])
        elif ev.storage == "pods":
            label_sets = [_labels(ev.obj)]
            if ev.old is not None:
                label_sets.append(_labels(ev.old))
            for sname, svc in list(self._services.get(ns, {}).items()):
                sel = _selector(svc)
                if sel and any(_selects(sel, lb) for lb in label_sets):
                    self.sync(ns, sname)
        elif ev.storage == "endpointslices":
            labels = _labels(ev.obj)
            before = _labels(ev.old or {})
            for lb in (labels, before):
                if lb.get(MANAGED_BY) == CONTROLLER and lb.get(SERVICE_NAME):
                    self.sync(ns, lb[SERVICE_NAME])  # someone changed what we manage: put it back

    def sync_all(self) -> None:
        for ns, name in list(self.store.objects["services"]):
            self.sync(ns, name)

    # -- reconcile -------------------------------------------------------------------------------

    def _existing(self, ns: str, service: str) -> list[Obj]:
        mine = self._slices.get((ns, service), {})
        return [mine[name] for name in sorted(mine)]

    def desired(self, svc: Obj) -> list[tuple[str, PortKey, list[Obj]]]:
        """(addressType, ports, endpoints) of every slice the Service should have."""
        spec = _d(svc.get("spec"))
        ns = svc["metadata"].get("namespace") or ""
        in_ns = self._pods.get(ns, {})
        name = svc["metadata"]["name"]
        pods = [
            in_ns[p]
            for p in sorted(self._members.get((ns, name), ()))
            if p in in_ns and _d(in_ns[p].get("status")).get("phase") not in FINISHED
        ]
        publish = bool(spec.get("publishNotReadyAddresses"))
        out: list[tuple[str, PortKey, list[Obj]]] = []
        for at in address_types(spec):
            groups: dict[PortKey, list[Obj]] = {}
            for pod in pods:
                ips = pod_ips(pod, at)
                if not ips:
                    continue
                ports: list[tuple[str, int, str]] = []
                for sp in _l(spec.get("ports")):
                    sp = _d(sp)
                    proto = sp.get("protocol") or "TCP"
                    num = resolve_port(pod, sp.get("targetPort", sp.get("port")), proto)
                    if num is not None and isinstance(proto, str):
                        ports.append((sp["name"] if isinstance(sp.get("name"), str) else "", num, proto))
                groups.setdefault(tuple(ports), []).append(self._endpoint(pod, ips[0], publish))
            if not groups:
                out.append((at, (), []))
            for key, eps in groups.items():
                for i in range(0, len(eps), MAX_ENDPOINTS):
                    out.append((at, key, eps[i : i + MAX_ENDPOINTS]))
        return out

    @staticmethod
    def _endpoint(pod: Obj, ip: str, publish: bool) -> Obj:
        meta = pod["metadata"]
        terminating = bool(meta.get("deletionTimestamp"))
        ready = _ready(pod)
        ep: Obj = {
            "addresses": [ip],
            "conditions": {
                "ready": publish or (ready and not terminating),
                "serving": publish or ready,
                "terminating": terminating,
            },
            "targetRef": {
                "kind": "Pod",
                "namespace": meta.get("namespace"),
                "name": meta["name"],
                "uid": meta.get("uid"),
            },
        }
        node = _d(pod.get("spec")).get("nodeName")
        if isinstance(node, str) and node:
            ep["nodeName"] = node
        return ep

    def _slice(self, svc: Obj, at: str, ports: PortKey, endpoints: list[Obj], base: Obj | None) -> Obj:
        meta = svc["metadata"]
        labels = {**_labels(svc), SERVICE_NAME: meta["name"], MANAGED_BY: CONTROLLER}
        owner = {
            "apiVersion": "v1",
            "kind": "Service",
            "name": meta["name"],
            "uid": meta.get("uid"),
            "controller": True,
            "blockOwnerDeletion": True,
        }
        if base is None:
            smeta: Obj = {"generateName": f"{meta['name']}-", "namespace": meta.get("namespace")}
        else:
            smeta = {**base["metadata"]}
        smeta.update(labels=labels, ownerReferences=[owner])
        out: Obj = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": smeta,
            "addressType": at,
            "endpoints": endpoints,
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
        }
        return out

    def sync(self, ns: str, name: str) -> None:
        svc = self.store.objects["services"].get((ns, name))
        existing = self._existing(ns, name)
        self._busy = True
        try:
            spec = _d((svc or {}).get("spec"))
            if svc is None or not spec.get("selector") or spec.get("type") == "ExternalName":
                for o in existing:
                    self.store.delete("endpointslices", ns, o["metadata"]["name"])
                return
            if ("", ns) not in self.store.objects["namespaces"]:
                return
            free = list(existing)
            for at, ports, eps in self.desired(svc):
                match = next(
                    (o for o in free if o.get("addressType") == at and _port_key(o) == ports),
                    None,
                ) or next((o for o in free if o.get("addressType") == at), None)
                if match is not None:
                    free.remove(match)
                    self.store.update("endpointslices", self._slice(svc, at, ports, eps, match))
                else:
                    self.store.create("endpointslices", self._slice(svc, at, ports, eps, None))
            for o in free:
                self.store.delete("endpointslices", ns, o["metadata"]["name"])
        finally:
            self._busy = False


def _owner(slice_: Obj) -> str:
    """The Service a slice is ours for ("" if it is not one of ours)."""
    labels = _labels(slice_)
    return str(labels.get(SERVICE_NAME) or "") if labels.get(MANAGED_BY) == CONTROLLER else ""


def _port_key(slice_: Obj) -> PortKey:
    return tuple(
        (p.get("name") or "", p["port"] if isinstance(p.get("port"), int) else 0, p.get("protocol") or "TCP")
        for p in map(_d, _l(slice_.get("ports")))
    )
