"""`-o json` and `-o yaml` for scripts (issue 14, item 3): every document in the envelope
(apiVersion, kind), keys camelCase, every field present (false, 0, "" and [] too), numbers as
numbers (no 64-bit integer as a string) — through the real CLI and a real brain over real gRPC.

The SCHEMAS below are the README's tables ("JSON and YAML output"): a field added, renamed or
retyped fails here first."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from queue import Empty, Queue
from typing import Any

import grpc
import yaml
from cli_brain import ENV_PATH, READ, Lab, agent_of_node_1, node_credentials, stockade, tls

from stockade.v1 import drops_pb2, drops_pb2_grpc

API_VERSION = "stockade.io/v1"
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
MAPS = ("labels", "key")  # fields whose keys are data (a label's name, a grouped-by field)

STORE = {
    "source": str, "redisConfigured": bool, "redisAvailable": bool, "unavailableSince": float, "error": str,
    "bufferedEvents": int, "memorySince": float,
}  # fmt: skip
SCHEMAS: dict[str, dict[str, Any]] = {
    "Policy": {
        "namespace": str, "name": str, "selectedPods": list, "nodesNeeded": int, "nodesApplied": int,
        "nodesPending": list, "rejected": str, "warnings": list, "policyTypes": list, "notRealized": list,
        "labels": dict, "kind": str, "tier": str, "priority": int,
    },
    "PolicyList": {"items": list},
    "Node": {
        "name": str, "connected": bool, "desiredGeneration": int, "appliedGeneration": int, "backend": str,
        "lastApplyTime": float, "lastError": str, "pods": int, "chains": int, "sets": int, "ready": bool,
        "problems": list, "refused": str, "protocol": int, "agentVersion": str, "brain": str, "labels": dict,
    },
    "NodeList": {"view": str, "brainVersion": str, "brainProtocol": int, "brainMinProtocol": int, "items": list},
    "DropCount": {"key": dict, "count": int},
    "DropCountList": {"window": str, "refused": list, "store": dict, "items": list},
    "DropStoreStatus": STORE,
    "Drop": {
        "time": float, "node": str, "direction": str, "src": str, "dst": str, "srcPod": str, "dstPod": str,
        "protocol": str, "sport": int, "dport": int, "policies": list,
    },
    "DropStoreNotice": {"time": float, "store": dict},
    "Connection": {"from": str, "to": str, "port": int, "protocol": str, "family": str},
    "DryRunResult": {"opened": list, "closed": list, "warnings": list, "rejected": list, "checked": int},
    "LintResult": {"warnings": list, "rejected": list},
    "Explanation": {
        "from": str, "to": str, "port": int, "protocol": str, "allowed": bool, "verdict": str, "family": str,
        "fromIP": str, "toIP": str, "sides": list, "reasons": list, "hints": list,
    },
    "Version": {"client": dict, "brain": dict},
}  # fmt: skip


def _types(obj: dict[str, Any]) -> dict[str, type]:
    # bool is an int in Python: type() tells them apart, as a script's JSON parser does
    return {k: type(v) for k, v in obj.items()}


def _fields(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    """``doc``'s fields after the envelope, checked: the envelope first, then exactly the kind's
    fields with their types, every key camelCase."""
    assert list(doc)[:2] == ["apiVersion", "kind"], doc
    assert (doc["apiVersion"], doc["kind"]) == (API_VERSION, kind)
    fields = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
    assert _types(fields) == SCHEMAS[kind], kind
    _camel(fields)
    return fields


def _camel(value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert CAMEL.match(k) or k in ("fromIP", "toIP"), k
            if k not in MAPS:
                _camel(v)
    elif isinstance(value, list):
        for v in value:
            _camel(v)


def _item(obj: dict[str, Any], kind: str) -> None:
    assert _types(obj) == SCHEMAS[kind], obj
    _camel(obj)


def _doc(lab: Lab, *args: str, rc: int = 0) -> dict[str, Any]:
    """The command's JSON document; its YAML is the same document."""
    out = stockade(*args, *tls(lab), "--token", READ, "-o", "json")
    assert out.returncode == rc, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    as_yaml = stockade(*args, *tls(lab), "--token", READ, "-o", "yaml")
    assert as_yaml.returncode == rc and yaml.safe_load(as_yaml.stdout) == doc, as_yaml.stderr
    return doc


