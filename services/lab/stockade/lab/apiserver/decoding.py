"""Typed decoding, as the real API server's JSON decoder does it before anything else.

The real server decodes a request body into its Go types (``v1.Pod`` ...). A value of the wrong
JSON type is refused there with 400 BadRequest, and nothing is stored:
``Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal array into Go struct
field ObjectMeta.metadata.labels of type map[string]string``. The field is the dotted path of
JSON names (no list indexes, no map keys); the struct is the Go type that holds the last one; the
first mismatch in document order is the one reported, as Go's decoder reports its first.

Only the fields the lab serves (and its clients read) are typed here; everything else passes as
it is. ``null`` is always accepted (Go leaves the zero value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError
from .resources import STORAGE_VIEW


@dataclass(frozen=True)
class GoType:
    name: str  # as Go prints it: "string", "int32", "v1.PodSpec", "[]v1.Container", "map[string]string"
    kind: str  # string | int | bool | struct | list | map | intstr
    fields: Mapping[str, GoType] = field(default_factory=dict)  # struct: JSON name → type
    elem: GoType | None = None  # list and map elements
    bits: int = 64

    @property
    def struct_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def string(name: str = "string") -> GoType:
    return GoType(name, "string")


def integer(bits: int) -> GoType:
    return GoType(f"int{bits}", "int", bits=bits)


BOOL = GoType("bool", "bool")
STRING = string()
INT32 = integer(32)
INT64 = integer(64)
# intstr.IntOrString decodes a non-string into its int32 (its own UnmarshalJSON), so a wrong type
# is reported against int32.
INT_OR_STRING = GoType("int32", "intstr")


def struct(go_name: str, /, **fields: GoType) -> GoType:
    return GoType(go_name, "struct", fields)


def list_of(elem: GoType) -> GoType:
    return GoType(f"[]{elem.name}", "list", elem=elem)


def map_of(elem: GoType) -> GoType:
    return GoType(f"map[string]{elem.name}", "map", elem=elem)


STRING_MAP = map_of(STRING)
STRINGS = list_of(STRING)

OBJECT_META = struct(
    "v1.ObjectMeta",
    name=STRING,
    generateName=STRING,
    namespace=STRING,
    uid=string("types.UID"),
    resourceVersion=STRING,
    generation=INT64,
    labels=STRING_MAP,
    annotations=STRING_MAP,
    finalizers=STRINGS,
)
LABEL_SELECTOR = struct(
    "v1.LabelSelector",
    matchLabels=STRING_MAP,
    matchExpressions=list_of(
        struct("v1.LabelSelectorRequirement", key=STRING, operator=string("v1.LabelSelectorOperator"), values=STRINGS)
    ),
)
CONTAINER = struct(
    "v1.Container",
    name=STRING,
    image=STRING,
    ports=list_of(
        struct(
            "v1.ContainerPort",
            name=STRING,
            hostPort=INT32,
            containerPort=INT32,
            protocol=string("v1.Protocol"),
            hostIP=STRING,
        )
    ),
)
CONDITION = {"type": STRING, "status": string("v1.ConditionStatus"), "reason": STRING, "message": STRING}
POD_SPEC = struct(
    "v1.PodSpec",
    nodeName=STRING,
    hostNetwork=BOOL,
    serviceAccountName=STRING,
    containers=list_of(CONTAINER),
    initContainers=list_of(CONTAINER),
)
POD_STATUS = struct(
    "v1.PodStatus",
    phase=string("v1.PodPhase"),
    hostIP=STRING,
    podIP=STRING,
    podIPs=list_of(struct("v1.PodIP", ip=STRING)),
    conditions=list_of(struct("v1.PodCondition", **{**CONDITION, "type": string("v1.PodConditionType")})),
    containerStatuses=list_of(struct("v1.ContainerStatus", name=STRING, ready=BOOL, restartCount=INT32)),
)
SERVICE_SPEC = struct(
    "v1.ServiceSpec",
    type=string("v1.ServiceType"),
    selector=STRING_MAP,
    clusterIP=STRING,
    clusterIPs=STRINGS,
    ipFamilies=list_of(string("v1.IPFamily")),
    ipFamilyPolicy=string("v1.IPFamilyPolicy"),
    externalName=STRING,
    sessionAffinity=string("v1.ServiceAffinity"),
    externalTrafficPolicy=string("v1.ServiceExternalTrafficPolicy"),
    publishNotReadyAddresses=BOOL,
    ports=list_of(
        struct(
            "v1.ServicePort",
            name=STRING,
            protocol=string("v1.Protocol"),
            appProtocol=STRING,
            port=INT32,
            targetPort=INT_OR_STRING,
            nodePort=INT32,
        )
    ),
)
SERVICE_STATUS = struct(
    "v1.ServiceStatus",
    loadBalancer=struct(
        "v1.LoadBalancerStatus", ingress=list_of(struct("v1.LoadBalancerIngress", ip=STRING, hostname=STRING))
    ),
)
NODE_SPEC = struct("v1.NodeSpec", podCIDR=STRING, podCIDRs=STRINGS, unschedulable=BOOL)
NODE_STATUS = struct(
    "v1.NodeStatus",
    addresses=list_of(struct("v1.NodeAddress", type=string("v1.NodeAddressType"), address=STRING)),
    conditions=list_of(struct("v1.NodeCondition", **{**CONDITION, "type": string("v1.NodeConditionType")})),
)
NAMESPACE_SPEC = struct("v1.NamespaceSpec", finalizers=list_of(string("v1.FinalizerName")))
NAMESPACE_STATUS = struct("v1.NamespaceStatus", phase=string("v1.NamespacePhase"))
# The policy itself is judged by the brain (its own tests feed it odd rules through this server);
# here only its outline is typed.
NETWORK_POLICY_SPEC = struct("v1.NetworkPolicySpec", podSelector=LABEL_SELECTOR)
ENDPOINT_SLICE_ENDPOINTS = list_of(struct("v1.Endpoint", addresses=STRINGS, nodeName=STRING))


def _top(kind: str, **fields: GoType) -> GoType:
    return struct(f"v1.{kind}", apiVersion=STRING, kind=STRING, metadata=OBJECT_META, **fields)


TYPES: dict[str, GoType] = {
    "pods": _top("Pod", spec=POD_SPEC, status=POD_STATUS),
    "services": _top("Service", spec=SERVICE_SPEC, status=SERVICE_STATUS),
    "nodes": _top("Node", spec=NODE_SPEC, status=NODE_STATUS),
    "namespaces": _top("Namespace", spec=NAMESPACE_SPEC, status=NAMESPACE_STATUS),
    "networkpolicies": _top("NetworkPolicy", spec=NETWORK_POLICY_SPEC),
    "endpointslices": _top("EndpointSlice", addressType=string("v1.AddressType"), endpoints=ENDPOINT_SLICE_ENDPOINTS),
}


class DecodeError(ApiError):
    """400 BadRequest: the body does not fit the kind's Go type. ``detail`` is Go's own text."""

    def __init__(self, kind: str, version: str, detail: str):
        super().__init__(400, "BadRequest", f'{kind} in version "{version}" cannot be handled as a {kind}: {detail}')
        self.detail = detail


def json_type(value: Any, go: GoType) -> str:
    """How Go's decoder names the JSON value it could not store (numbers: with their text for ints)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if go.kind in ("int", "intstr"):
        return f"number {value!r}"  # ParseInt failed on the literal (a fraction, or too big)
    return "number"


