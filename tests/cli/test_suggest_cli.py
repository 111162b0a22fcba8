"""`stockade suggest`, the real CLI in a subprocess.

Offline (``-f``) on Sock Shop: the four connections its policies block (two selectors naming
`cart`, no policy for session-db) get two mends and a new policy, in text, JSON and YAML; the
YAML fed back in as manifests admits them (as `explain -f` judges, and a second suggest). Flows
files that cannot be read are exit 2 naming file and item. Online, against a real brain (the
lab's API server, TLS, tokens; cli_brain.py) over real gRPC: flows given by hand, the brain's
own validation, and the blocked drops node-1's agent reports over the real DropService.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cli_brain import ADMIN, READ, SOCK_SHOP, Lab, node_credentials, stockade, tls

from stockade.v1 import admin_pb2, admin_pb2_grpc, drops_pb2, drops_pb2_grpc

OK, BLOCKED, USAGE, DENIED = 0, 1, 2, 4
DATA = Path(__file__).resolve().parent / "data" / "suggest"
FLOWS = DATA / "sock-shop-flows.yaml"
SHOP = ["-f", str(SOCK_SHOP / "complete-demo.yaml"), "-f", str(SOCK_SHOP / "policies")]


def _flow(src: str, dst: str, port: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"from": src, "to": dst, "port": port, "protocol": protocol}


def _ss(name: str) -> str:
    return f"sock-shop/{name}"


# What the policies block, and what they allow already, of the flows in FLOWS.
SHOP_BLOCKED = [
    _flow(_ss("carts"), _ss("carts-db"), 27017),
    _flow(_ss("front-end"), _ss("carts"), 80),
    _flow(_ss("front-end"), _ss("session-db"), 6379),
    _flow(_ss("orders"), _ss("carts"), 80),
]
SHOP_ALLOWED = [_flow(_ss("front-end"), _ss("catalogue"), 80), _flow(_ss("orders"), _ss("payment"), 80)]


def _json(proc: Any) -> dict[str, Any]:
    doc = json.loads(proc.stdout)
    assert (doc.pop("apiVersion"), doc.pop("kind")) == ("stockade.io/v1", "Suggestion")
    return doc


def _key(f: dict[str, Any]) -> tuple[str, str, int, str]:
    return (f["from"], f["to"], f["port"], f["protocol"])


def _sorted(flows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(flows, key=_key)


def _explain(manifests: list[str], f: dict[str, Any]) -> int:
    """`stockade explain -f` on the manifests: 0 allowed, 1 blocked."""
    proc = stockade("explain", f["from"], f["to"], "--port", str(f["port"]), *manifests)
    assert proc.returncode in (OK, BLOCKED), proc.stderr
    return proc.returncode


# -- offline: Sock Shop --------------------------------------------------------------------------


def test_text_names_the_mends_and_the_new_policy() -> None:
    proc = stockade("suggest", *SHOP, "--flows", str(FLOWS), "-n", "sock-shop")
    assert proc.returncode == OK, proc.stderr
    out = proc.stdout
    blocks = {b.splitlines()[0]: b for b in out.split("\n\n")}
    mend_carts = blocks["MEND       sock-shop/cart-access"]
    assert "no pod has 'cart'; 'carts' is the close value that exists" in mend_carts
    assert "admits sock-shop/front-end -> sock-shop/carts TCP/80" in mend_carts
    assert "admits sock-shop/orders -> sock-shop/carts TCP/80" in mend_carts
    mend_db = blocks["MEND       sock-shop/carts-db-access"]
    assert "spec.ingress[0].from[0].podSelector.matchLabels.name: no pod has 'cart'" in mend_db
    assert "admits sock-shop/carts -> sock-shop/carts-db TCP/27017" in mend_db
    create = blocks["CREATE     sock-shop/session-db-access"]
    assert "adds an ingress rule: from pods name=front-end on TCP/6379" in create
    assert "admits sock-shop/front-end -> sock-shop/session-db TCP/6379" in create
    assert "3 changes admit 4 of the 4 blocked flows a NetworkPolicy can open." in out
    assert "They open no other connection between the cluster's pods on their declared ports." in out
    assert "Already allowed (2): nothing to change for them." in out
    assert "Still blocked" not in out and "No NetworkPolicy can open" not in out


def test_json_admits_the_four_and_opens_nothing_else() -> None:
    proc = stockade("suggest", *SHOP, "--flows", str(FLOWS), "-n", "sock-shop", "-o", "json")
    assert proc.returncode == OK, proc.stderr
    doc = _json(proc)
    assert doc["admitted"] == SHOP_BLOCKED  # sorted, as written
    assert doc["alreadyAllowed"] == SHOP_ALLOWED
    assert doc["alsoOpens"] == [] and doc["closes"] == []
    assert doc["notFixable"] == [] and doc["notAdmitted"] == [] and doc["rejected"] == []
    changes = {(c["action"], c["policy"]): c for c in doc["changes"]}
    assert set(changes) == {
        ("mend", _ss("cart-access")),
        ("mend", _ss("carts-db-access")),
        ("create", _ss("session-db-access")),
    }
    assert changes["mend", _ss("cart-access")]["admits"] == [SHOP_BLOCKED[1], SHOP_BLOCKED[3]]
    assert changes["mend", _ss("carts-db-access")]["admits"] == [SHOP_BLOCKED[0]]
    new = changes["create", _ss("session-db-access")]
    assert new["admits"] == [SHOP_BLOCKED[2]]
    assert new["manifest"]["spec"]["podSelector"] == {"matchLabels": {"name": "session-db"}}
    assert new["manifest"]["spec"]["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"name": "front-end"}}}],
            "ports": [{"protocol": "TCP", "port": 6379}],
        }
    ]
    mended = changes["mend", _ss("cart-access")]["manifest"]["spec"]["podSelector"]
    assert mended == {"matchLabels": {"name": "carts"}}
    # the same document as JSON and as YAML's manifests
    as_yaml = stockade("suggest", *SHOP, "--flows", str(FLOWS), "-n", "sock-shop", "-o", "yaml")
    assert as_yaml.returncode == OK, as_yaml.stderr
    assert [d for d in yaml.safe_load_all(as_yaml.stdout) if d] == [c["manifest"] for c in doc["changes"]]


def test_yaml_fed_back_admits_the_four(tmp_path: Path) -> None:
    proc = stockade("suggest", *SHOP, "--flows", str(FLOWS), "-n", "sock-shop", "-o", "yaml")
    assert proc.returncode == OK, proc.stderr
    assert proc.stdout.startswith("# stockade suggest\n# 3 changes admit 4 of the 4")
    policies = list(yaml.safe_load_all(proc.stdout))  # the summary before them: comments only
    assert len(policies) == 3
    assert all(d["apiVersion"] == "networking.k8s.io/v1" and d["kind"] == "NetworkPolicy" for d in policies)
    assert {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in policies} == {
        ("sock-shop", "cart-access"),
        ("sock-shop", "carts-db-access"),
        ("sock-shop", "session-db-access"),
    }
    assert all("status" not in d and set(d["metadata"]) == {"name", "namespace"} for d in policies)
    fix = tmp_path / "fix.yaml"
    fix.write_text(proc.stdout)
    fixed = [*SHOP, "-f", str(fix)]  # later manifests replace the policies of the same name
    for f in SHOP_BLOCKED:
        assert _explain(SHOP, f) == BLOCKED, f
        assert _explain(fixed, f) == OK, f
    for f in SHOP_ALLOWED:
        assert _explain(fixed, f) == OK, f
    # the whole cluster opens nothing else: reach on the declared ports differs by the four only
    before = _reach(SHOP)
    after = _reach(fixed)
    assert after - before == {(_key(f)[0], _key(f)[1], _key(f)[2]) for f in SHOP_BLOCKED}
    assert before - after == set()
    again = stockade("suggest", *fixed, "--flows", str(FLOWS), "-n", "sock-shop", "-o", "json")
    assert again.returncode == OK, again.stderr
    doc = _json(again)
    assert doc["changes"] == [] and doc["admitted"] == []
    assert doc["alreadyAllowed"] == _sorted(SHOP_BLOCKED + SHOP_ALLOWED)
    assert doc["notFixable"] == doc["notAdmitted"] == doc["alsoOpens"] == []


def _reach(manifests: list[str]) -> set[tuple[str, str, int]]:
    """The allowed (from, to, port) of `stockade reach -f`, every pair on the four's ports."""
    proc = stockade("reach", *manifests, "--ports", "80,6379,27017", "-o", "json")
    assert proc.returncode == OK, proc.stderr
    out = set()
    for r in json.loads(proc.stdout)["results"]:
        if r["allowed"]:
            out.add((r["from"], r["to"], r["port"]))
    return out


