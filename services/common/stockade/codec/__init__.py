"""NodeModel / NodeDelta <-> protobuf, with validation of everything that comes off the wire."""

from stockade.codec.convert import (
    delta_from_proto,
    delta_to_proto,
    fill_delta,
    model_from_proto,
    model_to_proto,
)
from stockade.codec.validate import DEFAULT_LIMITS, Limits, ValidationError, check_node_name

__all__ = [
    "DEFAULT_LIMITS",
    "Limits",
    "ValidationError",
    "check_node_name",
    "delta_from_proto",
    "delta_to_proto",
    "fill_delta",
    "model_from_proto",
    "model_to_proto",
]
