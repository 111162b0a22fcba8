"""NFLOG prefixes of ClusterNetworkPolicy tier rules (``<chain id>/<rule index>``): parsed into
the chain and the rule, malformed ones ignored and counted, on built messages and on real packets.

The real-packet test adds two chains to test_nflog's node ruleset (its namespaces): one logging
as a tier DENY rule does, one with a malformed prefix.
"""

from __future__ import annotations

import itertools
import socket
import struct

import pytest
from test_nflog import GROUP, NODE, SERVER_IP, collect, ipv4, sh, syn, topology

from stockade.agent.nflog import NflogReader
from stockade.agent.nflog import protocol as p
from stockade.agent.nflog.reader import MAX_RULE_INDEX, parse_prefix
from stockade.agent.reporter.wire import encode_batch
from stockade.model.rules import Direction

__all__ = ["topology"]  # the fixture, imported for pytest

IN_CHAIN = "in_" + "0f" * 16
OUT_CHAIN = "out_" + "e1" * 16


def test_tier_prefixes_parse_into_chain_and_rule() -> None:
    assert parse_prefix(f"{IN_CHAIN}/0") == (Direction.INGRESS, IN_CHAIN, 0)
    assert parse_prefix(f"{OUT_CHAIN}/17") == (Direction.EGRESS, OUT_CHAIN, 17)
    assert parse_prefix(f"{IN_CHAIN}/{MAX_RULE_INDEX}") == (Direction.INGRESS, IN_CHAIN, MAX_RULE_INDEX)
    # a NetworkPolicy deny tail: the chain id alone, as before tiers
    assert parse_prefix(IN_CHAIN) == (Direction.INGRESS, IN_CHAIN, None)
    assert parse_prefix("in_abc") == (Direction.INGRESS, "in_abc", None)


@pytest.mark.parametrize(
    "prefix",
    [
        f"{IN_CHAIN}/",  # no index
        f"{IN_CHAIN}/-1",
        f"{IN_CHAIN}/+1",
        f"{IN_CHAIN}/01",  # leading zero: not how a backend writes it
        f"{IN_CHAIN}/1x",
        f"{IN_CHAIN}/1/2",
        f"{IN_CHAIN}/ 1",
        f"{IN_CHAIN}/{MAX_RULE_INDEX + 1}",
        f"{IN_CHAIN}/9999999999999999999999",
        f"{IN_CHAIN}/٣",  # a non-ASCII digit
        "in_/3",  # no chain hex
        "in_XYZ/3",
        f"in_{'a' * 65}/3",
        "out_/0",
        "foreign/1",
        "/1",
        "",
    ],
)
def test_malformed_tier_prefixes_are_refused(prefix: str) -> None:
    assert parse_prefix(prefix) is None


def _reader() -> NflogReader:
    return NflogReader("node-1", GROUP, clock=lambda: 1700000000.0)


def test_the_reader_carries_the_rule_and_counts_malformed_prefixes_as_ignored() -> None:
    reader = _reader()
    payload = ipv4("10.0.0.1", "10.0.0.2", 6, struct.pack("!HH", 40000, 443) + b"\0" * 16)
    other = ipv4("10.0.0.1", "10.0.0.2", 6, struct.pack("!HH", 40001, 443) + b"\0" * 16)
    buf = b"".join(
        p.build_packet_message(socket.AF_INET, GROUP, prefix, data)
        for prefix, data in [
            (f"{IN_CHAIN}/3", payload),
            (f"{IN_CHAIN}/3", payload),  # the same attempt again: folded
            (IN_CHAIN, payload),  # the same flow through the deny tail: another event
            (f"{IN_CHAIN}/x", other),
            (f"{IN_CHAIN}/99999999", other),
            ("something-else", other),
        ]
    )
    events = []
    for msg in p.parse_messages(buf):
        assert isinstance(msg, p.NflogPacket)
        ev = reader._event(msg, 1700000000.0)
        if ev is not None:
            events.append(ev)
    assert [(e.chain, e.rule, e.direction) for e in events] == [
        (IN_CHAIN, 3, Direction.INGRESS),
        (IN_CHAIN, None, Direction.INGRESS),
    ]
    assert (reader.stats.messages, reader.stats.duplicates, reader.stats.ignored) == (6, 1, 3)
    # and to the brain: the rule only where there is one
    batch = encode_batch("node-1", "i", 1, events, {})
    assert [(e.chain, e.HasField("rule"), e.rule) for e in batch.events] == [(IN_CHAIN, True, 3), (IN_CHAIN, False, 0)]


# -- real packets ------------------------------------------------------------------------------

TIER_PORT, BAD_PORT = 9010, 9011
# Source ports below the kernel's ephemeral range, never the same twice (conftest's
# `fresh_ports`, in a range of this module's own: its chains log to their own ports, so another
# test's attempts cannot collide with these; importing conftest fails when pytest is given
# several test directories, whose conftests share the name).
_PORTS = itertools.count(31000)


def fresh_ports(count: int) -> list[int]:
    ports = [next(_PORTS) for _ in range(count)]
    assert ports[-1] < 32768
    return ports


@pytest.fixture(scope="module")
def tier_rules(topology: None) -> None:
    """A tier DENY rule (index 2 of its chain) as the backends log it, and a chain whose prefix is
    malformed, jumped from the node's forward chain for their own ports."""
    rules = f"""
add chain inet nltest {IN_CHAIN}
add rule inet nltest {IN_CHAIN} counter log group {GROUP} prefix "{IN_CHAIN}/2" drop
add chain inet nltest in_bad
add rule inet nltest in_bad counter log group {GROUP} prefix "{IN_CHAIN}/two" drop
add rule inet nltest forward ip daddr {SERVER_IP} tcp dport {TIER_PORT} jump {IN_CHAIN}
add rule inet nltest forward ip daddr {SERVER_IP} tcp dport {BAD_PORT} jump in_bad
"""
    sh("ip", "netns", "exec", NODE, "nft", "-f", "-", stdin=rules)


@pytest.mark.root
def test_real_tier_drops_carry_their_rule(tier_rules: None) -> None:
    with NflogReader("node-1", GROUP, netns=NODE) as reader:
        bad_port, *tier_ports = fresh_ports(4)  # a denied 5-tuple is logged once: fresh ones
        bad = syn(BAD_PORT, sport=bad_port)[0]
        ports = {syn(TIER_PORT, sport=sport)[0] for sport in tier_ports}
        events = collect(reader, 3)
        # the malformed one was logged by the kernel too, and is counted as ignored
        assert reader.stats.ignored >= 1
    assert bad not in {e.sport for e in events}
    assert {e.sport for e in events} == ports
    assert {(e.chain, e.rule, e.direction, e.dport) for e in events} == {(IN_CHAIN, 2, Direction.INGRESS, TIER_PORT)}