def test_flows_from_standard_input() -> None:
    lines = "- sock-shop/front-end -> sock-shop/session-db:6379\n"
    proc = stockade("suggest", *SHOP, "--flows", "-", "-o", "json", stdin=lines)
    assert proc.returncode == OK, proc.stderr
    doc = _json(proc)
    assert doc["admitted"] == [SHOP_BLOCKED[2]]
    assert [(c["action"], c["policy"]) for c in doc["changes"]] == [("create", _ss("session-db-access"))]


def test_an_unknown_pod_is_not_fixable_and_exit_1(tmp_path: Path) -> None:
    """Not a file error: the flow is read, judged, and said to be no NetworkPolicy's to open."""
    flows = tmp_path / "flows.yaml"
    flows.write_text("- front-end -> nosuch:80\n- carts -> carts-db:27017\n")
    proc = stockade("suggest", *SHOP, "--flows", str(flows), "-n", "sock-shop", "-o", "json")
    assert proc.returncode == BLOCKED, proc.stderr
    doc = _json(proc)
    assert doc["notFixable"] == [
        {**_flow(_ss("front-end"), _ss("nosuch"), 80), "reason": "pod sock-shop/nosuch not found"}
    ]
    assert doc["admitted"] == [SHOP_BLOCKED[0]]  # the rest is suggested all the same
    text = stockade("suggest", *SHOP, "--flows", str(flows), "-n", "sock-shop")
    assert text.returncode == BLOCKED
    assert (
        "No NetworkPolicy can open (1):\n"
        "  sock-shop/front-end -> sock-shop/nosuch TCP/80: pod sock-shop/nosuch not found" in text.stdout
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- front-end -> carts:80\n- this is bad\n", "flows[1]: 'this is bad': write FROM -> TO:PORT[/PROTOCOL]"),
        ("- front-end -> carts\n", "flows[0]: 'front-end -> carts': write FROM -> TO:PORT"),
        (
            "- front-end -> carts:80\n- {from: a, to: b, port: 80, colour: red}\n",
            "flows[1]: unknown field 'colour': the fields are from, to, port, protocol",
        ),
        (
            "- front-end -> carts:70000\n",
            "flows[0]: sock-shop/front-end -> sock-shop/carts: port 70000: must be from 1",
        ),
        ("- {from: orders, to: carts, port: 70000}\n", "flows[0]: sock-shop/orders -> sock-shop/carts: port 70000"),
        ("- {from: orders, to: carts, port: '80'}\n", "flows[0]: 'port' must be a number, got '80'"),
        ("- {from: orders, port: 80}\n", "flows[0]: 'from' and 'to' are required"),
        ("- front-end -> carts:80/ICMP\n", "flows[0]: sock-shop/front-end -> sock-shop/carts: protocol 'ICMP'"),
        ("- [front-end, carts]\n", "flows[0]: ['front-end', 'carts']: a flow is a line (FROM -> TO:PORT) or a mapping"),
        ("", "expected one YAML document of flows, found 0"),
        ("[]\n", "expected a list of flows (or 'flows:' holding one), got none"),
        ("flows: {}\n", "expected a list of flows (or 'flows:' holding one), got none"),
        ("- a -> b:80\n---\n- c -> d:80\n", "expected one YAML document of flows, found 2"),
        ("- [unclosed\n", "invalid YAML"),
    ],
)
def test_a_bad_flows_file_is_exit_2_naming_file_and_item(tmp_path: Path, content: str, message: str) -> None:
    flows = tmp_path / "flows.yaml"
    flows.write_text(content)
    proc = stockade("suggest", *SHOP, "--flows", str(flows), "-n", "sock-shop")
    assert proc.returncode == USAGE, proc.stdout
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"stockade: suggest: {flows}: "), proc.stderr
    assert message in proc.stderr


