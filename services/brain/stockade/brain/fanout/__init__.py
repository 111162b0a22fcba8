"""The brain's fan-out: per-node generations, per-agent streams, acks and realization."""

from stockade.brain.fanout.feed import NodeFeed
from stockade.brain.fanout.hub import FanOut
from stockade.brain.fanout.metrics import FanOutCollector
from stockade.brain.fanout.session import Session
from stockade.brain.fanout.status import NodeStatus, PolicyRealization

__all__ = ["FanOut", "FanOutCollector", "NodeFeed", "NodeStatus", "PolicyRealization", "Session"]
