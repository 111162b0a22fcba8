"""Unit tests of the pure parts: held state, re-list difference, backoff, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from stockade.brain.sources.backoff import Backoff, parse_retry_after
from stockade.brain.sources.kinds import POD, RBAC_RULES
from stockade.brain.sources.state import Held, apply_watch_event, is_newer, relist_diff


def obj(name: str, rv: int, ns: str = "default", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv)}, **extra}


def test_is_newer_compares_numbers_not_strings() -> None:
    assert is_newer("10", "9") and not is_newer("9", "10") and not is_newer("5", "5")
    assert is_newer("abc", "abd") and not is_newer("abc", "abc")


def test_watch_events_apply_once_and_in_order() -> None:
    held: Held = {}
    ev = apply_watch_event(held, POD, "ADDED", obj("a", 5))
    assert ev is not None and (ev.type, ev.kind, ev.namespace, ev.name) == ("upsert", "Pod", "default", "a")
    assert ev.obj["kind"] == "Pod" and ev.obj["apiVersion"] == "v1"
    assert apply_watch_event(held, POD, "ADDED", obj("a", 5)) is None  # replayed
    assert apply_watch_event(held, POD, "MODIFIED", obj("a", 4)) is None  # older
    assert apply_watch_event(held, POD, "MODIFIED", obj("a", 7)) is not None
    assert apply_watch_event(held, POD, "DELETED", obj("a", 6)) is None  # older than what we hold
    gone = apply_watch_event(held, POD, "DELETED", obj("a", 7))  # same version as held: still a delete
    assert gone is not None and gone.type == "delete" and held == {}
    assert apply_watch_event(held, POD, "DELETED", obj("a", 9)) is None  # nothing held


def test_relist_diff_deletes_vanished_and_upserts_changed() -> None:
    held: Held = {}
    for o in (obj("keep", 3), obj("change", 4), obj("vanish", 5)):
        apply_watch_event(held, POD, "ADDED", o)
    events = relist_diff(held, POD, [obj("keep", 3), obj("change", 9), obj("new", 10)])
    assert [(e.type, e.name) for e in events] == [("delete", "vanish"), ("upsert", "change"), ("upsert", "new")]
    assert events[0].obj["metadata"]["resourceVersion"] == "5"  # the last state we knew
    assert sorted(k[1] for k in held) == ["change", "keep", "new"]
    assert relist_diff(held, POD, [obj("keep", 3), obj("change", 9), obj("new", 10)]) == []


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(base=1.0, cap=8.0, rng=lambda: 1.0)
    assert [b.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    b.reset()
    low = Backoff(base=1.0, cap=8.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.5, 1.0, 2.0]
    assert b.next() == 1.0


def test_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("99999") == 300.0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=20), usegmt=True), now) == 20.0


def test_rbac_rules_cover_the_watched_kinds() -> None:
    assert sorted(RBAC_RULES) == [
        ("", "namespaces", ("get", "list", "watch")),
        ("", "nodes", ("get", "list", "watch")),
        ("", "pods", ("get", "list", "watch")),
        ("", "services", ("get", "list", "watch")),
        ("networking.k8s.io", "networkpolicies", ("get", "list", "watch")),
        ("policy.networking.k8s.io", "clusternetworkpolicies", ("get", "list", "watch")),
    ]