def test_flows_file_limits(tmp_path: Path) -> None:
    missing = stockade("suggest", *SHOP, "--flows", str(tmp_path / "nope.yaml"))
    assert missing.returncode == USAGE and f"{tmp_path / 'nope.yaml'}: cannot read" in missing.stderr
    many = tmp_path / "many.yaml"
    many.write_text("".join(f"- front-end -> carts:{p}\n" for p in range(1, 502)))
    proc = stockade("suggest", *SHOP, "--flows", str(many), "-n", "sock-shop")
    assert proc.returncode == USAGE and f"{many}: 501 flows, at most 500" in proc.stderr
    # 500 is within the bound, under a `flows:` key too (a pod to itself: never filtered)
    ok = tmp_path / "ok.yaml"
    ok.write_text("flows:\n" + "".join(f"- front-end -> front-end:{p}\n" for p in range(1, 501)))
    proc = stockade("suggest", *SHOP, "--flows", str(ok), "-n", "sock-shop", "-o", "json")
    assert proc.returncode == OK, proc.stderr
    doc = _json(proc)
    assert len(doc["alreadyAllowed"]) == 500 and doc["changes"] == []


def test_from_and_to_pick_the_flows_to_admit() -> None:
    proc = stockade("suggest", *SHOP, "--flows", str(FLOWS), "-n", "sock-shop", "--to", _ss("carts"), "-o", "json")
    assert proc.returncode == OK, proc.stderr
    doc = _json(proc)
    assert doc["admitted"] == [SHOP_BLOCKED[1], SHOP_BLOCKED[3]]  # front-end and orders to carts
    assert doc["alreadyAllowed"] == [] and doc["alsoOpens"] == []
    assert [(c["action"], c["policy"]) for c in doc["changes"]] == [("mend", _ss("cart-access"))]
    # a namespace as "ns/", and both ends at once (-n: the namespace of the file's bare names)
    ends = ["--from", _ss("front-end"), "--to", "sock-shop/"]
    both = stockade("suggest", *SHOP, "--flows", str(FLOWS), "-n", "sock-shop", *ends, "-o", "json")
    assert both.returncode == OK, both.stderr
    picked = _json(both)
    assert picked["admitted"] == [SHOP_BLOCKED[1], SHOP_BLOCKED[2]]
    assert all(f["from"] == _ss("front-end") for f in picked["alreadyAllowed"])
    none = stockade(
        "suggest", *SHOP, "--flows", str(FLOWS), "-n", "sock-shop", "--from", "other/", "--to", _ss("carts")
    )
    assert none.returncode == OK and none.stdout == ""
    assert f"None of the flows of {FLOWS} match --from other/ --to {_ss('carts')}: nothing to suggest." in none.stderr


