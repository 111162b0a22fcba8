"""Pick and build a dataplane backend by name: ``nftables``, ``iptables`` or ``auto``."""

from __future__ import annotations

from stockade.agent import netns as ns
from stockade.agent.backends.base import CountingDataplane

NAMES = ("nftables", "iptables", "auto")


def nftables_available(netns: str | None = None) -> bool:
    """True when ``nft list tables`` works here (the binary exists and the kernel has nf_tables)."""
    try:
        return ns.run(["nft", "list", "tables"], netns, timeout=10).returncode == 0
    except (OSError, ValueError):
        return False


def resolve(name: str, netns: str | None = None) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(NAMES)}")
    if name == "auto":
        return "nftables" if nftables_available(netns) else "iptables"
    return name


def make_backend(name: str, netns: str | None = None, nflog_group: int = 100) -> CountingDataplane:
    """A backend for ``netns`` (None: the namespace we run in) logging denials to ``nflog_group``."""
    chosen = resolve(name, netns)
    if chosen == "nftables":
        from stockade.agent.backends.nft_render import NftConfig
        from stockade.agent.backends.nftables import NftablesBackend

        return NftablesBackend(netns, NftConfig(nflog_group=nflog_group))
    from stockade.agent.backends.iptables import IptablesBackend

    return IptablesBackend(netns, nflog_group=nflog_group)
