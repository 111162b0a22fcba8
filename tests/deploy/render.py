"""deploy/ as the cluster would receive it: rendered by the real `kubectl kustomize` (what
`kubectl apply -k deploy/` sends), plus helpers to find objects and containers in the output."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

Obj = dict[str, Any]


class RenderError(Exception):
    pass


@dataclass
class Rendered:
    objects: list[Obj]
    files: list[Path]  # every manifest file the kustomization lists (followed into sub-bases)


def load_yaml_docs(path: Path) -> list[Any]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def is_manifest(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def kubectl() -> str:
    exe = shutil.which("kubectl")
    # Not a skip: these tests are the only check that the base renders at all.
    assert exe, "kubectl is not installed: it renders deploy/ (`kubectl kustomize`) for these tests"
    return exe


def kustomize(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize directory` renders; RenderError with kubectl's words if not."""
    proc = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory}: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


def listed_files(directory: Path) -> list[Path]:
    """The files a kustomization's `resources:` name, following directories that are bases."""
    (kust,) = load_yaml_docs(directory / "kustomization.yaml")
    out: list[Path] = []
    for entry in kust.get("resources", []):
        path = (directory / entry).resolve()
        out += listed_files(path) if path.is_dir() else [path]
    return out


def render(directory: Path = DEPLOY) -> Rendered:
    return Rendered(objects=kustomize(directory), files=listed_files(directory))


def pod_spec(obj: Obj) -> Obj | None:
    kind = obj.get("kind")
    if kind == "Pod":
        return obj.get("spec")
    if kind in {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}:
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def containers(obj: Obj) -> Iterator[Obj]:
    spec = pod_spec(obj)
    if spec is None:
        return
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def find(objects: Iterable[Obj], kind: str, name: str) -> Obj:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise KeyError(f"{kind}/{name} not rendered")
