"""The sync protocol's version, in one place both halves import.

1   the first release. Its model was IPv4 only: its agents skip IPv6 set elements and pod
    addresses, so on a dual-stack cluster every policy would be bypassed over IPv6, silently.
2   the dual-stack model (addresses of both families everywhere) and the node's readiness
    (`Status`) on the stream.
3   the ClusterNetworkPolicy tiers (Admin and Baseline dispatch, Deny and Pass rules): an agent
    of protocol 2 would drop those fields unread and enforce none of the administrator's rules.

A peer that sends no version (the field is absent, read as 0) speaks protocol 1. Each side
refuses a peer older than ``MIN_PEER`` with a message naming both versions and what to
upgrade; a newer peer is accepted (it is the newer side's job to speak down or refuse).
"""

from __future__ import annotations

PROTOCOL = 3
MIN_PEER = 3

_MEANING = {1: "IPv4-only model", 2: "dual-stack model", 3: "tiered model"}


def spoken(value: int) -> int:
    """The protocol a peer speaks from the field it sent (absent: 1, which had no field)."""
    return value or 1


def describe(protocol: int) -> str:
    return f"sync protocol {protocol} ({_MEANING.get(protocol, 'newer than this release')})"


def compatible(value: int) -> bool:
    return spoken(value) >= MIN_PEER


def agent_too_old(node: str, value: int, agent_version: str = "") -> str:
    """Why a brain refuses an agent's stream (FAILED_PRECONDITION)."""
    who = f" ({agent_version[:64]})" if agent_version else ""
    return (
        f"the agent on node {node}{who} speaks {describe(spoken(value))}; this brain speaks {describe(PROTOCOL)} "
        f"and needs agents of sync protocol {MIN_PEER} or newer (an older agent would skip IPv6 or "
        f"ClusterNetworkPolicy rules silently): upgrade the agent on node {node} to this brain's release"
    )


def brain_too_old(address: str, value: int) -> str:
    """Why an agent refuses a brain's stream (it then keeps its rules and retries)."""
    return (
        f"the brain at {address} speaks {describe(spoken(value))}; this agent speaks {describe(PROTOCOL)} "
        f"and needs a brain of sync protocol {MIN_PEER} or newer (an older brain would send no IPv6 or "
        f"ClusterNetworkPolicy rules): "
        f"upgrade the brain to this agent's release"
    )


def release() -> str:
    """This release's version as the CLI, the brain and `stockade version` report it: the installed
    distribution's, "unknown" when run from a tree that is not installed."""
    from importlib import metadata

    try:
        return metadata.version("stockade")
    except metadata.PackageNotFoundError:
        return "unknown"
