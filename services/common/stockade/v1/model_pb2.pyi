from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_UNSPECIFIED: _ClassVar[Protocol]
    PROTOCOL_TCP: _ClassVar[Protocol]
    PROTOCOL_UDP: _ClassVar[Protocol]
    PROTOCOL_SCTP: _ClassVar[Protocol]

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_INGRESS: _ClassVar[Direction]
    DIRECTION_EGRESS: _ClassVar[Direction]

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_NETWORK_POLICY: _ClassVar[Tier]
    TIER_ADMIN: _ClassVar[Tier]
    TIER_BASELINE: _ClassVar[Tier]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_ACCEPT: _ClassVar[Action]
    ACTION_DENY: _ClassVar[Action]
    ACTION_PASS: _ClassVar[Action]
PROTOCOL_UNSPECIFIED: Protocol
PROTOCOL_TCP: Protocol
PROTOCOL_UDP: Protocol
PROTOCOL_SCTP: Protocol
DIRECTION_UNSPECIFIED: Direction
DIRECTION_INGRESS: Direction
DIRECTION_EGRESS: Direction
TIER_NETWORK_POLICY: Tier
TIER_ADMIN: Tier
TIER_BASELINE: Tier
ACTION_ACCEPT: Action
ACTION_DENY: Action
ACTION_PASS: Action

