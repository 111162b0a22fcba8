"""dry-run compares only the pairs with an end whose rules a NetworkPolicy change can alter
(`affected_pods`); on random clusters and changes that gives what comparing every pair does."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.brain.admin.dryrun import compile_objects, dry_run
from stockade.brain.admin.reachability import connections, reach

from .strategies import cluster, network_policy

Obj = dict[str, Any]

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _every_pair(objects: list[Obj], changes: list[Obj]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    before, after = compile_objects(objects), compile_objects(objects)
    for c in changes:
        after.upsert(c)
    old = {(p.src, p.dst, p.port, p.protocol.value, p.family): p.allowed for p in reach(before)}
    new = {(p.src, p.dst, p.port, p.protocol.value, p.family): p.allowed for p in reach(after)}
    opened = sorted(k for k, was in old.items() if new[k] and not was)
    closed = sorted(k for k, was in old.items() if was and not new[k])
    assert connections(before) == len(old)
    return opened, closed


@SETTINGS
@given(c=cluster(max_pods=8, max_policies=4), data=st.data())
def test_comparing_the_affected_pairs_finds_what_comparing_every_pair_does(
    c: dict[str, list[Obj]], data: st.DataObject
) -> None:
    objects = [copy.deepcopy(o) for k in ("namespaces", "pods", "policies", "nodes") for o in c[k]]
    names = [f"pol{i}" for i in range(len(c["policies"]))] + ["new0", "new1"]
    picked = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True), label="changed")
    changes = [data.draw(network_policy(n), label=n) for n in picked]
    got = dry_run(objects, changes)
    opened, closed = _every_pair(objects, changes)
    assert (got.opened, got.closed) == (opened, closed)
    assert got.checked == connections(compile_objects(objects))
