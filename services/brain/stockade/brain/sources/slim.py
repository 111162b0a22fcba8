"""What the brain keeps of each object: an explicit allow-list per kind (pure).

A Pod as the API serves it is 10-25 KiB of JSON (managedFields, env, volumes, probes, container
statuses); the engine and the tools read a few hundred bytes of it. The sources slim every object
before holding it, so the brain's memory grows with what policy depends on, not with what the
workloads carry. What is kept, and who reads it:

- every kind, ``metadata``: name, namespace, uid, resourceVersion (the sources' ordering, the
  startup taint's conditional patch), labels (selectors), creationTimestamp (which pod owns a
  reused IP), deletionTimestamp, and of the annotations only
  ``net.beta.kubernetes.io/network-policy`` (the namespace's beta default-deny); uid for
  Events; not ownerReferences (no reader: the tokens' pod check reads the pod from the API);
- Pod: ``spec.nodeName``, ``spec.hostNetwork``, the ``ports`` of ``spec.containers[]`` and
  ``spec.initContainers[]`` (named ports, declared ports), ``status.phase``, ``status.podIP``,
  ``status.podIPs`` (the engine, the drops' IP history, tokens' node binding);
- Node: ``spec.taints`` (the startup taint), ``status.addresses``;
- Service: ``spec.selector``, ``spec.ports``, ``spec.clusterIP(s)``, ``spec.type`` (lint);
- NetworkPolicy and ClusterNetworkPolicy: the whole ``spec`` (not a CNP's ``status``), and a CNP's
  ``metadata.generation`` (its status conditions' ``observedGeneration``, cnp_status.py);
  Namespace: metadata only.

A field the engine validates is kept exactly as served when it has the wrong shape (a ``spec``
that is a list, ``containers`` that is a map...), so a malformed object is refused with the same
field and message as before slimming: slimming never turns a bad object into a good one.
Strings repeated across objects (label keys and values, namespaces, node names, port names) are
interned, and the containers' ports of a Deployment's replicas (identical) are one shared list,
so 100k pods of a few hundred Deployments share them. Held objects are read, never changed in
place (the brain replaces an object whole on every event), which is what makes sharing safe.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from stockade.brain.engine.objects import BETA_ANNOTATION

Obj = dict[str, Any]
Slim = Callable[[str, Obj], Obj]

META_KEYS = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "labels",
    "creationTimestamp",
    "deletionTimestamp",
)
ANNOTATIONS = frozenset({BETA_ANNOTATION})
POD_SPEC_KEYS = ("nodeName", "hostNetwork")
POD_CONTAINER_KEYS = ("ports",)
POD_STATUS_KEYS = ("phase", "podIP", "podIPs")
NODE_SPEC_KEYS = ("taints",)
NODE_STATUS_KEYS = ("addresses",)
SERVICE_SPEC_KEYS = ("selector", "ports", "clusterIP", "clusterIPs", "type")

# Set to 1 only to measure the baseline (benchmarks/brain_memory.py): objects kept whole.
KEEP_WHOLE_ENV = "STOCKADE_BRAIN_KEEP_WHOLE_OBJECTS"


def _intern(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


def _interned_map(value: Any) -> Any:
    """A string map (labels, selector) with its keys and values shared; anything else as is."""
    if not isinstance(value, dict):
        return value
    return {_intern(k): _intern(v) for k, v in value.items()}


def _pick(src: Obj, keys: tuple[str, ...]) -> Obj:
    return {k: src[k] for k in keys if k in src}


def _metadata(meta: Any) -> Any:
    if not isinstance(meta, dict):
        return meta
    out = _pick(meta, META_KEYS)
    for k in ("namespace", "name"):
        if k in out:
            out[k] = _intern(out[k])
    if "labels" in out:
        out["labels"] = _interned_map(out["labels"])
    ann = meta.get("annotations")
    if isinstance(ann, dict):
        # Non-string keys cannot come from JSON; kept so validation still sees them if they do.
        kept = {k: v for k, v in ann.items() if k in ANNOTATIONS or not isinstance(k, str)}
        if kept:
            out["annotations"] = kept
    elif ann is not None:
        out["annotations"] = ann  # the wrong shape: the engine refuses it, naming the field
    return out


def _port(p: Any) -> Any:
    if not isinstance(p, dict):
        return p
    return {k: _intern(v) for k, v in p.items() if k in ("name", "containerPort", "protocol")}


SHARED_MAX = 50_000  # distinct containers sections kept for sharing; the cache restarts past it
_shared: dict[tuple[Any, ...], list[Any]] = {}


def _ports_key(value: list[Any]) -> tuple[Any, ...] | None:
    """A well-formed containers list's ports as a hashable key; None when any part is unusual."""
    key: list[Any] = []
    for c in value:
        if not isinstance(c, dict):
            return None
        if "ports" not in c:
            key.append("absent")
            continue
        ports = c["ports"]
        if ports is None:
            key.append("null")
            continue
        if not isinstance(ports, list):
            return None
        entry = []
        for p in ports:
            if not isinstance(p, dict):
                return None
            item = tuple((k, p[k]) for k in ("name", "containerPort", "protocol") if k in p)
            if not all(type(v) in (str, int) for _, v in item):
                return None
            entry.append(item)
        key.append(tuple(entry))
    return tuple(key)


