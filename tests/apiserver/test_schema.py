"""The lab's typed description of the API against the real one, as the real kubernetes-asyncio
client (generated from the real OpenAPI document) knows it: every field the lab declares exists
there with the same JSON name, type and requiredness; every struct the lab models field by field
(not "open") has every field the client has, so pruning unknown fields never drops a real one."""

from __future__ import annotations

import inspect
import re

import kubernetes_asyncio.client.models as models

from stockade.lab.apiserver import schema
from stockade.lab.apiserver.resources import RESOURCES
from stockade.lab.apiserver.schema.model import Definition, Type

# Definitions with no generated model (the lab serves NetworkPolicy under extensions/v1beta1 too,
# and ClusterNetworkPolicy, a custom resource).
NO_MODEL = ("io.k8s.api.extensions.v1beta1.", "io.k8s.networking.policy.v1alpha2.")
_MODEL_NAME = re.compile(r"(?:V\d\w*?|CoreV\d|DiscoveryV\d|AuthenticationV\d)([A-Z]\w*)")


def model_of(d: Definition) -> type | None:
    parts = d.name.split(".")
    version, short = parts[-2], parts[-1]
    group = parts[-3] if d.name.startswith("io.k8s.api.") else ""
    for name in (f"{version.capitalize()}{short}", f"{group.capitalize()}{version.capitalize()}{short}"):
        found = getattr(models, name, None)
        if found is not None and hasattr(found, "openapi_types"):
            return found  # type: ignore[no-any-return]
    return None


def python_type(t: Type) -> str:
    """How the generated client names a field's type."""
    if t.kind == "array":
        assert t.of is not None
        return f"list[{python_type(t.of)}]"
    if t.kind == "map":
        assert t.of is not None
        return f"dict(str, {python_type(t.of)})"
    if t.kind == "ref":
        d = t.definition
        return {"time": "datetime", "quantity": "str", "intstr": "object", "any": "object"}.get(d.decode, "*" + d.short)
    return {"string": "str", "integer": "int", "boolean": "bool", "number": "float"}[t.kind]


def required_of(model: type) -> set[str]:
    names = re.findall(r"Invalid value for `(\w+)`, must not be `None`", inspect.getsource(model))
    return {model.attribute_map[n] for n in names}  # type: ignore[attr-defined]


def test_every_definition_matches_the_real_api() -> None:
    problems: list[str] = []
    checked = 0
    for name, d in sorted(schema.DEFINITIONS.items()):
        if d.scalar is not None or name.startswith(NO_MODEL):
            continue
        model = model_of(d)
        assert model is not None, f"{name}: no such type in the real API"
        checked += 1
        attribute = model.attribute_map  # type: ignore[attr-defined]
        theirs = {json_name: py for py, json_name in attribute.items()}
        ours = {f.name: f for f in d.fields}
        problems += [f"{name}.{f}: not a field of the real type" for f in sorted(set(ours) - set(theirs))]
        if not d.open:
            problems += [f"{name}.{f}: missing (it would be pruned)" for f in sorted(set(theirs) - set(ours))]
        if d.fields and required_of(model) != {f.name for f in d.fields if f.required}:
            problems.append(
                f"{name}: required {sorted(f.name for f in d.fields if f.required)}, real {sorted(required_of(model))}"
            )
        for field_name, f in ours.items():
            if field_name not in theirs:
                continue
            real = model.openapi_types[theirs[field_name]]  # type: ignore[attr-defined]
            mine = python_type(f.type)
            if _MODEL_NAME.sub(r"*\1", real) != mine and not (real == "object" and "*" in mine):
                problems.append(f"{name}.{field_name}: {mine}, real {real}")
    assert checked > 100
    assert problems == []


def test_served_kinds_and_their_merge_keys() -> None:
    for gvk in [
        ("", "v1", "Pod"),
        ("", "v1", "Service"),
        ("", "v1", "Node"),
        ("", "v1", "Namespace"),
        ("", "v1", "Event"),
        ("networking.k8s.io", "v1", "NetworkPolicy"),
        ("extensions", "v1beta1", "NetworkPolicy"),
        ("discovery.k8s.io", "v1", "EndpointSlice"),
        ("coordination.k8s.io", "v1", "Lease"),
        ("authentication.k8s.io", "v1", "TokenReview"),
        ("authentication.k8s.io", "v1", "TokenRequest"),
    ]:
        assert gvk in schema.ROOTS, gvk
    pod = schema.merge_keys("io.k8s.api.core.v1.Pod")
    assert pod["spec.containers"] == "name" and pod["spec.containers.ports"] == "containerPort"
    assert pod["status.podIPs"] == "ip" and pod["metadata.finalizers"] == ""  # a set of strings
    assert schema.merge_keys("io.k8s.api.core.v1.Service")["spec.ports"] == "port"
    # NetworkPolicy lists are atomic: kubectl replaces a rule list as a whole
    assert not any(k.startswith("spec.") for k in schema.merge_keys("io.k8s.api.networking.v1.NetworkPolicy"))


def test_every_served_resource_is_described() -> None:
    """A resource added without a definition is served untyped and left out of the OpenAPI
    documents (kubectl then cannot validate or explain it): add its definition to schema/."""
    missing = [f"{r.group}/{r.version} {r.kind}" for r in RESOURCES if r not in schema.DOCUMENTED]
    assert missing == []
