"""Checks for names, ids, addresses and sizes of what arrives from the network.

Every check raises `ValidationError` with a message that says which field was wrong and why,
so a bad message can end its stream with a clear status before it reaches the engine or the
kernel.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from functools import lru_cache

from stockade.model.limits import NODE_LIMITS, NodeLimits

# Kubernetes node names are DNS subdomains (RFC 1123).
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_SET_ID = re.compile(r"^ag_[0-9a-f]{1,64}\Z")
_CHAIN_ID = re.compile(r"^(in|out)_[0-9a-f]{1,64}\Z")
_DIGEST = re.compile(r"^[0-9a-f]{0,128}\Z")
_EPOCH = re.compile(r"^[0-9A-Za-z_-]{0,64}\Z")


class ValidationError(ValueError):
    """A message from the network is malformed; the text says which field and why."""


# One definition of the limits, shared with the brain's policy validation and compiler.
Limits = NodeLimits
DEFAULT_LIMITS: NodeLimits = NODE_LIMITS


def check_node_name(name: str, field: str = "node") -> str:
    if not name:
        raise ValidationError(f"{field}: empty node name")
    if len(name) > 253 or not _NODE_NAME.fullmatch(name):
        raise ValidationError(f"{field}: {name[:80]!r} is not a valid node name (an RFC 1123 DNS subdomain)")
    return name


def check_set_id(sid: str, field: str) -> str:
    if not _SET_ID.fullmatch(sid):
        raise ValidationError(f"{field}: {sid[:80]!r} is not an address set id (ag_<hex>)")
    return sid


def check_chain_id(cid: str, field: str) -> str:
    if not _CHAIN_ID.fullmatch(cid):
        raise ValidationError(f"{field}: {cid[:80]!r} is not a chain id (in_<hex> or out_<hex>)")
    return cid


# Parsing with ipaddress is slow next to everything else an agent does per message, and the
# same addresses come again and again (a pod flapping in and out of a selector): remember the
# verdicts. Only the text is cached, so a bad value costs no more than a good one.
@lru_cache(maxsize=1 << 16)
def _ip_problem(ip: str) -> str | None:
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return f"{ip[:80]!r} is not an IP address"
    if str(parsed) != ip:
        return f"{ip!r} is not in canonical form ({parsed})"
    return None


@lru_cache(maxsize=1 << 16)
def _cidr_problem(cidr: str) -> str | None:
    if "/" not in cidr:
        return f"{cidr[:80]!r} is not a CIDR (address/prefix)"
    try:
        ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        return f"{cidr[:80]!r} is not a valid CIDR: {e}"
    return None


def check_ip(ip: str, field: str) -> str:
    problem = _ip_problem(ip) if len(ip) <= 64 else f"{ip[:80]!r} is not an IP address"
    if problem:
        raise ValidationError(f"{field}: {problem}")
    return ip


def check_cidr(cidr: str, field: str) -> str:
    problem = _cidr_problem(cidr) if len(cidr) <= 64 else f"{cidr[:80]!r} is not a CIDR"
    if problem:
        raise ValidationError(f"{field}: {problem}")
    return cidr


def check_digest(digest: str, field: str = "digest") -> str:
    if not _DIGEST.fullmatch(digest):
        raise ValidationError(f"{field}: {digest[:80]!r} is not a hex digest")
    return digest


def check_epoch(epoch: str, field: str = "epoch") -> str:
    if not _EPOCH.fullmatch(epoch):
        raise ValidationError(f"{field}: {epoch[:80]!r} is not a brain epoch")
    return epoch


def check_count(n: int, limit: int, field: str) -> None:
    if n > limit:
        raise ValidationError(f"{field}: {n} entries, more than the limit of {limit}")


MAX_PROBLEMS = 32  # readiness problems one agent may report
MAX_PROBLEM_TEXT = 1_000


def check_problems(problems: Sequence[str], field: str) -> tuple[str, ...]:
    """The readiness problems an agent reports: a bounded list of bounded texts."""
    check_count(len(problems), MAX_PROBLEMS, field)
    for i, text in enumerate(problems):
        if not text:
            raise ValidationError(f"{field}[{i}]: empty problem text")
        if len(text) > MAX_PROBLEM_TEXT:
            raise ValidationError(f"{field}[{i}]: longer than {MAX_PROBLEM_TEXT} characters")
    return tuple(problems)
