"""How `explain` and `suggest` name a connection's ends: a pod as ``ns/name`` (an endpoint of
the cluster's network) or an address. One lookup, so both say the same thing about a pod that
cannot be an end (not found, on its node's network, no address, refused)."""

from __future__ import annotations

import ipaddress

from stockade.brain.engine import Engine
from stockade.brain.engine.objects import PodInfo


def address(text: str) -> str | None:
    """``text`` as a canonical address, or None when it is not one (then it names a pod)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def find_endpoint(engine: Engine, ref: str, error: type[ValueError] = ValueError) -> PodInfo:
    """The endpoint pod named ``ns/name``, with the addresses it owns (a refused pod too: it is
    isolated, every connection denied). ``error``: the exception raised when there is none."""
    if "/" not in ref:
        raise error(f"{ref!r}: name a pod as namespace/name, or give an IP address")
    ns, name = ref.split("/", 1)
    pod = engine.pod_info(ns, name)
    if pod is None:
        raise error(f"pod {ref} not found")
    if pod.host_network:
        raise error(f"pod {ref} is on its node's network: name it by its node's address")
    ep = engine.endpoint(ns, name) or engine.isolated(ns, name)
    if ep is None or not ep.node:
        why = f"its addresses were refused: {pod.problem}" if pod.problem else "no IP yet, or finished"
        raise error(f"pod {ref} is not a network endpoint ({why})")
    return ep
