"""Drop events are untrusted input: every field checked and canonicalised at the brain's edge.

An agent (or whoever holds a node's certificate) may send anything a `DropEvent` can carry. What
this module lets through is safe by construction for everything downstream: the ``|``-joined
Redis flow keys and ``\\n``-separated records (no field can hold a delimiter), the Prometheus
labels (values from small fixed sets) and the CLI (no control characters).

`clean_event` is on the ingest hot path: verdicts for the strings that repeat (addresses, chain
ids) are cached in bounded dicts, so a valid event costs a few dict lookups.
"""

from __future__ import annotations

import re
import socket
from typing import Any

from stockade.codec.validate import ValidationError, check_chain_id, check_node_name
from stockade.model.rules import Direction

# What an agent writes (`stockade.agent.nflog.packet.protocol_name`): a name for the protocols
# with ports, the IP protocol number in decimal for the rest.
PORTED_PROTOCOLS: frozenset[str] = frozenset({"TCP", "UDP", "SCTP"})
PROTOCOLS: frozenset[str] = PORTED_PROTOCOLS | frozenset(str(n) for n in range(256))
# Protocol label values Prometheus gets; every other number is "other".
LABEL_PROTOCOLS: frozenset[str] = PORTED_PROTOCOLS | {"1", "58"}  # + ICMP, ICMPv6

MAX_FUTURE = 600.0  # seconds an event may be ahead of the brain's clock (agents' clocks drift)
MAX_ADDRESS = 45  # the longest textual IPv6 address with an embedded IPv4 part
MAX_INSTANCE = 64
# A tier rule's index in its chain (`DropEvent.rule`): the agent's NFLOG prefix allows no more
# (`stockade.agent.nflog.reader.MAX_RULE_INDEX`), and no chain has that many rules.
MAX_RULE_INDEX = 65535
INVALID_RULE = -1  # what `clean_rule` says of a rule index that is out of bounds or mistyped
# Full matches only (a pattern ending in `$` also matches before a final newline).
_CHAIN_ID = re.compile(r"(in|out)_[0-9a-f]{1,64}")
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_INSTANCE = re.compile(r"[0-9A-Za-z_-]{0,64}")
# Namespace and pod names as the Kubernetes API allows them (RFC 1123 label; DNS subdomain).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")

_DIRECTIONS: dict[Any, str] = {
    Direction.INGRESS: "ingress",
    Direction.EGRESS: "egress",
    1: "ingress",  # the wire's DropDirection numbers
    2: "egress",
}
_CHAIN_PREFIX = {"ingress": "in_", "egress": "out_"}

_CACHE_MAX = 1 << 16
_addresses: dict[str, str] = {}  # raw text -> canonical text, "" when invalid
_chains: dict[str, bool] = {}


def _bounded_put(cache: dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()  # a flood of distinct values: start over rather than grow
    cache[key] = value


def canonical_address(raw: Any) -> str | None:
    """``raw`` as a canonical IPv4 or IPv6 address, or None when it is no address (or has a zone)."""
    if type(raw) is not str:
        return None
    hit = _addresses.get(raw)
    if hit is not None:
        return hit or None
    if not raw or len(raw) > MAX_ADDRESS:
        return None
    out = ""
    try:
        family = socket.AF_INET6 if ":" in raw else socket.AF_INET
        # inet_pton refuses zone indexes, leading zeros and every other non-address.
        out = socket.inet_ntop(family, socket.inet_pton(family, raw))
    except (OSError, ValueError):
        out = ""
    _bounded_put(_addresses, raw, out)
    return out or None


def valid_chain(chain: Any, direction: str) -> bool:
    """A chain id as the codec allows them, of the event's direction (``in_`` for ingress)."""
    if type(chain) is not str:
        return False
    ok = _chains.get(chain)
    if ok is None:
        try:
            ok = bool(_CHAIN_ID.fullmatch(chain)) and bool(check_chain_id(chain, "chain"))
        except ValidationError:
            ok = False
        _bounded_put(_chains, chain, ok)
    return ok and chain.startswith(_CHAIN_PREFIX[direction])


# (time, direction, src, dst, protocol, sport, dport, chain), every field checked.
CleanEvent = tuple[float, str, str, str, str, int, int, str]


def clean_event(ev: Any, now: float) -> CleanEvent | None:
    """The event's fields, checked and canonical, or None when any of them is invalid.

    ``ev`` is anything shaped like a `BlockedEvent` or a wire ``DropEvent``; a missing or
    mistyped attribute makes it invalid, never raises. Inlined cache lookups: this runs for
    every event."""
    try:
        t = ev.time
        direction = _DIRECTIONS.get(ev.direction)
        src, dst, proto = ev.src, ev.dst, ev.protocol
        sport, dport, chain = ev.sport, ev.dport, ev.chain
        if direction is None or type(proto) is not str or proto not in PROTOCOLS:
            return None
        if type(t) is not float and type(t) is not int:
            return None
        if not (0 <= t <= now + MAX_FUTURE):  # NaN fails this too
            return None
        if type(sport) is not int or type(dport) is not int or not (0 <= sport <= 65535 and 0 <= dport <= 65535):
            return None
        if (sport or dport) and proto not in PORTED_PROTOCOLS:
            return None  # the agent reports ports only for protocols that have them
        s = _addresses.get(src) if type(src) is str else None
        if s is None:
            s = canonical_address(src) or ""
        d = _addresses.get(dst) if type(dst) is str else None
        if d is None:
            d = canonical_address(dst) or ""
        if not s or not d or ((":" in s) != (":" in d)):
            return None  # not addresses, or not of one family (as both of one packet are)
        ok = _chains.get(chain) if type(chain) is str else False
        if ok is None:
            ok = valid_chain(chain, direction)
        if not ok or not chain.startswith(_CHAIN_PREFIX[direction]):
            return None
    except (AttributeError, TypeError):
        return None
    return (float(t), direction, s, d, proto, sport, dport, chain)


def clean_rule(ev: Any) -> int | None:
    """The event's tier rule index (None: none, a NetworkPolicy deny) or `INVALID_RULE`.

    A wire ``DropEvent`` carries it as an optional field (unset reads as 0, so presence is asked
    for); a `BlockedEvent` as ``rule`` (None or int); anything else has none. Never raises."""
    try:
        has = getattr(ev, "HasField", None)
        if has is not None and not has("rule"):
            return None
        rule = getattr(ev, "rule", None)
    except (AttributeError, TypeError, ValueError):
        return None  # a message type without the field: an older agent's
    if rule is None:
        return None
    if type(rule) is not int or not 0 <= rule <= MAX_RULE_INDEX:
        return INVALID_RULE
    return rule


def valid_node(name: Any) -> bool:
    if type(name) is not str or not _NODE_NAME.fullmatch(name):
        return False
    try:
        check_node_name(name)
    except ValidationError:
        return False
    return True


def valid_instance(instance: Any) -> bool:
    """An agent instance id: the agent sends a hex UUID; anything short and plain will do."""
    return type(instance) is str and bool(_INSTANCE.fullmatch(instance))


def valid_pod_ref(namespace: Any, name: Any) -> bool:
    """A (namespace, pod name) pair as the API allows them: safe in keys, records and labels."""
    return (
        type(namespace) is str
        and type(name) is str
        and len(namespace) <= 63
        and len(name) <= 253
        and bool(_DNS_LABEL.fullmatch(namespace))
        and bool(_DNS_SUBDOMAIN.fullmatch(name))
    )


def protocol_label(proto: str) -> str:
    return proto if proto in LABEL_PROTOCOLS else "other"
