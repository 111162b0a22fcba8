"""`stockade.brain.events.EventRecorder` against the lab API server (the real kubernetes-asyncio
client over HTTP): repeats become one Event with a growing count, each object's token bucket
caps a flood, a full queue drops and counts instead of blocking, a follower writes nothing, and
a failed write is counted and logged without stopping the writer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from stockade.brain.events import EventRecorder, ObjectRef, parse_described
from stockade.brain.sources import api_client
from stockade.lab.apiserver import ApiServer

REF = ObjectRef("NetworkPolicy", "team", "wide", uid="u-1", api_version="networking.k8s.io/v1", resource_version="7")


@pytest.fixture
async def api(server: ApiServer, tmp_path: Path) -> AsyncIterator[k8s.ApiClient]:
    ac = await api_client(str(server.kubeconfig(tmp_path / "kc")))
    await k8s.CoreV1Api(ac).create_namespace({"metadata": {"name": "team"}})
    try:
        yield ac
    finally:
        await ac.close()


async def drain(rec: EventRecorder, writes: int) -> None:
    deadline = time.monotonic() + 30
    while rec.created + rec.patched + rec.failed < writes:
        assert time.monotonic() < deadline, (rec.created, rec.patched, rec.failed)
        await asyncio.sleep(0.05)


async def events(api: k8s.ApiClient, ns: str = "team") -> list[Any]:
    return list((await k8s.CoreV1Api(api).list_namespaced_event(ns)).items)


async def test_repeats_are_counted_on_one_event_and_a_flood_is_rate_limited(api: k8s.ApiClient) -> None:
    now = [0.0]
    rec = EventRecorder(lambda: True, "brain-a", burst=25, refill=5.0, clock=lambda: now[0])
    rec.attach(api)
    accepted = [rec.record(REF, "Warning", "PolicyRejected", "spec: bad") for _ in range(30)]
    assert accepted.count(True) == 25 and rec.dropped["rate_limited"] == 5  # the burst, then nothing
    writer = asyncio.create_task(rec.run())
    try:
        await drain(rec, 25)
        (ev,) = await events(api)
        assert ev.count == 25 and ev.reason == "PolicyRejected" and ev.involved_object.uid == "u-1"
        assert rec.created == 1 and rec.patched == 24
        now[0] += 10.0  # two tokens back, not more
        assert [rec.record(REF, "Warning", "PolicyRejected", "spec: bad") for _ in range(3)] == [True, True, False]
        other = ObjectRef("NetworkPolicy", "team", "narrow", uid="u-2")  # its own bucket
        assert rec.record(other, "Warning", "PolicyRejected", "spec: bad")
        now[0] += 5.0
        assert rec.record(REF, "Warning", "PolicyRejected", "spec: other")  # another message: another Event
        await drain(rec, 29)
        by_name = {(e.involved_object.name, e.message): e.count for e in await events(api)}
        assert by_name == {("wide", "spec: bad"): 27, ("narrow", "spec: bad"): 1, ("wide", "spec: other"): 1}
    finally:
        writer.cancel()


async def test_a_deleted_event_is_made_again(api: k8s.ApiClient) -> None:
    rec = EventRecorder(lambda: True, "brain-a")
    rec.attach(api)
    writer = asyncio.create_task(rec.run())
    try:
        rec.record(REF, "Warning", "PolicyRejected", "spec: bad")
        await drain(rec, 1)
        (ev,) = await events(api)
        await k8s.CoreV1Api(api).delete_namespaced_event(ev.metadata.name, "team")  # e.g. its TTL ran out
        rec.record(REF, "Warning", "PolicyRejected", "spec: bad")
        await drain(rec, 2)
        (again,) = await events(api)
        assert again.count == 1 and again.metadata.name != ev.metadata.name and rec.failed == 0
    finally:
        writer.cancel()


async def test_never_blocks_a_follower_writes_nothing_and_failures_are_logged(
    api: k8s.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    leading = [False]
    rec = EventRecorder(lambda: leading[0], "brain-b", queue_size=2)
    rec.attach(api)
    assert rec.record(REF, "Warning", "PolicyRejected", "spec: bad") is False  # a follower
    leading[0] = True
    refs = [ObjectRef("NetworkPolicy", "team", f"p{i}") for i in range(3)]
    assert [rec.record(r, "Warning", "PolicyRejected", "x") for r in refs] == [True, True, False]
    assert rec.dropped["queue_full"] == 1  # the writer is not running: the queue is full, not waited on
    leading[0] = False  # lost the Lease before the writer got to them: they are not written
    writer = asyncio.create_task(rec.run())
    try:
        await asyncio.sleep(0.5)
        assert rec.created == 0 and await events(api) == []
        leading[0] = True
        missing = ObjectRef("Pod", "no-such-namespace", "p")  # the API refuses it (404)
        with caplog.at_level(logging.WARNING, logger="stockade.brain.events"):
            assert rec.record(missing, "Warning", "ObjectRejected", "x")
            assert rec.record(refs[0], "Warning", "PolicyRejected", "x")
            await drain(rec, 2)
        assert rec.failed == 1 and rec.created == 1  # the writer went on after the failure
        assert any("cannot write an Event about Pod p: 404" in r.getMessage() for r in caplog.records)
    finally:
        writer.cancel()


def test_parse_described() -> None:
    assert parse_described("NetworkPolicy team/wide") == ("NetworkPolicy", "team", "wide")
    assert parse_described("Node node-1") == ("Node", "", "node-1")
    assert parse_described("Pod team/?") is None  # no usable name: nothing to attach an Event to
    assert parse_described("garbage") is None