def test_manifests_without_flows_is_exit_2() -> None:
    proc = stockade("suggest", *SHOP)
    assert proc.returncode == USAGE
    assert "with -f, name the flows to admit: --flows FILE" in proc.stderr and proc.stdout == ""
    bad_manifest = stockade("suggest", "-f", "/nonexistent/shop.yaml", "--flows", str(FLOWS))
    assert bad_manifest.returncode == USAGE and bad_manifest.stderr.startswith("error: ")


def test_help() -> None:
    proc = stockade("suggest", "--help")
    assert proc.returncode == OK
    for text in ("--flows FILE", "--window", "-o", "flows file (YAML list)", "stockade suggest -o yaml | kubectl"):
        assert text in proc.stdout, text


# -- online: a real brain over real gRPC ---------------------------------------------------------


def _online(lab: Lab, *args: str, token: str | None = READ) -> Any:
    auth = ["--token", token] if token else []
    return stockade("suggest", *tls(lab), *auth, *args)


def test_online_flows_get_a_rule_that_admits_them(lab: Lab, tmp_path: Path) -> None:
    """locked/deny isolates every pod of `locked` for ingress; open/a -> locked/b:80 gets a rule."""
    flows = tmp_path / "flows.yaml"
    flows.write_text("- open/a -> locked/b:80\n- locked/a -> open/b:80\n")  # the second is allowed
    proc = _online(lab, "--flows", str(flows), "-o", "json")
    assert proc.returncode == OK, proc.stderr
    doc = _json(proc)
    want = _flow("open/a", "locked/b", 80)
    assert doc["admitted"] == [want]
    assert doc["alreadyAllowed"] == [_flow("locked/a", "open/b", 80)]
    assert doc["notFixable"] == doc["notAdmitted"] == doc["closes"] == []
    [change] = doc["changes"]
    # locked/deny selects every pod of the namespace: a rule there would open b and a alike
    assert (change["action"], change["policy"]) == ("create", "locked/b-access")
    assert change["admits"] == [want]
    manifest = change["manifest"]
    assert manifest["kind"] == "NetworkPolicy" and manifest["metadata"]["namespace"] == "locked"
    # the manifest, with the brain's cluster as manifests, admits the flow (and it was blocked)
    path = tmp_path / "fix.yaml"
    path.write_text(yaml.safe_dump(manifest))
    cluster = ["-f", str(lab.files / "cluster.yaml")]
    assert _explain(cluster, want) == BLOCKED
    assert _explain([*cluster, "-f", str(path)], want) == OK
    # text and YAML online are the same suggestion
    text = _online(lab, "--flows", str(flows))
    assert text.returncode == OK and "admits open/a -> locked/b TCP/80" in text.stdout
    as_yaml = _online(lab, "--flows", str(flows), "-o", "yaml")
    assert as_yaml.returncode == OK
    assert [d for d in yaml.safe_load_all(as_yaml.stdout) if d] == [manifest]
    # applied to the cluster, the brain admits the flow, and suggests nothing more
    lab.put(manifest)
    try:
        _until_online(lab, want, OK)
        again = _online(lab, "--flows", str(flows), "-o", "json")
        assert again.returncode == OK, again.stderr
        doc = _json(again)
        assert doc["changes"] == [] and doc["admitted"] == []
        assert doc["alreadyAllowed"] == _sorted([want, _flow("locked/a", "open/b", 80)])
    finally:
        _delete(lab, manifest)
        _until_online(lab, want, BLOCKED)


