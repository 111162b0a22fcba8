"""`--brain HOST:PORT[,HOST:PORT...]`: parsing, resolving names to every brain, the node's order,
and the agent's rounds over them (`stockade.agent.sync.brains`)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from stockade.agent.sync.brains import BrainRounds
from stockade.dial import Candidate, Target, TargetError, order_for, parse_targets, resolve


def test_parse_lists_names_and_ipv6() -> None:
    assert parse_targets("127.0.0.1:7443, brains.example:7443,[fd00::1]:7443,127.0.0.1:7443") == [
        Target("127.0.0.1", 7443),
        Target("brains.example", 7443),
        Target("fd00::1", 7443),  # a duplicate is dropped
    ]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "no brain address"),
        (" , ", "no brain address"),
        ("brain", "expected HOST:PORT"),
        (":7443", "expected HOST:PORT"),
        ("brain:0", "port must be a number"),
        ("brain:70000", "port must be a number"),
        ("brain:x", "port must be a number"),
        ("fd00::1:7443", "IPv6 address in brackets"),
        ("[fd00::1]7443", "[ADDRESS]:PORT"),
        ("[nope]:7443", "not an IPv6 address"),
    ],
)
def test_parse_refuses_bad_values_saying_why(value: str, words: str) -> None:
    with pytest.raises(TargetError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_targets(value)


def test_unix_socket_targets_pass_through() -> None:
    targets = parse_targets("unix:/run/brain.sock,127.0.0.1:7443")
    assert [str(t) for t in targets] == ["unix:/run/brain.sock", "127.0.0.1:7443"]
    found, _ = resolve(targets, lambda host, port: [])
    assert Candidate("unix:/run/brain.sock") in found
    with pytest.raises(TargetError, match="unix:PATH"):
        parse_targets("unix:")


def test_a_name_resolves_to_every_brain_and_keeps_its_name_for_tls() -> None:
    def resolver(host: str, port: int) -> list[str]:
        return {"brains.test": ["10.0.0.2", "10.0.0.1", "fd00::3"], "gone.test": []}[host]

    found, problems = resolve(parse_targets("brains.test:7443,gone.test:7443,127.0.0.1:9"), resolver)
    assert found == sorted(
        [
            Candidate("ipv4:10.0.0.1:7443", "brains.test"),
            Candidate("ipv4:10.0.0.2:7443", "brains.test"),
            Candidate("ipv6:[fd00::3]:7443", "brains.test"),
            Candidate("127.0.0.1:9"),
        ]
    )
    assert problems == ["gone.test:7443 resolves to no address"]
    assert {c.endpoint for c in found} == {"10.0.0.1:7443", "10.0.0.2:7443", "[fd00::3]:7443", "127.0.0.1:9"}


def test_a_resolver_error_is_a_problem_not_a_crash() -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    found, problems = resolve(parse_targets("nowhere.test:1,127.0.0.1:2"), resolver)
    assert found == [Candidate("127.0.0.1:2")]
    assert problems == ["cannot resolve nowhere.test:1: Name or service not known"]


def test_order_is_the_nodes_own_and_spreads_nodes() -> None:
    cands = [Candidate(f"127.0.0.1:{p}") for p in (7001, 7002)]
    firsts = Counter(order_for(f"node-{i}", cands)[0] for i in range(200))
    assert set(firsts) == set(cands) and min(firsts.values()) > 60  # both brains get a share
    for i in range(20):
        order = order_for(f"node-{i}", cands)
        assert sorted(order) == sorted(cands)
        assert order == order_for(f"node-{i}", list(reversed(cands)))  # stable whatever the listing order


async def test_a_round_starts_after_the_brain_that_went_away() -> None:
    rounds = BrainRounds("node-1", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")
    own = await rounds.round()
    assert own == order_for("node-1", own)
    assert rounds.first == own[0]
    after = await rounds.round(after=own[0])
    assert after == [*own[1:], own[0]]  # the next one first, the one that went away last
    assert await rounds.round(after=Candidate("127.0.0.1:9")) == own  # no longer listed: own order


async def test_a_round_resolves_again_each_time() -> None:
    answers = [["10.0.0.1"], ["10.0.0.1", "10.0.0.2"]]
    rounds = BrainRounds("node-1", "brains.test:7443", lambda host, port: answers.pop(0))
    assert [c.endpoint for c in await rounds.round()] == ["10.0.0.1:7443"]
    assert sorted(c.endpoint for c in await rounds.round()) == ["10.0.0.1:7443", "10.0.0.2:7443"]


def test_the_agent_cli_refuses_a_bad_brain_list() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", "agent", "--node", "n1", "--insecure", "--brain", "a:1,b"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "argument --brain: brain address 'b': expected HOST:PORT" in out.stderr