def _containers(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    key = _ports_key(value)
    if key is not None:
        shared = _shared.get(key)
        if shared is None:
            if len(_shared) >= SHARED_MAX:
                _shared.clear()
            shared = _shared[key] = _slim_containers(value)
        return shared
    return _slim_containers(value)


def _slim_containers(value: list[Any]) -> list[Any]:
    out: list[Any] = []
    for c in value:
        if not isinstance(c, dict):
            out.append(c)
            continue
        kept = _pick(c, POD_CONTAINER_KEYS)
        if isinstance(kept.get("ports"), list):
            kept["ports"] = [_port(p) for p in kept["ports"]]
        out.append(kept)
    return out


def _section(obj: Obj, name: str, keys: tuple[str, ...]) -> Any:
    value = obj[name]
    return _pick(value, keys) if isinstance(value, dict) else value


def slim_pod(obj: Obj) -> Obj:
    out = _common(obj)
    if "spec" in obj:
        spec = obj["spec"]
        if isinstance(spec, dict):
            s = _pick(spec, POD_SPEC_KEYS)
            if "nodeName" in s:
                s["nodeName"] = _intern(s["nodeName"])
            for section in ("containers", "initContainers"):
                if section in spec:
                    s[section] = _containers(spec[section])
            out["spec"] = s
        else:
            out["spec"] = spec
    if "status" in obj:
        status = out["status"] = _section(obj, "status", POD_STATUS_KEYS)
        if isinstance(status, dict) and "phase" in status:
            status["phase"] = _intern(status["phase"])
    return out


def slim_node(obj: Obj) -> Obj:
    out = _common(obj)
    if "spec" in obj:
        out["spec"] = _section(obj, "spec", NODE_SPEC_KEYS)
    if "status" in obj:
        out["status"] = _section(obj, "status", NODE_STATUS_KEYS)
    return out


def slim_service(obj: Obj) -> Obj:
    out = _common(obj)
    if "spec" in obj:
        spec = out["spec"] = _section(obj, "spec", SERVICE_SPEC_KEYS)
        if isinstance(spec, dict) and "selector" in spec:
            spec["selector"] = _interned_map(spec["selector"])
    return out


def slim_policy(obj: Obj) -> Obj:
    out = _common(obj)
    if "spec" in obj:
        out["spec"] = obj["spec"]
    return out


def slim_cluster_policy(obj: Obj) -> Obj:
    out = slim_policy(obj)
    meta, kept = obj.get("metadata"), out.get("metadata")
    if isinstance(meta, dict) and isinstance(kept, dict) and "generation" in meta:
        kept["generation"] = meta["generation"]
    return out


def _common(obj: Obj) -> Obj:
    out = _pick(obj, ("kind", "apiVersion"))
    if "metadata" in obj:
        out["metadata"] = _metadata(obj["metadata"])
    return out


_BY_KIND: dict[str, Callable[[Obj], Obj]] = {
    "Pod": slim_pod,
    "Node": slim_node,
    "Service": slim_service,
    "NetworkPolicy": slim_policy,
    "ClusterNetworkPolicy": slim_cluster_policy,
    "Namespace": _common,
}


def slim(kind: str, obj: Obj) -> Obj:
    """What the brain keeps of ``obj`` (a ``kind`` object as the API serves it); a new dict,
    ``obj`` is not changed. A kind without an allow-list is kept whole."""
    fn = _BY_KIND.get(kind)
    if fn is None or not isinstance(obj, dict):
        return obj
    return fn(obj)


def brain_slimmer() -> Slim | None:
    """The brain's slimmer: ``slim``, or None (objects kept whole) when the benchmark's baseline
    switch ``STOCKADE_BRAIN_KEEP_WHOLE_OBJECTS=1`` is set."""
    return None if os.environ.get(KEEP_WHOLE_ENV) == "1" else slim
