"""The agent's sync client: hello, apply snapshot/deltas to the dataplane, ack, reconnect."""

from stockade.agent.sync.applier import AgentStatus, Applier
from stockade.agent.sync.client import AgentClient, Backoff, channel_options, run_agent
from stockade.agent.sync.metrics import SyncCollector

__all__ = ["AgentClient", "AgentStatus", "Applier", "Backoff", "SyncCollector", "channel_options", "run_agent"]