def _until_online(lab: Lab, f: dict[str, Any], code: int) -> None:
    """Wait until the brain's `explain` of ``f`` exits ``code`` (0 allowed, 1 blocked)."""
    deadline = time.monotonic() + 60
    while True:
        proc = stockade("explain", f["from"], f["to"], "--port", str(f["port"]), *tls(lab), "--token", READ)
        if proc.returncode == code:
            return
        assert time.monotonic() < deadline, (proc.returncode, proc.stdout, proc.stderr)
        time.sleep(0.2)


def _delete(lab: Lab, obj: dict[str, Any]) -> None:
    async def delete() -> None:
        lab.api.delete_object(obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"])

    lab.loop.run(delete())


def test_online_exit_codes(lab: Lab, tmp_path: Path) -> None:
    flows = tmp_path / "flows.yaml"
    flows.write_text("- open/a -> locked/b:80\n")
    assert _online(lab, "--flows", str(flows), token=ADMIN).returncode == OK
    no_token = _online(lab, "--flows", str(flows), token=None)
    assert no_token.returncode == DENIED, no_token.stderr
    wrong = _online(lab, "--flows", str(flows), token="not-a-token-0123456789")
    assert wrong.returncode == DENIED, wrong.stderr
    # an unknown pod: judged by the brain, not fixable
    flows.write_text("- open/a -> locked/nosuch:80\n")
    missing = _online(lab, "--flows", str(flows), "-o", "json")
    assert missing.returncode == BLOCKED, missing.stderr
    assert _json(missing)["notFixable"] == [
        {**_flow("open/a", "locked/nosuch", 80), "reason": "pod locked/nosuch not found"}
    ]
    # a bad file is the CLI's to refuse, before any call
    flows.write_text("- open/a -> locked/b:0\n")
    bad = _online(lab, "--flows", str(flows))
    assert bad.returncode == USAGE and f"{flows}: flows[0]: open/a -> locked/b: port 0" in bad.stderr


def _rpc(lab: Lab, flows: list[tuple[str, str, int, str]], token: str = READ) -> grpc.StatusCode:
    """The brain's Suggest called with the gRPC stub: its status code."""
    creds = grpc.ssl_channel_credentials(root_certificates=(lab.certs / "ca.crt").read_bytes())
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(lab.address, creds, options=options) as ch:
        req = admin_pb2.SuggestRequest()
        for src, dst, port, proto in flows:
            c = req.flows.add(to=dst, port=port, protocol=proto)
            setattr(c, "from", src)
        try:
            resp = admin_pb2_grpc.AdminStub(ch).Suggest(
                req, metadata=[("authorization", f"Bearer {token}")], timeout=60
            )
        except grpc.RpcError as e:
            return e.code()
        assert json.loads(resp.json)["changes"] is not None
        return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("flows", "code"),
    [
        ([("open/a", "locked/b", 80, "TCP")], grpc.StatusCode.OK),
        ([("open/a", "locked/b", 80, "")], grpc.StatusCode.OK),  # the protocol defaults to TCP
        ([("open/a", "locked/b", 0, "TCP")], grpc.StatusCode.INVALID_ARGUMENT),
        ([("open/a", "locked/b", 70000, "TCP")], grpc.StatusCode.INVALID_ARGUMENT),
        ([("open/a", "locked/b", 80, "ICMP")], grpc.StatusCode.INVALID_ARGUMENT),
        ([("", "locked/b", 80, "TCP")], grpc.StatusCode.INVALID_ARGUMENT),
        ([("open/a", "locked/b\n", 80, "TCP")], grpc.StatusCode.INVALID_ARGUMENT),
        ([], grpc.StatusCode.INVALID_ARGUMENT),
        ([("open/a", "locked/b", p, "TCP") for p in range(1, 502)], grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["ok", "default-protocol", "port-0", "port-70000", "icmp", "no-from", "control-char", "none", "501-flows"],
)
def test_the_brain_validates_the_flows(lab: Lab, flows: list[tuple[str, str, int, str]], code: grpc.StatusCode) -> None:
    assert _rpc(lab, flows) == code


def test_the_brain_requires_a_token(lab: Lab) -> None:
    assert _rpc(lab, [("open/a", "locked/b", 80, "TCP")], token="x" * 30) == grpc.StatusCode.UNAUTHENTICATED


# -- online from drops: node-1's agent reports, the brain counts (in memory: no Redis here) -----


def _report(lab: Lab, events: list[drops_pb2.DropEvent], seq: int) -> None:
    """node-1's agent reporting blocked connections over the real DropService, with its certificate."""

    async def send() -> None:
        async with grpc.aio.secure_channel(f"localhost:{lab.sync_port}", node_credentials(lab)) as ch:
            batch = drops_pb2.DropBatch(node="node-1", instance="suggest-test", seq=seq, events=events)
            ack = await drops_pb2_grpc.DropServiceStub(ch).ReportDrops(iter([batch]), timeout=30)
            assert ack.last_seq == seq

    asyncio.run(send())


def _drop(src: str, dst: str, dport: int, protocol: str = "TCP", sport: int = 40000) -> drops_pb2.DropEvent:
    return drops_pb2.DropEvent(
        time=time.time(),
        direction=drops_pb2.DROP_DIRECTION_INGRESS,
        src=src,
        dst=dst,
        protocol=protocol,
        sport=sport,
        dport=dport,
        chain="in_0",
    )


# OBJECTS' addresses: locked/a .2, locked/b .3, open/a .4, open/b .5
LOCKED_A, LOCKED_B, OPEN_A, OPEN_B = "10.241.0.2", "10.241.0.3", "10.241.0.4", "10.241.0.5"


def test_online_from_the_brains_drops(lab: Lab) -> None:
    nothing = _online(lab, "-n", "locked", "-o", "json")
    assert nothing.returncode == OK, nothing.stderr
    assert nothing.stdout == ""
    assert "No blocked connections in namespace locked in the last 15m: nothing to suggest." in nothing.stderr
    events = [
        _drop(OPEN_A, LOCKED_B, 80, sport=40001),
        _drop(OPEN_A, LOCKED_B, 80, sport=40002),  # the same flow again: one flow
        _drop(OPEN_B, LOCKED_A, 5432, sport=40003),
        _drop("203.0.113.9", LOCKED_A, 8443, sport=40004),  # from outside the cluster
        _drop(OPEN_A, LOCKED_B, 0, protocol="1", sport=0),  # ICMP: no NetworkPolicy port names it
        _drop(OPEN_B, OPEN_A, 9000, sport=40005),  # another namespace: left out by -n locked
    ]
    _report(lab, events, seq=1)
    want = _sorted(
        [
            _flow("open/a", "locked/b", 80),
            _flow("open/b", "locked/a", 5432),
            _flow("203.0.113.9", "locked/a", 8443),
        ]
    )
    # counted once the brain has them (memory store): wait for `drops top` to show all six
    deadline = time.monotonic() + 60
    while True:
        top = stockade("drops", "top", *tls(lab), "--token", READ, "-o", "json")
        assert top.returncode == OK, top.stderr
        counted = json.loads(top.stdout)
        if sum(r["count"] for r in counted["items"]) == len(events):
            break
        assert time.monotonic() < deadline, top.stdout
        time.sleep(0.2)
    assert counted["refused"] == []  # every event valid, as an agent writes them
    proc = _online(lab, "-n", "locked", "-o", "json")
    assert proc.returncode == OK, proc.stderr
    assert "skipped open/a -> locked/b ICMP (1 attempts): no NetworkPolicy port can name it" in (proc.stderr)
    doc = _json(proc)
    assert doc["admitted"] == want
    assert doc["notFixable"] == doc["notAdmitted"] == doc["alreadyAllowed"] == doc["closes"] == []
    assert sorted((f for c in doc["changes"] for f in c["admits"]), key=_key) == want
    assert all(c["policy"].startswith("locked/") for c in doc["changes"])
    # the changes, with the brain's cluster as manifests, admit exactly what was asked of the drops
    manifests = ["-f", str(lab.files / "cluster.yaml")]
    fixed = list(manifests)
    for i, c in enumerate(doc["changes"]):
        path = lab.files / f"suggested-{i}.yaml"
        path.write_text(yaml.safe_dump(c["manifest"]))
        fixed += ["-f", str(path)]
    for f in want:
        assert _explain(manifests, f) == BLOCKED and _explain(fixed, f) == OK, f
    outside = [p for c in doc["changes"] for r in c["manifest"]["spec"]["ingress"] for p in r["from"] if "ipBlock" in p]
    assert outside == [{"ipBlock": {"cidr": "203.0.113.9/32"}}], doc["changes"]
    # without -n: the drop in `open` too (an agent's word: the brain finds it allowed)
    every = _online(lab, "-o", "json")
    assert every.returncode == OK, every.stderr
    all_doc = _json(every)
    assert all_doc["admitted"] == want and all_doc["alreadyAllowed"] == [_flow("open/b", "open/a", 9000)]
    # --from / --to pick among the drops: an address, and a pod with a namespace
    outsider = _json(_online(lab, "--from", "203.0.113.9", "-o", "json"))
    assert outsider["admitted"] == [_flow("203.0.113.9", "locked/a", 8443)] and outsider["alreadyAllowed"] == []
    to_b = _json(_online(lab, "--to", "locked/b", "--from", "open/", "-o", "json"))
    assert to_b["admitted"] == [_flow("open/a", "locked/b", 80)]
    nobody = _online(lab, "--to", "locked/nobody")
    assert nobody.returncode == OK and nobody.stdout == ""
    assert (
        "None of the connections blocked in the last 15m match --to locked/nobody: nothing to suggest." in nobody.stderr
    )