class PortMatch(_message.Message):
    __slots__ = ("protocol", "port", "end_port")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    END_PORT_FIELD_NUMBER: _ClassVar[int]
    protocol: Protocol
    port: int
    end_port: int
    def __init__(self, protocol: _Optional[_Union[Protocol, str]] = ..., port: _Optional[int] = ..., end_port: _Optional[int] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("peer", "all_ports", "ports", "action")
    PEER_FIELD_NUMBER: _ClassVar[int]
    ALL_PORTS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    peer: str
    all_ports: bool
    ports: _containers.RepeatedCompositeFieldContainer[PortMatch]
    action: Action
    def __init__(self, peer: _Optional[str] = ..., all_ports: _Optional[bool] = ..., ports: _Optional[_Iterable[_Union[PortMatch, _Mapping]]] = ..., action: _Optional[_Union[Action, str]] = ...) -> None: ...

class Chain(_message.Message):
    __slots__ = ("id", "direction", "rules", "tier")
    ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    id: str
    direction: Direction
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    tier: Tier
    def __init__(self, id: _Optional[str] = ..., direction: _Optional[_Union[Direction, str]] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., tier: _Optional[_Union[Tier, str]] = ...) -> None: ...

class AddressSet(_message.Message):
    __slots__ = ("id", "cidrs")
    ID_FIELD_NUMBER: _ClassVar[int]
    CIDRS_FIELD_NUMBER: _ClassVar[int]
    id: str
    cidrs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., cidrs: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeModel(_message.Message):
    __slots__ = ("node", "sets", "chains", "ingress", "egress", "admin_ingress", "admin_egress", "baseline_ingress", "baseline_egress")
    class IngressEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EgressEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AdminIngressEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AdminEgressEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class BaselineIngressEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class BaselineEgressEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    SETS_FIELD_NUMBER: _ClassVar[int]
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    INGRESS_FIELD_NUMBER: _ClassVar[int]
    EGRESS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_INGRESS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_EGRESS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_INGRESS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_EGRESS_FIELD_NUMBER: _ClassVar[int]
    node: str
    sets: _containers.RepeatedCompositeFieldContainer[AddressSet]
    chains: _containers.RepeatedCompositeFieldContainer[Chain]
    ingress: _containers.ScalarMap[str, str]
    egress: _containers.ScalarMap[str, str]
    admin_ingress: _containers.ScalarMap[str, str]
    admin_egress: _containers.ScalarMap[str, str]
    baseline_ingress: _containers.ScalarMap[str, str]
    baseline_egress: _containers.ScalarMap[str, str]
    def __init__(self, node: _Optional[str] = ..., sets: _Optional[_Iterable[_Union[AddressSet, _Mapping]]] = ..., chains: _Optional[_Iterable[_Union[Chain, _Mapping]]] = ..., ingress: _Optional[_Mapping[str, str]] = ..., egress: _Optional[_Mapping[str, str]] = ..., admin_ingress: _Optional[_Mapping[str, str]] = ..., admin_egress: _Optional[_Mapping[str, str]] = ..., baseline_ingress: _Optional[_Mapping[str, str]] = ..., baseline_egress: _Optional[_Mapping[str, str]] = ...) -> None: ...

class NodeDelta(_message.Message):
    __slots__ = ("node", "new_sets", "set_added", "set_removed", "new_chains", "ingress_set", "ingress_removed", "egress_set", "egress_removed", "removed_chains", "removed_sets", "admin_ingress_set", "admin_ingress_removed", "admin_egress_set", "admin_egress_removed", "baseline_ingress_set", "baseline_ingress_removed", "baseline_egress_set", "baseline_egress_removed")
    class IngressSetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EgressSetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AdminIngressSetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AdminEgressSetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class BaselineIngressSetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class BaselineEgressSetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    NEW_SETS_FIELD_NUMBER: _ClassVar[int]
    SET_ADDED_FIELD_NUMBER: _ClassVar[int]
    SET_REMOVED_FIELD_NUMBER: _ClassVar[int]
    NEW_CHAINS_FIELD_NUMBER: _ClassVar[int]
    INGRESS_SET_FIELD_NUMBER: _ClassVar[int]
    INGRESS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    EGRESS_SET_FIELD_NUMBER: _ClassVar[int]
    EGRESS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_CHAINS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_SETS_FIELD_NUMBER: _ClassVar[int]
    ADMIN_INGRESS_SET_FIELD_NUMBER: _ClassVar[int]
    ADMIN_INGRESS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    ADMIN_EGRESS_SET_FIELD_NUMBER: _ClassVar[int]
    ADMIN_EGRESS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    BASELINE_INGRESS_SET_FIELD_NUMBER: _ClassVar[int]
    BASELINE_INGRESS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    BASELINE_EGRESS_SET_FIELD_NUMBER: _ClassVar[int]
    BASELINE_EGRESS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    node: str
    new_sets: _containers.RepeatedCompositeFieldContainer[AddressSet]
    set_added: _containers.RepeatedCompositeFieldContainer[AddressSet]
    set_removed: _containers.RepeatedCompositeFieldContainer[AddressSet]
    new_chains: _containers.RepeatedCompositeFieldContainer[Chain]
    ingress_set: _containers.ScalarMap[str, str]
    ingress_removed: _containers.RepeatedScalarFieldContainer[str]
    egress_set: _containers.ScalarMap[str, str]
    egress_removed: _containers.RepeatedScalarFieldContainer[str]
    removed_chains: _containers.RepeatedScalarFieldContainer[str]
    removed_sets: _containers.RepeatedScalarFieldContainer[str]
    admin_ingress_set: _containers.ScalarMap[str, str]
    admin_ingress_removed: _containers.RepeatedScalarFieldContainer[str]
    admin_egress_set: _containers.ScalarMap[str, str]
    admin_egress_removed: _containers.RepeatedScalarFieldContainer[str]
    baseline_ingress_set: _containers.ScalarMap[str, str]
    baseline_ingress_removed: _containers.RepeatedScalarFieldContainer[str]
    baseline_egress_set: _containers.ScalarMap[str, str]
    baseline_egress_removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[str] = ..., new_sets: _Optional[_Iterable[_Union[AddressSet, _Mapping]]] = ..., set_added: _Optional[_Iterable[_Union[AddressSet, _Mapping]]] = ..., set_removed: _Optional[_Iterable[_Union[AddressSet, _Mapping]]] = ..., new_chains: _Optional[_Iterable[_Union[Chain, _Mapping]]] = ..., ingress_set: _Optional[_Mapping[str, str]] = ..., ingress_removed: _Optional[_Iterable[str]] = ..., egress_set: _Optional[_Mapping[str, str]] = ..., egress_removed: _Optional[_Iterable[str]] = ..., removed_chains: _Optional[_Iterable[str]] = ..., removed_sets: _Optional[_Iterable[str]] = ..., admin_ingress_set: _Optional[_Mapping[str, str]] = ..., admin_ingress_removed: _Optional[_Iterable[str]] = ..., admin_egress_set: _Optional[_Mapping[str, str]] = ..., admin_egress_removed: _Optional[_Iterable[str]] = ..., baseline_ingress_set: _Optional[_Mapping[str, str]] = ..., baseline_ingress_removed: _Optional[_Iterable[str]] = ..., baseline_egress_set: _Optional[_Mapping[str, str]] = ..., baseline_egress_removed: _Optional[_Iterable[str]] = ...) -> None: ...
