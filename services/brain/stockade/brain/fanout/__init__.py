"""The brain's fan-out: per-node generations, per-agent streams, acks and realization."""

from stockade.brain.fanout.feed import NodeFeed
from stockade.brain.fanout.hub import FanOut
from stockade.brain.fanout.session import Session
from stockade.brain.fanout.status import NodeStatus, PolicyRealization

__all__ = ["FanOut", "NodeFeed", "NodeStatus", "PolicyRealization", "Session"]
