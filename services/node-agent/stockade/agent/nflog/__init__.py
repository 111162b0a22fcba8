"""Blocked-connection capture: an NFLOG netlink reader and its message parser.

`protocol` speaks nfnetlink_log (config messages out, packet messages in), `packet` reads the
logged IP/L4 headers, `reader` owns the socket and turns messages into `BlockedEvent`s.
"""

from stockade.agent.nflog.packet import Flow, parse_flow
from stockade.agent.nflog.protocol import NflogPacket, parse_messages
from stockade.agent.nflog.reader import NflogReader, NflogStats

__all__ = ["Flow", "NflogPacket", "NflogReader", "NflogStats", "parse_flow", "parse_messages"]
