"""CustomResourceDefinitions (apiextensions.k8s.io/v1): the lab serves a custom resource only while
the CRD that defines it is stored (``resources.Resource.crd``), as a real server serves a CRD's
resource once it is created and stops when it is deleted (taking the resource's objects along:
``store.py``). The lab cannot serve arbitrary CRDs: a CRD it does not know is refused (422), and one
it knows must name the resource as the lab serves it (group, plural, kind, scope, version).

The status is the server's: Established and NamesAccepted, the accepted names, the stored versions.
``kubectl get crd`` columns: NAME CREATED AT."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ..fielderrors import FieldError, InvalidError, invalid, not_supported
from ..resources import RESOURCES, Resource
from .base import NAME_COLUMN, Cell, Column, KindBehaviour, Obj

GROUP = "apiextensions.k8s.io"
KNOWN: dict[str, Resource] = {r.crd: r for r in RESOURCES if r.crd}


def _dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def crd_errors(obj: Obj) -> list[FieldError]:
    name = obj["metadata"]["name"]
    res = KNOWN.get(name)
    if res is None:
        return [not_supported("metadata.name", name, sorted(KNOWN))]
    spec, names = _dict(obj.get("spec")), _dict(_dict(obj.get("spec")).get("names"))
    want = {
        "spec.group": (spec.get("group"), res.group),
        "spec.names.plural": (names.get("plural"), res.plural),
        "spec.names.kind": (names.get("kind"), res.kind),
        "spec.scope": (spec.get("scope"), "Namespaced" if res.namespaced else "Cluster"),
    }
    out = [
        invalid(f, got, f"the lab serves {expected!r} here") for f, (got, expected) in want.items() if got != expected
    ]
    versions = [_dict(v) for v in spec.get("versions") or []]
    if not any(v.get("name") == res.version and v.get("served") for v in versions):
        out.append(invalid("spec.versions", [v.get("name") for v in versions], f"must serve {res.version}"))
    return out


def established(obj: Obj) -> Obj:
    """The status a real server gives a CRD it accepted."""
    spec = _dict(obj.get("spec"))
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [
        {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": when}
        for t, r, m in (
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        )
    ]
    stored = [v["name"] for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("storage")]
    return {"acceptedNames": _dict(spec.get("names")), "conditions": conditions, "storedVersions": stored}


class CustomResourceDefinitionBehaviour(KindBehaviour):
    def _check(self, obj: Obj) -> None:
        errors = crd_errors(obj)
        if errors:
            raise InvalidError("CustomResourceDefinition", obj["metadata"]["name"], errors, group=GROUP)

    def on_create(self, obj: Obj) -> None:
        self._check(obj)
        obj["status"] = established(obj)

    def on_update(self, obj: Obj, old: Obj) -> None:
        self._check(obj)

    def columns(self) -> list[Column]:
        return [NAME_COLUMN, ("Created At", "date", "When the CRD was created.", 0)]

    def cells(self, obj: Obj) -> list[Cell]:
        return [obj["metadata"]["name"], obj["metadata"].get("creationTimestamp")]


# The CRD manifests deploy/ installs, read when the lab runs from a checkout (the image has no deploy/).
DEPLOY_CRDS = Path(__file__).resolve().parents[6] / "deploy" / "crds"


def minimal_crd(res: Resource) -> Obj:
    """A CRD naming ``res`` with a free-form schema: what stands in when deploy/ is not at hand."""
    scope = "Namespaced" if res.namespaced else "Cluster"
    names: Obj = {"plural": res.plural, "singular": res.singular, "kind": res.kind, "listKind": f"{res.kind}List"}
    if res.short_names:
        names["shortNames"] = list(res.short_names)
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    version = {"name": res.version, "served": True, "storage": True, "schema": schema}
    if res.has_status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": res.crd},
        "spec": {"group": res.group, "names": names, "scope": scope, "versions": [version]},
    }


def builtin_crds() -> list[Obj]:
    """The CRD object of every custom resource the lab serves: deploy/crds/<plural>.yaml, else minimal."""
    out: list[Obj] = []
    for res in KNOWN.values():
        path = DEPLOY_CRDS / f"{res.plural}.yaml"
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d] if path.is_file() else []
        crd = next((d for d in docs if d.get("kind") == "CustomResourceDefinition"), None)
        out.append(crd if crd is not None else minimal_crd(res))
    return out
