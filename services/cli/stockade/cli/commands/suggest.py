"""`stockade suggest`: the smallest NetworkPolicy change that admits the connections that were
blocked, checked by compiling it (`stockade.brain.admin.suggest`).

Online it asks the brain, for the flows its drop store counted over ``--window`` (or the
``--flows`` given); offline (``-f``) it judges manifests against flows written by hand.
Exit codes: 0 every flow a NetworkPolicy can open is admitted (or none was blocked), 1 some flow
stays blocked, 2 bad input, 3 to 5 as every command (`stockade.cli.exits`).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

from stockade.brain.admin.suggest import MAX_FLOWS, suggest
from stockade.brain.admin.suggest_judge import Flow
from stockade.cli import exits, jsonout, suggest_out
from stockade.cli.client import add_connection_args, runner
from stockade.cli.flows_file import FlowsFileError, read_flows
from stockade.cli.offline import add_offline_args, cluster_objects, offline_or
from stockade.manifests import ManifestError
from stockade.v1 import admin_pb2, admin_pb2_grpc

SUGGESTION = "Suggestion"
# A drop's flow: the source (namespace "" when it is no pod), the destination, and the port.
DROP_FIELDS = ["src_namespace", "src", "dst_namespace", "dst_pod", "protocol", "dport"]
ICMP = {"1": "ICMP", "58": "ICMPv6"}  # drops of protocols with no port: their numbers, named


def _write(a: argparse.Namespace, doc: Mapping[str, Any]) -> int:
    if a.output == "yaml":
        print(suggest_out.manifests(doc))
    elif a.output == "json":
        print(jsonout.render("json", jsonout.envelope(SUGGESTION, doc)))
    else:
        print(suggest_out.text(doc))
    return exits.FAILED if doc["notAdmitted"] or doc["notFixable"] else exits.OK


def _flows(a: argparse.Namespace) -> list[Flow]:
    try:
        flows = read_flows(a.flows, a.namespace or "default")
    except FlowsFileError as e:
        raise exits.CliError(f"suggest: {e}", exits.USAGE) from None
    if len(flows) > MAX_FLOWS:
        raise exits.CliError(f"suggest: {a.flows}: {len(flows)} flows, at most {MAX_FLOWS}", exits.USAGE)
    return flows


def _in_namespace(f: Flow, namespace: str | None) -> bool:
    return namespace is None or any(end.startswith(f"{namespace}/") for end in (f.src, f.dst))


def end_matches(end: str, ref: str | None) -> bool:
    """Whether a flow's end is the one ``--from``/``--to`` names: a pod ``ns/name``, every pod
    of a namespace ``ns/``, or an address (None: any end)."""
    if ref is None:
        return True
    return end.startswith(ref) if ref.endswith("/") else end == ref


def picked(flows: list[Flow], a: argparse.Namespace) -> list[Flow]:
    """The flows ``--from`` and ``--to`` keep."""
    return [f for f in flows if end_matches(f.src, a.src) and end_matches(f.dst, a.dst)]


def _nothing_picked(a: argparse.Namespace, what: str) -> int:
    ends = " ".join(f"{flag} {v}" for flag, v in (("--from", a.src), ("--to", a.dst)) if v)
    print(f"None of {what} match {ends}: nothing to suggest.", file=sys.stderr)
    return exits.OK


def drop_flows(rows: list[admin_pb2.DropCount], namespace: str | None) -> tuple[list[Flow], list[str]]:
    """The flows of `drops top` rows grouped by DROP_FIELDS, in ``namespace`` (None: all); and
    the rows no NetworkPolicy rule can name (not TCP, UDP or SCTP)."""
    flows, skipped = [], []
    for r in rows:
        k = r.key
        src = f"{k['src_namespace']}/{k['src']}" if k.get("src_namespace") else k.get("src", "")
        dst = f"{k['dst_namespace']}/{k['dst_pod']}" if k.get("dst_namespace") else k.get("dst_pod", "")
        proto, port = k.get("protocol", ""), k.get("dport", "")
        if proto not in ("TCP", "UDP", "SCTP") or not port.isdigit() or not 1 <= int(port) <= 65535:
            what = ICMP.get(proto) or f"protocol {proto} port {port or '-'}"
            skipped.append(f"{src} -> {dst} {what} ({r.count} attempts)")
            continue
        f = Flow(src, dst, int(port), proto)
        if _in_namespace(f, namespace):
            flows.append(f)
    return flows, skipped


async def _online(s: admin_pb2_grpc.AdminStub, md: list[tuple[str, str]], t: float, a: argparse.Namespace) -> int:
    if a.flows:
        flows = picked(_flows(a), a)
        if not flows:
            return _nothing_picked(a, f"the flows of {a.flows}")
    else:
        resp = await s.TopDrops(
            admin_pb2.TopDropsRequest(window=a.window, group_by=DROP_FIELDS, limit=MAX_FLOWS), metadata=md, timeout=t
        )
        flows, skipped = drop_flows(list(resp.rows), a.namespace)
        for line in skipped:
            print(f"stockade suggest: skipped {line}: no NetworkPolicy port can name it", file=sys.stderr)
        if flows and not picked(flows, a):
            return _nothing_picked(a, f"the connections blocked in the last {resp.window}")
        flows = picked(flows, a)
        if not flows:
            where = f" in namespace {a.namespace}" if a.namespace else ""
            print(f"No blocked connections{where} in the last {resp.window}: nothing to suggest.", file=sys.stderr)
            return exits.OK
    req = admin_pb2.SuggestRequest()
    for f in flows:
        c = req.flows.add(to=f.dst, port=f.port, protocol=f.protocol)
        setattr(c, "from", f.src)
    got = await s.Suggest(req, metadata=md, timeout=t)
    return _write(a, json.loads(got.json))


def _offline(a: argparse.Namespace) -> int:
    if not a.flows:
        print("stockade suggest: with -f, name the flows to admit: --flows FILE (see --help)", file=sys.stderr)
        return exits.USAGE
    if not 1 <= a.nodes <= 1000:
        print("stockade suggest: --nodes: must be from 1 to 1000", file=sys.stderr)
        return exits.USAGE
    try:
        objects = cluster_objects(a.filename, a.nodes, a.ip_family)
        flows = picked(_flows(a), a)
        if not flows:
            return _nothing_picked(a, f"the flows of {a.flows}")
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return exits.USAGE
    except exits.CliError as e:
        print(f"stockade: {e}", file=sys.stderr)
        return e.code
    return _write(a, suggest(objects, flows).as_json())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "suggest",
        help="the smallest policy change that admits the connections that were blocked",
        description=textwrap.fill(
            "Propose the smallest change to the NetworkPolicies in force that admits blocked flows: "
            "first mend a selector naming a label value no pod has when a close one exists (name: cart -> "
            "carts), then add rules to the policy isolating each side, peers selected by the labels that tell "
            "them apart, on the port used. The suggestion is compiled and checked: what it admits, and every "
            "other connection between pods (on their declared ports) it would also open. Online the flows are "
            "the brain's blocked connections over --window (or --flows); with -f, manifests and --flows offline. "
            "Exits 0 when every flow a NetworkPolicy can open is admitted, 1 when one stays blocked.",
            width=88,
        ),
        epilog="examples:\n"
        "  stockade suggest --window 1h -n sock-shop\n"
        "  stockade suggest --to sock-shop/carts --from sock-shop/   # only what was blocked to carts from the shop\n"
        "  stockade suggest -o yaml | kubectl apply -f -\n"
        "  stockade suggest -f shop.yaml -f policies/ --flows flows.yaml\n"
        "flows file (YAML list): 'sock-shop/front-end -> sock-shop/carts:80', 'web -> db:5432/TCP',\n"
        "  '203.0.113.9 -> shop/front-end:8079', or {from: ns/pod, to: ns/pod, port: 80, protocol: TCP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--flows", metavar="FILE", help="the flows to admit, written by hand (- for standard input)")
    p.add_argument(
        "--window", default="15m", choices=["1m", "15m", "1h", "24h"], help="online: blocked over this (default 15m)"
    )
    p.add_argument(
        "-n", "--namespace", help="only flows from or to this namespace; in --flows, the namespace of bare pod names"
    )
    p.add_argument(
        "--from",
        dest="src",
        metavar="END",
        help="only flows from this end: a pod ns/name, a namespace ns/, or an address",
    )
    p.add_argument("--to", dest="dst", metavar="END", help="only flows to this end (as --from)")
    add_connection_args(p, output=("text", "yaml", "json"))
    add_offline_args(p)
    p.set_defaults(handler=offline_or(runner(_online), _offline))
