"""Blocked connections, agent side: a bounded buffer of events streamed to the brain.

Wiring (in the agent's main)::

    channel = grpc.aio.secure_channel(brain, mtls_credentials, options=CHANNEL_OPTIONS)
    reporter = Reporter(node_name, channel, registry=registry)
    task = asyncio.create_task(reporter.run())
    reporter.offer(events)                # from the capture (NFLOG) loop, never blocks
    reporter.count_shed("agent_nflog_overrun", n)   # losses the capture itself saw
"""

from stockade.agent.reporter.buffer import REASON_BUFFER_FULL, ReportBuffer
from stockade.agent.reporter.client import CHANNEL_OPTIONS, Reporter

__all__ = ["CHANNEL_OPTIONS", "REASON_BUFFER_FULL", "ReportBuffer", "Reporter"]
