"""Dataplane backends: the rule model rendered into nftables or iptables + ipset."""

from stockade.agent.backends.base import ApplyError, CountingDataplane, Dataplane
from stockade.agent.backends.selection import make_backend, resolve

__all__ = ["ApplyError", "CountingDataplane", "Dataplane", "make_backend", "resolve"]
