"""What the other brains say about the nodes they serve, and one node's status seen from here.

Each brain publishes a `PeerEntry` per node whose agent stream it holds (see `peers.py` for the
Redis side). An entry is input from outside this process: `decode` checks every field and bounds
every size, and raises `ValidationError` for anything else.

A node served by a peer counts here as connected ("served by brain X"), and as holding what this
brain wants iff the digest its agent acked equals the digest of this brain's feed for it: models
are deterministic, so both brains compile the same digest from the same API objects.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stockade.brain.fanout.feed import NodeFeed
from stockade.brain.fanout.status import NodeStatus
from stockade.codec.validate import DEFAULT_LIMITS, ValidationError, check_digest, check_node_name, check_problems

BRAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")  # a pod name and an epoch suffix
MAX_ENTRY_BYTES = 48 * 1024  # 32 problems of 1000 characters, an error text and the rest
MAX_SHORT_TEXT = 256  # agent version, backend


def check_brain_id(brain: str) -> str:
    if not BRAIN_ID.fullmatch(brain):
        raise ValidationError(f"brain id {brain[:80]!r} is not a pod name with an epoch suffix")
    return brain


@dataclass(frozen=True)
class PeerEntry:
    """One node's status as the brain holding its agent's stream published it."""

    brain: str
    node: str
    since: float = 0.0  # time.time() the brain first published the node (breaks ties between claims)
    agent_ready: bool = False
    problems: tuple[str, ...] = ()
    refused: str = ""
    digest: str = ""  # of the model the agent acked last
    applied_generation: int = 0  # in the serving brain's numbering (for operators only)
    applied_time: float | None = None
    last_error: str = ""
    agent_version: str = ""
    backend: str = ""
    protocol: int = 0


def encode(st: NodeStatus, since: float) -> str:
    return json.dumps(
        {
            "s": since,
            "r": st.agent_ready,
            "p": list(st.problems),
            "x": st.refused or "",
            "d": st.applied_digest,
            "g": st.applied_generation,
            "t": st.last_apply_time,
            "e": st.last_error or "",
            "v": st.agent_version,
            "b": st.backend,
            "n": st.protocol,
        },
        separators=(",", ":"),
    )


def _text(d: Mapping[str, Any], key: str, limit: int) -> str:
    v = d.get(key, "")
    if not isinstance(v, str) or len(v) > limit:
        raise ValidationError(f"{key}: not a text of at most {limit} characters")
    return v


def _number(d: Mapping[str, Any], key: str, *, integer: bool = False) -> float:
    v = d.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not 0 <= v < 2**62:
        raise ValidationError(f"{key}: not a non-negative number")
    if integer and not isinstance(v, int):
        raise ValidationError(f"{key}: not an integer")
    return v


def decode(brain: str, node: str, raw: bytes | str) -> PeerEntry:
    """A peer's entry for ``node``; `ValidationError` for anything malformed or oversized."""
    check_brain_id(brain)
    check_node_name(node, "peer entry node")
    if len(raw) > MAX_ENTRY_BYTES:
        raise ValidationError(f"entry of {len(raw)} bytes, more than {MAX_ENTRY_BYTES}")
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValidationError(f"not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValidationError("not a JSON object")
    problems = d.get("p", [])
    if not isinstance(problems, list) or not all(isinstance(p, str) for p in problems):
        raise ValidationError("p: not a list of texts")
    ready = d.get("r", False)
    if not isinstance(ready, bool):
        raise ValidationError("r: not a boolean")
    applied_time = d.get("t")
    return PeerEntry(
        brain=brain,
        node=node,
        since=_number(d, "s"),
        agent_ready=ready,
        problems=check_problems(problems, "p"),
        refused=_text(d, "x", DEFAULT_LIMITS.max_error_text),
        digest=check_digest(_text(d, "d", 128), "d"),
        applied_generation=int(_number(d, "g", integer=True)),
        applied_time=None if applied_time is None else _number(d, "t"),
        last_error=_text(d, "e", DEFAULT_LIMITS.max_error_text),
        agent_version=_text(d, "v", MAX_SHORT_TEXT),
        backend=_text(d, "b", MAX_SHORT_TEXT),
        protocol=int(_number(d, "n", integer=True)),
    )


class PeerView:
    """The live peers' entries, by node. Entries older than ``ttl`` (since they were last read)
    count for nothing: while Redis is away, a peer's nodes drop out of the view, never linger."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, PeerEntry] = {}
        self._read_at = -math.inf
        self.brains: tuple[str, ...] = ()  # the live peers, as last read

    def entry(self, node: str) -> PeerEntry | None:
        if self.clock() - self._read_at > self.ttl:
            return None
        return self._entries.get(node)

    def nodes(self) -> set[str]:
        return set(self._entries) if self.clock() - self._read_at <= self.ttl else set()

    def touch(self) -> None:
        """A read found every peer's entries as they were."""
        self._read_at = self.clock()

    def update(self, by_brain: Mapping[str, Mapping[str, PeerEntry]], nodes: Iterable[str]) -> set[str]:
        """Take a fresh read of every live peer in which only ``nodes`` may differ from the last
        one; returns the nodes whose entry changed."""
        stale = self.clock() - self._read_at > self.ttl
        if stale:  # nothing read for a TTL: the view counted for nothing, every node is news
            nodes = {n for entries in by_brain.values() for n in entries} | set(self._entries)
            self._entries = {}
        changed = set()
        for node in nodes:
            best = None
            for entries in by_brain.values():
                e = entries.get(node)
                # Two peers claim the node (one holds a half-open stream): the newer claim wins.
                if e is not None and (best is None or (e.since, e.brain) > (best.since, best.brain)):
                    best = e
            if best != self._entries.get(node):
                changed.add(node)
                if best is None:
                    del self._entries[node]
                else:
                    self._entries[node] = best
        self._read_at = self.clock()
        self.brains = tuple(sorted(by_brain))
        return changed

    def replace(self, by_brain: Mapping[str, Mapping[str, PeerEntry]]) -> set[str]:
        """`update` where any node may have changed."""
        return self.update(by_brain, {n for entries in by_brain.values() for n in entries} | set(self._entries))


def served_by_peer(local: NodeStatus | None, entry: PeerEntry, feed: NodeFeed | None) -> NodeStatus:
    """A node another brain serves, as this brain sees it: connected, ready as its agent said,
    and applied (in this brain's numbering) iff it holds the model this brain wants for it."""
    base = local or NodeStatus(entry.node)
    generation = feed.generation if feed is not None else 0
    holds = feed is not None and bool(entry.digest) and entry.digest == feed.digest()
    return dataclasses.replace(
        base,
        connected=True,
        brain=entry.brain,
        peer="",
        desired_generation=generation,
        applied_generation=generation if holds else 0,
        applied_digest=entry.digest,
        last_apply_time=entry.applied_time,
        last_error=entry.last_error or None,
        backend=entry.backend,
        protocol=entry.protocol,
        agent_version=entry.agent_version,
        agent_ready=entry.agent_ready,
        problems=entry.problems,
        refused=entry.refused or None,
        refused_time=base.refused_time if entry.refused else None,
    )
