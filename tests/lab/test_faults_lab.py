"""Issue 17 item 5: the fault suite. One lab per backend (2 brains, 2 nodes, real nftables or
iptables, real packets, real Redis and API server); `fault_drill.Drill` runs its faults in order
while the prober makes a new TCP flow over every cell every 0.2 s.

What is asserted, over every attempt of the whole drill:

- no wrong verdict outside the windows, and inside one only the wrongness its fault explains
  (see `fault_drill`'s docstring for each fault and what it explains: a tampered node's denied
  cells may connect until its agent repairs; a changed cell may show the old verdict until every
  node applied the change; nothing else, and a refused or failed attempt never);
- no lost drop count: every denied attempt is in the store's events (by its 5-tuple), unless its
  node's agent was down (NFLOG has no reader then); the store's count per cell is what it
  recorded, with no double count (beyond attempts whose SYN the kernel sent twice);
- every recovery happened (each wait is for an event, with a 90 s guard; nothing here asserts
  how fast: benchmarks/lab_faults.py does).

`pytest -s` prints each window and its duration.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fault_drill import Drill, start_lab
from .lab_ops import make_lab
from .labenv import Lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

SLOT = int(os.environ.get("STOCKADE_TEST_SLOT", "0") or 0) % 10
PORTS = {"nftables": (28000 + 100 * SLOT, 28049 + 100 * SLOT), "iptables": (28050 + 100 * SLOT, 28099 + 100 * SLOT)}


@pytest.fixture(scope="module", params=["nftables", "iptables"])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, str]]:
    backend: str = request.param
    tmp: Path = tmp_path_factory.mktemp(f"faults-{backend}")
    lab = make_lab(tmp, f"st-flt-{backend[:3]}-", PORTS[backend])
    try:
        start_lab(lab, backend)
        yield lab, backend
    finally:
        lab.run("down", check=False)


def test_no_wrong_verdict_and_no_lost_count_through_every_fault(lab: tuple[Lab, str]) -> None:
    env, backend = lab
    result = Drill(env, backend).run()
    print("\n" + "\n".join(result.report()))
    assert not result.prober_errors, result.prober_errors
    # What the drill is about happened in packets: every srv cell was seen both denied and
    # allowed (the changes), every other cell allowed.
    seen = {(a.cell.name, a.outcome) for a in result.attempts}
    for cell in {a.cell.name for a in result.attempts}:
        wanted = {"open", "silent"} if "srv" in cell else {"open"}
        assert {o for c, o in seen if c == cell} >= wanted, (cell, seen)
    assert not result.wrong, f"{len(result.wrong)} wrong verdicts outside the windows:\n" + "\n".join(result.report())
    assert not result.denied_first, "allowed attempts denied at first, outside any change:\n" + "\n".join(
        result.report()
    )
    lost = [c for c in result.counts if not c.ok]
    assert not lost, "drop counts lost or doubled:\n" + "\n".join(c.describe() for c in lost)
