"""Starting the lab's kube-proxy and waiting for it: the glue `lab.py` uses."""

from __future__ import annotations

from pathlib import Path

from stockade.lab import procs
from stockade.lab.control import Launch
from stockade.lab.kubeproxy import status

NAME = "kube-proxy"


def available() -> bool:
    """Whether the lab's API server serves Services and EndpointSlices (what the proxy watches)."""
    from stockade.lab.apiserver import resources

    kinds = {r.kind for r in resources.RESOURCES}
    return {"Service", "EndpointSlice"} <= kinds


def launch(state_dir: Path) -> Launch:
    return Launch(NAME, procs.python_argv("stockade.lab.kubeproxy", "--dir", str(state_dir)))


def ready(state_dir: Path) -> bool:
    return status.ready(state_dir)
