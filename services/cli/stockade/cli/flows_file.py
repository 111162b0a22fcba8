"""Flows written by hand for `stockade suggest --flows FILE` (- for standard input).

The file is YAML: a list (or ``flows:`` holding one), each item a line or a mapping::

    - sock-shop/front-end -> sock-shop/carts:80
    - front-end -> session-db:6379          # namespace from -n (default "default")
    - 203.0.113.9 -> sock-shop/front-end:8079/TCP
    - sock-shop/orders -> [fd00::9]:443      # an IPv6 address in brackets
    - {from: sock-shop/orders, to: sock-shop/carts, port: 80, protocol: TCP}

An end is ns/pod, a pod of the namespace, or an IP address; ``->`` or ``→`` between them.
A bad item is an error naming the file and the item; nothing is suggested from half a file.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stockade.brain.admin.suggest_judge import Flow, flow
from stockade.manifests import bounded_yaml

_LINE = re.compile(r"^\s*(?P<src>\S+)\s*(?:->|→)\s*(?P<dst>\[[^\]]+\]|[^\s:]+):(?P<port>\d+)(?:/(?P<proto>\w+))?\s*$")


class FlowsFileError(ValueError):
    """A flows file that cannot be read as written: the message names file and item."""


def _end(ref: str, namespace: str) -> str:
    ref = ref.strip()
    if ref.startswith("[") and ref.endswith("]"):
        ref = ref[1:-1]
    try:
        return str(ipaddress.ip_address(ref))
    except ValueError:
        return ref if "/" in ref else f"{namespace}/{ref}"


def _item(item: Any, namespace: str) -> Flow:
    if isinstance(item, str):
        m = _LINE.match(item)
        if m is None:
            raise ValueError(f"{item!r}: write FROM -> TO:PORT[/PROTOCOL], e.g. shop/front-end -> shop/carts:80")
        src, dst = _end(m["src"], namespace), _end(m["dst"], namespace)
        return flow(src, dst, int(m["port"]), m["proto"] or "TCP")
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"from", "to", "port", "protocol"})
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}: the fields are from, to, port, protocol")
        a, b, port = item.get("from"), item.get("to"), item.get("port")
        if not isinstance(a, str) or not isinstance(b, str):
            raise ValueError("'from' and 'to' are required: each ns/pod or an IP address")
        if not isinstance(port, int) or isinstance(port, bool):
            raise ValueError(f"'port' must be a number, got {port!r}")
        return flow(_end(a, namespace), _end(b, namespace), port, str(item.get("protocol") or "TCP"))
    raise ValueError(f"{item!r}: a flow is a line (FROM -> TO:PORT) or a mapping (from, to, port, protocol)")


def parse_flows(data: Any, source: str, namespace: str = "default") -> list[Flow]:
    """The flows of a loaded YAML document (see the module's help); FlowsFileError names the item."""
    items = data.get("flows") if isinstance(data, Mapping) else data
    if not isinstance(items, list) or not items:
        raise FlowsFileError(f"{source}: expected a list of flows (or 'flows:' holding one), got none")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(_item(item, namespace))
        except ValueError as e:
            raise FlowsFileError(f"{source}: flows[{i}]: {e}") from None
    return out


def read_flows(path: str, namespace: str = "default") -> list[Flow]:
    """The flows in ``path`` (- is standard input), bounded as manifests are."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FlowsFileError(f"{path}: cannot read: {e}") from None
    if len(text) > bounded_yaml.MAX_BYTES:
        raise FlowsFileError(f"{path}: over {bounded_yaml.MAX_BYTES:,} bytes")
    try:
        docs = [d for d in bounded_yaml.load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise FlowsFileError(f"{path}: invalid YAML: {e}") from None
    if len(docs) != 1:
        raise FlowsFileError(f"{path}: expected one YAML document of flows, found {len(docs)}")
    return parse_flows(docs[0], path, namespace)
