from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListPoliciesRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyStatus]
    def __init__(self, policies: _Optional[_Iterable[_Union[PolicyStatus, _Mapping]]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("namespace", "name")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class PolicyStatus(_message.Message):
    __slots__ = ("namespace", "name", "selected_pods", "nodes_needed", "nodes_applied", "nodes_pending", "rejected", "warnings", "policy_types", "not_realized", "labels", "kind", "tier", "priority")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SELECTED_PODS_FIELD_NUMBER: _ClassVar[int]
    NODES_NEEDED_FIELD_NUMBER: _ClassVar[int]
    NODES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    NODES_PENDING_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    POLICY_TYPES_FIELD_NUMBER: _ClassVar[int]
    NOT_REALIZED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    selected_pods: _containers.RepeatedScalarFieldContainer[str]
    nodes_needed: int
    nodes_applied: int
    nodes_pending: _containers.RepeatedScalarFieldContainer[str]
    rejected: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    policy_types: _containers.RepeatedScalarFieldContainer[str]
    not_realized: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    kind: str
    tier: str
    priority: int
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., selected_pods: _Optional[_Iterable[str]] = ..., nodes_needed: _Optional[int] = ..., nodes_applied: _Optional[int] = ..., nodes_pending: _Optional[_Iterable[str]] = ..., rejected: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., policy_types: _Optional[_Iterable[str]] = ..., not_realized: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., kind: _Optional[str] = ..., tier: _Optional[str] = ..., priority: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "view", "brain_version", "brain_protocol", "brain_min_protocol")
    NODES_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    BRAIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    BRAIN_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    BRAIN_MIN_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    view: str
    brain_version: str
    brain_protocol: int
    brain_min_protocol: int
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., view: _Optional[str] = ..., brain_version: _Optional[str] = ..., brain_protocol: _Optional[int] = ..., brain_min_protocol: _Optional[int] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("name", "connected", "desired_generation", "applied_generation", "backend", "last_apply_time", "last_error", "pods", "chains", "sets", "ready", "problems", "refused", "protocol", "agent_version", "brain", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DESIRED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLY_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    PODS_FIELD_NUMBER: _ClassVar[int]
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    SETS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    connected: bool
    desired_generation: int
    applied_generation: int
    backend: str
    last_apply_time: float
    last_error: str
    pods: int
    chains: int
    sets: int
    ready: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    refused: str
    protocol: int
    agent_version: str
    brain: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., connected: _Optional[bool] = ..., desired_generation: _Optional[int] = ..., applied_generation: _Optional[int] = ..., backend: _Optional[str] = ..., last_apply_time: _Optional[float] = ..., last_error: _Optional[str] = ..., pods: _Optional[int] = ..., chains: _Optional[int] = ..., sets: _Optional[int] = ..., ready: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ..., refused: _Optional[str] = ..., protocol: _Optional[int] = ..., agent_version: _Optional[str] = ..., brain: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("to", "port", "protocol")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    to: str
    port: int
    protocol: str
    def __init__(self, to: _Optional[str] = ..., port: _Optional[int] = ..., protocol: _Optional[str] = ..., **kwargs) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("allowed", "reasons", "hints", "text", "json")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    HINTS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    hints: _containers.RepeatedScalarFieldContainer[str]
    text: str
    json: str
    def __init__(self, allowed: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., hints: _Optional[_Iterable[str]] = ..., text: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class DryRunRequest(_message.Message):
    __slots__ = ("manifests",)
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    manifests: _containers.RepeatedCompositeFieldContainer[Manifest]
    def __init__(self, manifests: _Optional[_Iterable[_Union[Manifest, _Mapping]]] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: str
    def __init__(self, name: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class DryRunResponse(_message.Message):
    __slots__ = ("opened", "closed", "warnings", "rejected", "checked")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    opened: _containers.RepeatedCompositeFieldContainer[Connection]
    closed: _containers.RepeatedCompositeFieldContainer[Connection]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    rejected: _containers.RepeatedScalarFieldContainer[str]
    checked: int
    def __init__(self, opened: _Optional[_Iterable[_Union[Connection, _Mapping]]] = ..., closed: _Optional[_Iterable[_Union[Connection, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ..., rejected: _Optional[_Iterable[str]] = ..., checked: _Optional[int] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("to", "port", "protocol", "family")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    to: str
    port: int
    protocol: str
    family: str
    def __init__(self, to: _Optional[str] = ..., port: _Optional[int] = ..., protocol: _Optional[str] = ..., family: _Optional[str] = ..., **kwargs) -> None: ...

class SuggestRequest(_message.Message):
    __slots__ = ("flows",)
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    flows: _containers.RepeatedCompositeFieldContainer[Connection]
    def __init__(self, flows: _Optional[_Iterable[_Union[Connection, _Mapping]]] = ...) -> None: ...

class SuggestResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class LintRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LintResponse(_message.Message):
    __slots__ = ("warnings", "rejected")
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    rejected: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, warnings: _Optional[_Iterable[str]] = ..., rejected: _Optional[_Iterable[str]] = ...) -> None: ...

class TopDropsRequest(_message.Message):
    __slots__ = ("window", "group_by", "limit")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    window: str
    group_by: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    def __init__(self, window: _Optional[str] = ..., group_by: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ...) -> None: ...

class TopDropsResponse(_message.Message):
    __slots__ = ("rows", "window", "refused", "store")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[DropCount]
    window: str
    refused: _containers.RepeatedCompositeFieldContainer[DropRefusal]
    store: DropStoreStatus
    def __init__(self, rows: _Optional[_Iterable[_Union[DropCount, _Mapping]]] = ..., window: _Optional[str] = ..., refused: _Optional[_Iterable[_Union[DropRefusal, _Mapping]]] = ..., store: _Optional[_Union[DropStoreStatus, _Mapping]] = ...) -> None: ...

class DropStoreStatus(_message.Message):
    __slots__ = ("source", "redis_configured", "redis_available", "unavailable_since", "error", "buffered_events", "memory_since")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REDIS_CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    REDIS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_SINCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_SINCE_FIELD_NUMBER: _ClassVar[int]
    source: str
    redis_configured: bool
    redis_available: bool
    unavailable_since: float
    error: str
    buffered_events: int
    memory_since: float
    def __init__(self, source: _Optional[str] = ..., redis_configured: _Optional[bool] = ..., redis_available: _Optional[bool] = ..., unavailable_since: _Optional[float] = ..., error: _Optional[str] = ..., buffered_events: _Optional[int] = ..., memory_since: _Optional[float] = ...) -> None: ...

class DropRefusal(_message.Message):
    __slots__ = ("node", "reason", "count")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    node: str
    reason: str
    count: int
    def __init__(self, node: _Optional[str] = ..., reason: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class DropCount(_message.Message):
    __slots__ = ("key", "count")
    class KeyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    key: _containers.ScalarMap[str, str]
    count: int
    def __init__(self, key: _Optional[_Mapping[str, str]] = ..., count: _Optional[int] = ...) -> None: ...

class FollowDropsRequest(_message.Message):
    __slots__ = ("namespace", "pod", "direction", "protocol", "port")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    pod: str
    direction: str
    protocol: str
    port: int
    def __init__(self, namespace: _Optional[str] = ..., pod: _Optional[str] = ..., direction: _Optional[str] = ..., protocol: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class DropRecord(_message.Message):
    __slots__ = ("time", "node", "direction", "src", "dst", "src_pod", "dst_pod", "protocol", "sport", "dport", "policies", "store")
    TIME_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    SRC_POD_FIELD_NUMBER: _ClassVar[int]
    DST_POD_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SPORT_FIELD_NUMBER: _ClassVar[int]
    DPORT_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    time: float
    node: str
    direction: str
    src: str
    dst: str
    src_pod: str
    dst_pod: str
    protocol: str
    sport: int
    dport: int
    policies: _containers.RepeatedScalarFieldContainer[str]
    store: DropStoreStatus
    def __init__(self, time: _Optional[float] = ..., node: _Optional[str] = ..., direction: _Optional[str] = ..., src: _Optional[str] = ..., dst: _Optional[str] = ..., src_pod: _Optional[str] = ..., dst_pod: _Optional[str] = ..., protocol: _Optional[str] = ..., sport: _Optional[int] = ..., dport: _Optional[int] = ..., policies: _Optional[_Iterable[str]] = ..., store: _Optional[_Union[DropStoreStatus, _Mapping]] = ...) -> None: ...

class ResyncRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class ResyncResponse(_message.Message):
    __slots__ = ("ok", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
