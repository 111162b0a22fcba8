"""Judging a fault drill: the prober's attempts against the windows the faults opened, and the
drop counts against the attempts that were denied.

A window opens when a fault is injected and closes when its recovery is observed (an event:
a counter moved, a process is back, the brains say every node applied a change). Each window
says what wrongness it explains, and only for what the fault touches:

- ``either``: cells whose verdict may be the old or the new one (a policy change in flight);
- ``may_open``: nodes whose denied cells may connect (their rules were flushed or deleted);
- ``may_lose``: nodes whose drop events may be lost (their agent was down: nothing reads NFLOG,
  and events it held unacknowledged die with it), from ``lose_before`` seconds before the window.

An attempt is judged against what was expected when it started; a wrong one is explained when a
window that explains it overlaps the attempt (from its SYN to its outcome). Anything else is a
wrong verdict outside the documented windows. A refused or failed attempt is never explained.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .prober import DENIED, OPEN, SILENT, Attempt


@dataclass
class Window:
    fault: str
    start: float  # monotonic: the fault injected
    end: float | None = None  # its recovery observed
    either: frozenset[str] = frozenset()
    may_open: frozenset[str] = frozenset()
    may_lose: frozenset[str] = frozenset()
    lose_before: float = 0.0
    figures: dict[str, float] = field(default_factory=dict)  # what the drill measured, seconds
    tallies: dict[str, int] = field(default_factory=dict)  # what the drill counted
    explained: int = 0  # wrong attempts this window explains

    @property
    def seconds(self) -> float:
        assert self.end is not None, f"{self.fault}: never closed"
        return self.end - self.start

    def overlaps(self, a: Attempt, before: float = 0.0) -> bool:
        end = self.end if self.end is not None else float("inf")
        return a.t0 <= end and a.t_end >= self.start - before

    def explains(self, a: Attempt) -> bool:
        if not self.overlaps(a) or a.verdict is None:
            return False
        if a.cell.name in self.either:
            return True
        return a.outcome == OPEN and a.expected == DENIED and a.cell.dst_node in self.may_open

    def may_have_lost(self, a: Attempt) -> bool:
        return a.cell.dst_node in self.may_lose and self.overlaps(a, self.lose_before)

    def describe(self) -> str:
        extra = "".join(f", {k} {v * 1000:.0f} ms" for k, v in self.figures.items())
        extra += "".join(f", {k}: {v}" for k, v in self.tallies.items())
        why = f"; explains {self.explained} wrong attempts" if self.explained else ""
        return f"{self.fault}: {self.seconds * 1000:.0f} ms{extra}{why}"


def judge(attempts: Iterable[Attempt], windows: Sequence[Window]) -> list[Attempt]:
    """The wrong attempts no window explains; counts the explained ones on their windows."""
    wrong = []
    for a in attempts:
        if a.right:
            continue
        w = next((w for w in windows if w.explains(a)), None)
        if w is None:
            wrong.append(a)
        else:
            w.explained += 1
    return wrong


def describe(a: Attempt, t0: float) -> str:
    return (
        f"{a.cell.name} (to {a.cell.dst_node}) sport {a.sport} at +{a.t0 - t0:.2f}s: {a.outcome} "
        f"after {(a.t_end - a.t0) * 1000:.0f} ms, expected {a.expected}"
    )


# -- drop counts ------------------------------------------------------------------------------------

FlowKey = tuple[str, int, str, int]  # src ip, sport, dst ip, dport


def flow_key(a: Attempt) -> FlowKey:
    return (a.cell.src_ip, a.sport, a.cell.dst_ip, a.cell.port)


@dataclass
class CellCount:
    cell: str
    denied: int  # silent attempts: each one denied SYN
    recorded: int  # attempts in the store's stream of events (denied ones, and open ones whose
    # first SYN was denied before a change let a retransmit through)
    lost: list[Attempt]  # denied, not recorded, and no window explains it
    excused: int  # denied, not recorded, within a may_lose window
    counted: int  # the store's count for the cell
    retransmitted: int  # recorded attempts whose SYN may have been counted twice

    @property
    def ok(self) -> bool:
        return not self.lost and self.recorded <= self.counted <= self.recorded + self.retransmitted

    def describe(self) -> str:
        return (
            f"{self.cell}: {self.denied} denied attempts, {self.recorded} recorded, counted {self.counted}"
            + (f", {self.excused} lost in agent outages (explained)" if self.excused else "")
            + (f", {len(self.lost)} LOST" if self.lost else "")
        )


def account(
    attempts: Iterable[Attempt],
    windows: Sequence[Window],
    recorded: Counter[FlowKey],
    counted: Mapping[str, int],
) -> list[CellCount]:
    """Per cell: every denied attempt must be in the store's events (by its 5-tuple), unless an
    agent outage explains its loss; the store's count must be what it recorded, to the attempt
    (no loss, no double count, no event left unresolved to its pods), give or take attempts whose
    SYN went out twice."""
    by_cell: dict[str, list[Attempt]] = {}
    for a in attempts:
        by_cell.setdefault(a.cell.name, []).append(a)
    out = []
    for name in sorted(set(by_cell) | set(counted)):
        mine = by_cell.get(name, [])
        denied = [a for a in mine if a.outcome == SILENT]
        present = [a for a in mine if recorded[flow_key(a)]]
        absent = [a for a in denied if not recorded[flow_key(a)]]
        excused = [a for a in absent if any(w.may_have_lost(a) for w in windows)]
        lost = [a for a in absent if a not in excused]
        out.append(
            CellCount(
                name,
                len(denied),
                len(present),
                lost,
                len(excused),
                counted.get(name, 0),
                sum(1 for a in present if a.retransmitted),
            )
        )
    return out


def dropped_then_allowed(
    attempts: Iterable[Attempt], windows: Sequence[Window], recorded: Counter[FlowKey]
) -> list[Attempt]:
    """Attempts expected allowed that connected only after the store recorded their first SYN as
    denied (a retransmit got through): a denial the prober alone would not see. Explained only by
    a window that lets that cell show either verdict (a change in flight)."""
    return [
        a
        for a in attempts
        if a.outcome == OPEN
        and a.expected != DENIED
        and recorded[flow_key(a)]
        and not any(w.overlaps(a) and a.cell.name in w.either for w in windows)
    ]


# -- figures from the packets -----------------------------------------------------------------------


def repaired_by_packets(
    attempts: Sequence[Attempt], node: str, start: float, effective: float, until: float
) -> float | None:
    """An upper bound, from real packets, of how long after `start` a node's deny rules were back:
    the first denied attempt to that node that was silent, sent after the tampering took effect
    (`effective`: the command had returned) and after the last one that got through (before
    `until`, the next fault). None when no such attempt was made."""
    to_node = [a for a in attempts if a.cell.dst_node == node and a.expected == DENIED and start <= a.t0 < until]
    last_open = max((a.t0 for a in to_node if a.outcome == OPEN), default=start)
    after = [a.t0 for a in to_node if a.outcome == SILENT and a.t0 > max(effective, last_open)]
    return min(after) - start if after else None


def got_through(attempts: Sequence[Attempt], node: str, start: float, end: float) -> int:
    """Denied attempts to `node` that connected between `start` and `end`."""
    return sum(
        1
        for a in attempts
        if a.cell.dst_node == node and a.expected == DENIED and a.outcome == OPEN and start <= a.t0 <= end
    )


def enforced_by_packets(
    attempts: Sequence[Attempt], cells: Iterable[str], new: Mapping[str, str], start: float, until: float
) -> float | None:
    """An upper bound, from real packets, of how long after `start` the verdicts `new` held on
    every one of `cells`: per cell, the first attempt after the last one with another verdict
    (up to `until`, the next change); the latest of those. None when a cell has no such attempt."""
    worst = 0.0
    for name in cells:
        mine = [a for a in attempts if a.cell.name == name and start <= a.t0 <= until and a.verdict is not None]
        wrong = [a.t0 for a in mine if a.verdict != new[name]]
        after = [a.t0 for a in mine if a.t0 > max(wrong, default=start) and a.verdict == new[name]]
        if not after:
            return None
        worst = max(worst, min(after) - start)
    return worst
