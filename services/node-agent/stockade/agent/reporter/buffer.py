"""The agent's bounded buffer of blocked-connection events (pure data, no I/O).

Events wait here until a batch carrying them is acknowledged by the brain. Two parts share one
bound (``max_events``): events not yet sent, and batches sent but not yet acknowledged (kept to be
re-sent, under the same number, if the stream broke). When the bound is hit the oldest unsent
events are shed first (recent events matter most to someone looking at drops now); a batch
already sent is never shed, since the brain may have counted it. Every shed event is counted,
per reason, and the counts travel to the brain on every batch.

The buffer also remembers which brain process has *counted* which sent batches (counted is not
stored: while Redis is away a brain counts but cannot store). Only the batches that brain has not
counted need re-sending to it; any other brain gets every unacknowledged batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from stockade.model.events import BlockedEvent

REASON_BUFFER_FULL = "agent_buffer_full"


class ReportBuffer:
    def __init__(self, max_events: int) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self._unsent: deque[BlockedEvent] = deque()
        self._inflight: deque[tuple[int, list[BlockedEvent]]] = deque()
        self._inflight_events = 0
        self._seq = 0
        self.shed: dict[str, int] = {}  # reason -> events shed since this buffer was made
        self._shed_sent: dict[str, int] = {}  # shed counts as last put in a batch
        self.counted_by = ""  # the brain process that said it counted our batches up to ...
        self.counted_seq = 0  # ... this seq (0: none known)

    def __len__(self) -> int:
        return len(self._unsent) + self._inflight_events

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    @property
    def inflight_batches(self) -> int:
        return len(self._inflight)

    def count_shed(self, reason: str, n: int) -> None:
        if n > 0:
            self.shed[reason] = self.shed.get(reason, 0) + n

    def add(self, events: Iterable[BlockedEvent]) -> int:
        """Queue events; returns how many events had to be shed to stay within the bound."""
        self._unsent.extend(events)
        over = len(self) - self.max_events
        shed = 0
        while over > 0 and self._unsent:
            self._unsent.popleft()
            over -= 1
            shed += 1
        self.count_shed(REASON_BUFFER_FULL, shed)
        return shed

    def shed_changed(self) -> bool:
        return self.shed != self._shed_sent

    def next_batch(self, max_events: int) -> tuple[int, list[BlockedEvent]] | None:
        """Take up to ``max_events`` unsent events as the next numbered batch (kept until acked).

        An empty batch is made when only the shed counts have news, so they reach the brain."""
        if not self._unsent and not self.shed_changed():
            return None
        n = min(max_events, len(self._unsent))
        events = [self._unsent.popleft() for _ in range(n)]
        self._seq += 1
        self._inflight.append((self._seq, events))
        self._inflight_events += n
        self.mark_shed_sent()
        return self._seq, events

    def mark_shed_sent(self) -> None:
        self._shed_sent = dict(self.shed)

    def unacked(self) -> list[tuple[int, list[BlockedEvent]]]:
        """Batches sent but not acknowledged, oldest first (to be re-sent as they are)."""
        return list(self._inflight)

    def counted(self, brain: str, seq: int) -> None:
        """Brain process ``brain`` ("": unknown, e.g. an older brain) has counted batches up to ``seq``."""
        self.counted_by, self.counted_seq = (brain, seq) if brain else ("", 0)

    def knows_counted(self) -> bool:
        """Some unacknowledged batch is known counted by `counted_by` (worth asking whom a stream reached)."""
        return bool(self.counted_by and self._inflight and self._inflight[0][0] <= self.counted_seq)

    def to_resend(self, brain: str | None) -> list[tuple[int, list[BlockedEvent]]]:
        """The unacknowledged batches that ``brain`` (None: not known) may not have counted, oldest first."""
        if brain is None or not brain or brain != self.counted_by:
            return list(self._inflight)
        return [b for b in self._inflight if b[0] > self.counted_seq]

    def acked(self, last_seq: int) -> int:
        """Forget batches up to ``last_seq``; returns how many events were acknowledged."""
        n = 0
        while self._inflight and self._inflight[0][0] <= last_seq:
            _, events = self._inflight.popleft()
            n += len(events)
        self._inflight_events -= n
        return n
