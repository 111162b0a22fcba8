"""A continuous prober for fault drills: TCP attempts from pod namespaces over a fixed set of
cells, every `interval` seconds, each attempt a new flow, each recorded with what was expected
of it when it started and what it got.

One thread drives every attempt with a selector (no process per probe). Each attempt's socket is
made in its source pod's namespace (`nsenter.socket_in`), bound to a source port no recent
attempt to that destination had (`probe.SOURCE_PORTS`: the dataplane counts a denied 5-tuple
once, so every attempt is one flow and one count), and connected without blocking.

Outcomes, and how long each attempt may take:

- ``open``: the handshake completed. Definite: a SYN got through.
- ``silent``: no answer before the attempt's deadline (closing a socket in SYN_SENT sends
  nothing). An attempt expected to be denied waits `DENIED_WAIT` (0.9 s), under the kernel's
  first SYN retransmit (1 s): one SYN, so one count if it is denied. One expected to be allowed
  waits `ALLOWED_WAIT` (3 s: the first SYN and its retransmit at 1 s), so a busy machine is not
  taken for a denial; its silence after that is definite (a SYN-ACK comes from the kernel).
  A thread running late may close later: `retransmitted` marks attempts open > 1 s.
- ``refused`` / ``error``: a RST or an ICMP error; never right in a drill (every pod serves).
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from stockade.lab import nsenter
from stockade.lab.probe import SOURCE_PORTS
from stockade.lab.state import LabState

ALLOWED, DENIED = "allowed", "denied"
OPEN, SILENT, REFUSED, ERROR = "open", "silent", "refused", "error"
DENIED_WAIT = 0.9  # under the first SYN retransmit: one SYN per denied attempt
ALLOWED_WAIT = 3.0  # the first SYN and its retransmit: a slow machine is no denial
RTO = 1.0  # the kernel's first SYN retransmit
_TAKEN = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)


@dataclass(frozen=True)
class Cell:
    """One (source pod, destination pod, TCP port); named ``src→dst`` by the pods' names."""

    src: str  # ns/pod
    dst: str
    netns: str  # the source pod's
    src_ip: str
    dst_ip: str
    dst_node: str  # where the destination's ingress rules are
    port: int = 80

    @property
    def name(self) -> str:
        return f"{self.src.split('/')[-1]}→{self.dst.split('/')[-1]}"


def cells(st: LabState, pairs: Iterable[tuple[str, str]], port: int = 80) -> list[Cell]:
    """Cells for (source pod, destination pod) keys of a lab."""
    assert st.plan is not None
    out = []
    for src, dst in pairs:
        s, d = st.plan.pod(src), st.plan.pod(dst)
        assert s is not None and d is not None, (src, dst)
        out.append(Cell(src, dst, s.netns, s.ip, d.ip, d.node, port))
    return out


@dataclass(frozen=True)
class Attempt:
    cell: Cell
    sport: int
    t0: float  # monotonic, just before connect: the first SYN leaves at once
    t_end: float  # when the outcome was known (connected, or the socket closed)
    outcome: str
    expected: str  # ALLOWED or DENIED, as the prober was told at t0

    @property
    def verdict(self) -> str | None:
        """What the network said: allowed (open), denied (silent), or None (refused, error)."""
        return {OPEN: ALLOWED, SILENT: DENIED}.get(self.outcome)

    @property
    def right(self) -> bool:
        return self.verdict == self.expected

    @property
    def retransmitted(self) -> bool:
        """Open long enough for the kernel to send the SYN again (a second count is possible if
        the deny rules were made anew in between)."""
        return self.t_end - self.t0 >= RTO


@dataclass
class _Pending:
    cell: Cell
    sock: socket.socket
    sport: int
    t0: float
    deadline: float
    expected: str


@dataclass
class Prober:
    """``start()``, then `expect` whenever the policy changes, `stop()` at the end; `attempts()`
    at any time (finished attempts, in order of start)."""

    cells: list[Cell]
    expected: dict[str, str]  # cell name -> ALLOWED | DENIED
    interval: float = 0.2
    changes: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    _done: list[Attempt] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started: float = 0.0
    errors: list[str] = field(default_factory=list)  # attempts that could not even start

    def start(self) -> None:
        self.started = time.monotonic()
        self.changes.append((self.started, dict(self.expected)))
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self._thread.start()

    def expect(self, verdicts: Mapping[str, str]) -> float:
        """From now on these cells are expected so; returns the time of the change."""
        with self._lock:
            self.expected = {**self.expected, **verdicts}
            now = time.monotonic()
            self.changes.append((now, dict(self.expected)))
        return now

    def stop(self) -> None:
        """Stop starting attempts; wait for those in flight."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(ALLOWED_WAIT + 10)
            assert not self._thread.is_alive(), "the prober did not stop"

    def attempts(self) -> list[Attempt]:
        with self._lock:
            return sorted(self._done, key=lambda a: a.t0)

    # -- the thread ------------------------------------------------------------------------------

    def _begin(self, cell: Cell, expected: str) -> _Pending | None:
        for _ in range(8):
            sock = nsenter.socket_in(cell.netns, socket.AF_INET, socket.SOCK_STREAM)
            sport = SOURCE_PORTS.take(cell.netns, 0, cell.dst_ip, cell.port)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((cell.src_ip, sport))
                sock.setblocking(False)
                t0 = time.monotonic()
                err = sock.connect_ex((cell.dst_ip, cell.port))
            except OSError as e:
                sock.close()
                if e.errno in _TAKEN:
                    continue
                raise
            if err in _TAKEN:
                sock.close()
                continue
            wait = ALLOWED_WAIT if expected == ALLOWED else DENIED_WAIT
            pending = _Pending(cell, sock, sport, t0, t0 + wait, expected)
            if err not in (0, errno.EINPROGRESS):
                self._finish(pending, REFUSED if err == errno.ECONNREFUSED else ERROR)
                return None
            return pending
        self.errors.append(f"{cell.name}: no free source port")
        return None

    def _finish(self, p: _Pending, outcome: str) -> None:
        p.sock.close()
        attempt = Attempt(p.cell, p.sport, p.t0, time.monotonic(), outcome, p.expected)
        with self._lock:
            self._done.append(attempt)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        live: dict[int, _Pending] = {}
        next_round = time.monotonic()
        try:
            while not (self._stop.is_set() and not live):
                now = time.monotonic()
                if now >= next_round and not self._stop.is_set():
                    with self._lock:
                        expected = dict(self.expected)
                    for cell in self.cells:
                        p = self._begin(cell, expected[cell.name])
                        if p is not None:
                            live[p.sock.fileno()] = p
                            sel.register(p.sock, selectors.EVENT_WRITE, p)
                    next_round = max(next_round + self.interval, now)
                for key, _ in sel.select(timeout=max(0.0, min(0.05, next_round - time.monotonic()))):
                    p = key.data
                    sel.unregister(p.sock)
                    del live[p.sock.fileno()]
                    err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    self._finish(p, OPEN if err == 0 else REFUSED if err == errno.ECONNREFUSED else ERROR)
                now = time.monotonic()
                for fd, p in list(live.items()):
                    if now >= p.deadline:
                        sel.unregister(p.sock)
                        del live[fd]
                        self._finish(p, SILENT)
        except Exception as e:  # recorded: the test fails on it rather than on a silent thread
            self.errors.append(f"prober: {type(e).__name__}: {e}")
            for p in live.values():
                p.sock.close()
        finally:
            sel.close()
