"""A tiny kustomize stand-in for tests: follows `resources:` and applies `namespace:` and
`images:`, which is all the deploy/ base uses. No cluster and no kustomize binary here, so this
renders what `kubectl apply -k deploy/` would send, closely enough to validate it."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

Obj = dict[str, Any]

# Kinds without a namespace (the ones a base like ours could hold).
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "PriorityClass",
        "CustomResourceDefinition",
        "ClusterIssuer",
        "StorageClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)

# Fields of a kustomization.yaml this renderer understands; anything else is refused so that a
# new feature of the base cannot pass the tests unrendered.
KNOWN_FIELDS = frozenset({"apiVersion", "kind", "namespace", "resources", "images"})


class RenderError(Exception):
    pass


@dataclass
class Rendered:
    objects: list[Obj]
    files: list[Path]  # every manifest file that went into the output
    missing: list[str] = field(default_factory=list)  # tolerated missing resources


def load_yaml_docs(path: Path) -> list[Any]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def is_manifest(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def render(directory: Path = DEPLOY, allow_missing: Iterable[str] = ()) -> Rendered:
    """Render the kustomization in `directory`. `allow_missing` names resource paths (as written
    in kustomization.yaml) that may be absent; every other missing path is an error."""
    allowed = set(allow_missing)
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise RenderError(f"{directory}: no kustomization.yaml")
    (kust,) = load_yaml_docs(kfile)
    unknown = set(kust) - KNOWN_FIELDS
    if unknown:
        raise RenderError(f"{kfile}: fields this renderer does not implement: {sorted(unknown)}")
    if kust.get("kind") != "Kustomization":
        raise RenderError(f"{kfile}: kind must be Kustomization")

    out = Rendered(objects=[], files=[])
    for entry in kust.get("resources", []):
        path = (directory / entry).resolve()
        if not path.is_relative_to(directory.resolve()):
            raise RenderError(f"{kfile}: resource {entry!r} is outside the base")
        if path.is_dir():
            sub = render(path, allow_missing={e.split("/", 1)[1] for e in allowed if "/" in e})
            out.objects += sub.objects
            out.files += sub.files
            out.missing += sub.missing
        elif path.is_file():
            docs = load_yaml_docs(path)
            for doc in docs:
                if not is_manifest(doc):
                    raise RenderError(f"{path}: a document without apiVersion/kind")
            out.objects += [copy.deepcopy(d) for d in docs]
            out.files.append(path)
        elif entry in allowed:
            out.missing.append(entry)
        else:
            raise RenderError(f"{kfile}: resource {entry!r} does not exist")

    namespace = kust.get("namespace")
    for obj in out.objects:
        if namespace and obj["kind"] not in CLUSTER_SCOPED:
            obj.setdefault("metadata", {})["namespace"] = namespace
        for image in kust.get("images", []):
            retag(obj, image)
    return out


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


def retag(obj: Obj, image: Obj) -> None:
    for container in containers(obj):
        ref = container.get("image", "")
        name, _, _ = ref.partition(":")
        if name == image["name"]:
            new = image.get("newName", name)
            tag = image.get("newTag")
            container["image"] = f"{new}:{tag}" if tag else new


def find(objects: Iterable[Obj], kind: str, name: str) -> Obj:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise KeyError(f"{kind}/{name} not rendered")
