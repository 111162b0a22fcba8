"""Probes' source ports (`probe.SourcePorts`): every probe to a destination gets a port no recent
probe to it had, in this process or another, so no probe is taken for a retransmit of an earlier
one (see probe.py)."""

from __future__ import annotations

import threading

from stockade.lab.probe import SourcePorts

D = ("ns-a", 0, "10.96.1.2", 8080)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_probes_to_a_destination_go_round_the_whole_range_before_a_port_comes_again() -> None:
    ports = SourcePorts(40000, 40999, clock=Clock())  # the clock stands still: only the probes move
    taken = [ports.take(*D) for _ in range(1000)]
    assert set(taken) == set(range(40000, 41000))
    assert ports.take(*D) == taken[0]


def test_another_process_later_gets_ports_the_earlier_one_did_not_use() -> None:
    clock = Clock()
    first = SourcePorts(40000, 40999, rate=100.0, clock=clock)
    used = {first.take(*D) for _ in range(50)}  # 50 probes to D in 0.5 s of the clock or less
    clock.now += 0.5
    second = SourcePorts(40000, 40999, rate=100.0, clock=clock)  # a new process, same clock
    assert not used & {second.take(*D) for _ in range(900)}
    assert not used & {first.take(*D) for _ in range(10)}  # the first one, probing again, too


def test_destinations_start_apart_and_are_counted_apart() -> None:
    ports = SourcePorts(40000, 59999, clock=Clock())
    now = {ports.take(ns, 0, ip, 8080) for ns in ("ns-a", "ns-b") for ip in ("10.96.1.1", "10.96.1.2", "10.96.1.3")}
    assert len(now) == 6  # one moment, six destinations: six ports
    before = ports.take(*D)
    for _ in range(5):
        ports.take("ns-b", 0, "10.96.1.2", 8080)
    assert ports.take(*D) == before + 1


def test_threads_never_get_one_port_twice() -> None:
    ports = SourcePorts(40000, 49999)
    got: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [ports.take(*D) for _ in range(1000)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 8000
