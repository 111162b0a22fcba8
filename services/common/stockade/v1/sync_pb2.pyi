from stockade.v1 import model_pb2 as _model_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("hello", "ack", "status")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ack: Ack
    status: Status
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., status: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node", "epoch", "applied_generation", "digest", "agent_version", "backend", "protocol", "status")
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    node: str
    epoch: str
    applied_generation: int
    digest: str
    agent_version: str
    backend: str
    protocol: int
    status: Status
    def __init__(self, node: _Optional[str] = ..., epoch: _Optional[str] = ..., applied_generation: _Optional[int] = ..., digest: _Optional[str] = ..., agent_version: _Optional[str] = ..., backend: _Optional[str] = ..., protocol: _Optional[int] = ..., status: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("ready", "problems")
    READY_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ready: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("generation", "ok", "error", "digest")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    generation: int
    ok: bool
    error: str
    digest: str
    def __init__(self, generation: _Optional[int] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class BrainMessage(_message.Message):
    __slots__ = ("snapshot", "deltas", "resume", "protocol")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    snapshot: Snapshot
    deltas: Deltas
    resume: Resume
    protocol: int
    def __init__(self, snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., deltas: _Optional[_Union[Deltas, _Mapping]] = ..., resume: _Optional[_Union[Resume, _Mapping]] = ..., protocol: _Optional[int] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("epoch", "generation", "digest", "model")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    generation: int
    digest: str
    model: _model_pb2.NodeModel
    def __init__(self, epoch: _Optional[str] = ..., generation: _Optional[int] = ..., digest: _Optional[str] = ..., model: _Optional[_Union[_model_pb2.NodeModel, _Mapping]] = ...) -> None: ...

class Deltas(_message.Message):
    __slots__ = ("epoch", "base_generation", "generation", "digest", "steps")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BASE_GENERATION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    base_generation: int
    generation: int
    digest: str
    steps: _containers.RepeatedCompositeFieldContainer[_model_pb2.NodeDelta]
    def __init__(self, epoch: _Optional[str] = ..., base_generation: _Optional[int] = ..., generation: _Optional[int] = ..., digest: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[_model_pb2.NodeDelta, _Mapping]]] = ...) -> None: ...

class Resume(_message.Message):
    __slots__ = ("epoch", "generation", "digest")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    generation: int
    digest: str
    def __init__(self, epoch: _Optional[str] = ..., generation: _Optional[int] = ..., digest: _Optional[str] = ...) -> None: ...