def test_policies_json(lab: Lab) -> None:
    doc = _fields(_doc(lab, "policies", "-A"), "PolicyList")
    for p in doc["items"]:
        _item(p, "Policy")
    by_name = {p["name"]: p for p in doc["items"]}
    deny = by_name["deny"]
    assert deny["selectedPods"] == ["locked/a", "locked/b"] and deny["labels"] == {"team": "sec", "tier": "base"}
    assert deny["nodesNeeded"] == 1 and deny["rejected"] == "" and deny["notRealized"] == []
    none = by_name["none"]  # selects nothing: its zeros are there, not left out
    assert (none["selectedPods"], none["nodesNeeded"], none["nodesApplied"]) == ([], 0, 0)
    assert none["warnings"] and none["policyTypes"] == ["Ingress"]


def test_nodes_json(lab: Lab) -> None:
    with agent_of_node_1(lab, "stockade-agent/json-test"):  # node-1 has been sent a model
        doc = _fields(_doc(lab, "nodes"), "NodeList")
        head, *rows = stockade("nodes", *tls(lab), "--token", READ).stdout.splitlines()[:-1]  # no view note
    assert doc["brainProtocol"] > 0 and doc["view"]
    assert [n["name"] for n in doc["items"]] == ["node-1", "node-2"]
    for n in doc["items"]:
        _item(n, "Node")
    one, two = doc["items"]
    assert one["connected"] is True and one["agentVersion"] == "stockade-agent/json-test"
    assert two["connected"] is False and two["ready"] is False  # no agent: false, present
    assert (two["appliedGeneration"], two["lastApplyTime"], two["protocol"], two["problems"]) == (0, 0.0, 0, [])
    # a uint64 is the number the table shows, not the string protobuf's JSON makes of it
    at = head.index("DESIRED")
    desired = {r.split()[0]: int(r[at:].split()[0]) for r in rows}
    assert {n["name"]: n["desiredGeneration"] for n in doc["items"]} == desired
    assert desired["node-1"] >= 1  # a model was sent to its agent


def test_lint_json_online_and_offline_alike(lab: Lab) -> None:
    online = _fields(_doc(lab, "lint"), "LintResult")
    assert online["rejected"] == [] and any("open/none" in w for w in online["warnings"])
    offline = stockade("lint", "-f", str(lab.files / "cluster.yaml"), "-o", "json")
    assert offline.returncode == 0, offline.stderr
    assert _fields(json.loads(offline.stdout), "LintResult")["rejected"] == []


def test_explain_json_online_and_offline_alike(lab: Lab) -> None:
    online = _fields(_doc(lab, "explain", "open/a", "locked/b", "--port", "80", rc=1), "Explanation")
    assert (online["allowed"], online["verdict"], online["port"]) == (False, "blocked", 80)
    assert [s["direction"] for s in online["sides"]] == ["egress", "ingress"]
    assert online["sides"][1]["isolated"] is True and online["sides"][0]["isolated"] is False
    out = stockade("explain", "open/a", "locked/b", "--port", "80", "-f", str(lab.files / "cluster.yaml"), "-o", "json")
    assert out.returncode == 1, out.stderr
    offline = _fields(json.loads(out.stdout), "Explanation")
    assert (
        offline["allowed"] is False
        and offline["sides"][1]["isolatingPolicies"] == online["sides"][1]["isolatingPolicies"]
    )


