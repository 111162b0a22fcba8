"""What the lab's kube-proxy reports (``kube-proxy.json``), and waiting until it is in step with
the API server: every Service and EndpointSlice the API holds programmed at its current version."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from stockade.lab.kubeproxy.controller import STATUS_FILE, version_key

_LISTS = {"Service": "/api/v1/services", "EndpointSlice": "/apis/discovery.k8s.io/v1/endpointslices"}


class NotInStep(RuntimeError):
    pass


def read(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ready(state_dir: Path) -> bool:
    st = read(state_dir)
    return bool(st and st.get("synced"))


def api_versions(api_url: str) -> dict[str, str]:
    """resourceVersion of every Service and EndpointSlice, keyed as the proxy's status keys them."""
    out: dict[str, str] = {}
    for kind, path in _LISTS.items():
        with urllib.request.urlopen(api_url.rstrip("/") + path, timeout=5) as resp:
            for obj in json.loads(resp.read()).get("items") or []:
                out[version_key(kind, obj)] = str(obj["metadata"].get("resourceVersion") or "")
    return out


def lag(api_url: str, state_dir: Path) -> list[str]:
    """What the nodes do not do yet (empty: in step)."""
    st = read(state_dir)
    if st is None:
        return ["kube-proxy has not reported yet"]
    if st.get("failed"):
        return [f"{node}: {err}" for node, err in sorted(st["failed"].items())]
    want, have = api_versions(api_url), st.get("versions") or {}
    behind = [k for k, rv in want.items() if have.get(k) != rv]
    gone = [k for k in have if k not in want]
    return [*(f"{k} not programmed yet" for k in behind), *(f"{k} still programmed" for k in gone)]


def wait_in_step(api_url: str, state_dir: Path, timeout: float) -> float:
    """Until every node runs what the API holds; the seconds it took. Raises NotInStep on timeout."""
    t0 = time.monotonic()
    while True:
        left = lag(api_url, state_dir)
        if not left:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise NotInStep(f"kube-proxy not in step after {timeout:.0f} s: " + "; ".join(left[:5]))
        time.sleep(0.05)
