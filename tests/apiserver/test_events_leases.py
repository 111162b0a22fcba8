"""Events (core v1) and Leases (coordination.k8s.io/v1) in the lab API server, checked as the
real server checks them, through the real kubernetes-asyncio client and the real kubectl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from stockade.brain.sources import api_client
from stockade.lab.apiserver import ApiServer

from .test_kubectl import kubectl


def event(ns: str, involved_ns: str | None, **extra: Any) -> dict[str, Any]:
    involved: dict[str, Any] = {"kind": "NetworkPolicy", "name": "wide", "apiVersion": "networking.k8s.io/v1"}
    if involved_ns is not None:
        involved["namespace"] = involved_ns
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "wide.1", "namespace": ns},
        "involvedObject": involved,
        "reason": "PolicyRejected",
        "message": "spec.ingress[0].ports: 1001 ports, over the limit of 1000 per rule",
        "type": "Warning",
        "source": {"component": "stockade-brain"},
        "count": 1,
        "lastTimestamp": "2026-01-01T00:00:00Z",
        **extra,
    }


async def test_events_and_leases(server: ApiServer, tmp_path: Path) -> None:
    kc = server.kubeconfig(tmp_path / "kc")
    ac = await api_client(str(kc))
    try:
        core, coord = k8s.CoreV1Api(ac), k8s.CoordinationV1Api(ac)
        await core.create_namespace({"metadata": {"name": "team"}})
        with pytest.raises(ApiException) as bad:
            await core.create_namespaced_event("team", event("team", "other"))
        body = json.loads(bad.value.body)
        assert bad.value.status == 422 and body["details"]["causes"][0]["field"] == "involvedObject.namespace"
        assert 'Event "wide.1" is invalid: involvedObject.namespace: Invalid value: "other"' in body["message"]
        with pytest.raises(ApiException) as bad:  # with eventTime, the newer recorders' fields are required
            await core.create_namespaced_event("team", event("team", "team", eventTime="2026-01-01T00:00:00.000000Z"))
        fields = {c["field"] for c in json.loads(bad.value.body)["details"]["causes"]}
        assert fields == {"reportingComponent", "reportingInstance", "action"}
        await core.create_namespaced_event("team", event("team", "team"))
        await core.patch_namespaced_event("wide.1", "team", {"count": 2}, _content_type="application/merge-patch+json")  # type: ignore[call-arg]

        _, out, _ = await kubectl(kc, "get", "events", "-n", "team", "--field-selector", "involvedObject.name=wide")
        header, row = out.splitlines()
        assert header.split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        assert "Warning" in row and "PolicyRejected" in row and "networkpolicy/wide" in row
        # the server prints every column; kubectl shows the wide ones with -o wide (COUNT, NAME ...)
        _, out, _ = await kubectl(kc, "get", "events", "-n", "team", "-o", "wide")
        header, row = out.splitlines()
        assert header.split()[-6:] == ["SOURCE", "MESSAGE", "FIRST", "SEEN", "COUNT", "NAME"]
        assert row.split()[-2:] == ["2", "wide.1"] and "stockade-brain" in row
        _, out, _ = await kubectl(kc, "events", "-n", "team")  # kubectl's own events view folds the count in
        assert "(x2 over" in out and "NetworkPolicy/wide" in out
        _, out, _ = await kubectl(kc, "get", "events", "-n", "team", "--field-selector", "involvedObject.name=other")
        assert "wide" not in out

        lease = {"metadata": {"name": "stockade-brain"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 0}}
        with pytest.raises(ApiException) as bad:
            await coord.create_namespaced_lease("team", lease)
        assert (
            bad.value.status == 422
            and "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"
            in (json.loads(bad.value.body)["message"])
        )
        lease["spec"]["leaseDurationSeconds"] = 15
        made = await coord.create_namespaced_lease("team", lease)
        made.spec.holder_identity = "b"
        made.metadata.resource_version = "1"  # stale: the compare-and-swap leader election relies on
        with pytest.raises(ApiException) as bad:
            await coord.replace_namespaced_lease("stockade-brain", "team", made)
        assert bad.value.status == 409
        _, out, _ = await kubectl(kc, "get", "leases", "-n", "team")
        assert out.split()[:3] == ["NAME", "HOLDER", "AGE"] and "stockade-brain" in out and " a " in out
    finally:
        await ac.close()