def _fits_int(value: Any, bits: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)


def _mismatch(value: Any, go: GoType) -> bool:
    if value is None:
        return False
    if go.kind == "string":
        return not isinstance(value, str)
    if go.kind == "bool":
        return not isinstance(value, bool)
    if go.kind == "int":
        return not _fits_int(value, go.bits)
    if go.kind == "intstr":
        return not (isinstance(value, str) or _fits_int(value, 32))
    if go.kind in ("struct", "map"):
        return not isinstance(value, dict)
    return not isinstance(value, list)


def first_error(value: Any, go: GoType, path: str = "", holder: str = "") -> str | None:
    """Go's text for the first value in ``value`` that does not fit ``go`` (None: it all fits)."""
    if _mismatch(value, go):
        where = f"Go struct field {holder}.{path}" if path else "Go value"
        return f"json: cannot unmarshal {json_type(value, go)} into {where} of type {go.name}"
    if value is None:
        return None
    if go.kind == "struct":
        for key, sub in value.items():
            t = go.fields.get(key)
            if t is not None:
                err = first_error(sub, t, f"{path}.{key}" if path else key, go.struct_name)
                if err:
                    return err
    elif go.kind in ("list", "map"):
        assert go.elem is not None
        for sub in value if go.kind == "list" else value.values():
            err = first_error(sub, go.elem, path, holder)
            if err:
                return err
    return None


def check_types(storage: str, obj: Any, version: str | None = None) -> None:
    """Raise DecodeError (400) when ``obj`` does not decode into the kind's Go type."""
    go = TYPES.get(storage)
    if go is None:
        return
    err = first_error(obj, go)
    if err:
        view = STORAGE_VIEW[storage]
        raise DecodeError(view.kind, version or view.version, err)
