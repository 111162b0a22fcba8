from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DropDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DROP_DIRECTION_UNSPECIFIED: _ClassVar[DropDirection]
    DROP_DIRECTION_INGRESS: _ClassVar[DropDirection]
    DROP_DIRECTION_EGRESS: _ClassVar[DropDirection]
DROP_DIRECTION_UNSPECIFIED: DropDirection
DROP_DIRECTION_INGRESS: DropDirection
DROP_DIRECTION_EGRESS: DropDirection

class DropEvent(_message.Message):
    __slots__ = ("time", "direction", "src", "dst", "protocol", "sport", "dport", "chain", "rule")
    TIME_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SPORT_FIELD_NUMBER: _ClassVar[int]
    DPORT_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    time: float
    direction: DropDirection
    src: str
    dst: str
    protocol: str
    sport: int
    dport: int
    chain: str
    rule: int
    def __init__(self, time: _Optional[float] = ..., direction: _Optional[_Union[DropDirection, str]] = ..., src: _Optional[str] = ..., dst: _Optional[str] = ..., protocol: _Optional[str] = ..., sport: _Optional[int] = ..., dport: _Optional[int] = ..., chain: _Optional[str] = ..., rule: _Optional[int] = ...) -> None: ...

class DropBatch(_message.Message):
    __slots__ = ("node", "instance", "seq", "events", "shed")
    class ShedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    node: str
    instance: str
    seq: int
    events: _containers.RepeatedCompositeFieldContainer[DropEvent]
    shed: _containers.ScalarMap[str, int]
    def __init__(self, node: _Optional[str] = ..., instance: _Optional[str] = ..., seq: _Optional[int] = ..., events: _Optional[_Iterable[_Union[DropEvent, _Mapping]]] = ..., shed: _Optional[_Mapping[str, int]] = ...) -> None: ...

class DropAck(_message.Message):
    __slots__ = ("last_seq", "batches", "events", "brain", "accepted_seq")
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    BRAIN_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    last_seq: int
    batches: int
    events: int
    brain: str
    accepted_seq: int
    def __init__(self, last_seq: _Optional[int] = ..., batches: _Optional[int] = ..., events: _Optional[int] = ..., brain: _Optional[str] = ..., accepted_seq: _Optional[int] = ...) -> None: ...