def test_dry_run_json(lab: Lab) -> None:
    # a pod declaring a port: dry-run compares connections to declared ports
    lab.put(
        {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "locked", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-2", "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.241.0.9"},
        }
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:  # until the brain has seen the pod
        doc = _fields(_doc(lab, "dry-run", "-f", str(lab.files / "good.yaml")), "DryRunResult")
        if doc["opened"] or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert doc["closed"] == [] and doc["rejected"] == [] and doc["checked"] > 0
    for c in doc["opened"]:
        _item(c, "Connection")
    assert {(c["to"], c["port"], c["protocol"], c["family"]) for c in doc["opened"]} == {
        ("locked/web", 8080, "TCP", "ipv4")
    }


def test_version_json(lab: Lab) -> None:
    doc = _fields(_doc(lab, "version"), "Version")
    assert doc["brain"]["reachable"] is True and doc["brain"]["error"] == ""
    only = json.loads(stockade("version", "--client", "-o", "json").stdout)
    assert only == {"apiVersion": API_VERSION, "kind": "Version", "client": doc["client"], "brain": None}
    gone = json.loads(stockade("version", "--brain", lab.dead, "--insecure", "--timeout", "5", "-o", "json").stdout)
    # unreachable: the same fields, empty but the error
    assert gone["brain"].keys() == doc["brain"].keys() and gone["brain"]["agents"] == []


def _report(lab: Lab, events: list[drops_pb2.DropEvent], seq: int) -> None:
    """node-1's agent reporting blocked connections, with its certificate."""

    async def send() -> None:
        async with grpc.aio.secure_channel(f"localhost:{lab.sync_port}", node_credentials(lab)) as ch:
            batch = drops_pb2.DropBatch(node="node-1", instance="json-test", seq=seq, events=events)
            ack = await drops_pb2_grpc.DropServiceStub(ch).ReportDrops(iter([batch]), timeout=30)
            assert ack.last_seq == seq

    asyncio.run(send())


def _blocked(sport: int) -> drops_pb2.DropEvent:
    # open/a -> locked/b:80, denied by locked/b's ingress (the namespace's deny)
    return drops_pb2.DropEvent(
        time=time.time(), direction=drops_pb2.DROP_DIRECTION_INGRESS, src="10.241.0.4", dst="10.241.0.3",
        protocol="TCP", sport=sport, dport=80, chain="in_0",
    )  # fmt: skip


def _lines(proc: subprocess.Popen[str]) -> Queue[str]:
    q: Queue[str] = Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return q


def test_drops_follow_and_top_json(lab: Lab) -> None:
    """Follow and top over the same drops, reported as node-1's agent reports them."""
    argv = ["drops", "follow", "--count", "1", "-o", "json", *tls(lab), "--token", READ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stockade.cli.main", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": ENV_PATH, "PATH": "/usr/bin:/bin", "STOCKADE_LAB_DIR": "/nonexistent"},
    )
    q = _lines(proc)
    sent = 0
    try:
        deadline = time.monotonic() + 60
        line = None
        while line is None and time.monotonic() < deadline:  # a batch a second until it follows one
            sent += 1
            _report(lab, [_blocked(41000 + sent)], seq=sent)
            try:
                line = q.get(timeout=1.0)
            except Empty:
                pass
        assert line is not None, "nothing followed"
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    drop = _fields(json.loads(line), "Drop")
    assert 41000 < drop["sport"] <= 41000 + sent and isinstance(drop["time"], float)
    assert (drop["srcPod"], drop["dstPod"], drop["dport"], drop["direction"]) == ("open/a", "locked/b", 80, "ingress")
    assert drop["policies"] == ["locked/deny"] and drop["node"] == "node-1"

    doc = _fields(_doc(lab, "drops", "top", "--by", "dst_pod,dport"), "DropCountList")
    assert doc["window"] == "15m" and doc["refused"] == []
    _item(doc["store"], "DropStoreStatus")
    assert doc["store"]["source"] == "memory" and doc["store"]["redisConfigured"] is False
    for row in doc["items"]:
        _item(row, "DropCount")
    # the count (a uint64) a number; the key's names as --by gave them (data, not fields), sorted
    assert doc["items"] == [{"key": {"dst_pod": "b", "dport": "80"}, "count": sent}]


def test_a_followed_store_notice_is_a_kind_of_its_own() -> None:
    """Without Redis no notice comes from the brain: the line one would print, from a record."""
    from stockade.cli.commands.admin import _follow_doc
    from stockade.v1 import admin_pb2

    rec = admin_pb2.DropRecord(
        time=12.5, store=admin_pb2.DropStoreStatus(source="memory", redis_configured=True, buffered_events=7)
    )
    notice = _fields(_follow_doc(rec), "DropStoreNotice")
    _item(notice["store"], "DropStoreStatus")
    assert notice["time"] == 12.5 and notice["store"]["bufferedEvents"] == 7 and notice["store"]["error"] == ""
    drop = _fields(_follow_doc(admin_pb2.DropRecord(dport=80)), "Drop")  # no store field on a drop
    assert (drop["dport"], drop["sport"], drop["policies"]) == (80, 0, [])


def test_message_fields_keeps_numbers_and_zeros() -> None:
    """The converter itself: a uint64 past 2**53 stays an exact number, an unset message is null,
    a map's keys stay as they are (sorted) and its values keep their type."""
    from stockade.cli import jsonout
    from stockade.v1 import admin_pb2

    big = 2**60 + 1
    resp = admin_pb2.TopDropsResponse(rows=[admin_pb2.DropCount(key={"src": "x", "dst_pod": "y"}, count=big)])
    doc = jsonout.listing(jsonout.DROP_COUNT_LIST, resp, "rows")
    assert doc == {
        "apiVersion": API_VERSION, "kind": "DropCountList", "window": "", "refused": [], "store": None,
        "items": [{"key": {"dst_pod": "y", "src": "x"}, "count": big}],
    }  # fmt: skip
    assert json.loads(jsonout.render("json", doc))["items"][0]["count"] == big
    assert yaml.safe_load(jsonout.render("yaml", doc)) == doc
