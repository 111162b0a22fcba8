"""Operator commands against a running brain: policies, nodes, explain, dry-run, drops, lint.

Exit codes: 0 ok (for `explain`: allowed), 1 blocked (explain) or other failure, 2 bad usage or
input, 3 brain unreachable, 4 not authenticated or not permitted, 5 not found (`stockade.cli.exits`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml

from stockade.brain.drops.flows import GROUP_FIELDS
from stockade.cli import exits, jsonout
from stockade.cli.client import add_connection_args
from stockade.cli.client import runner as _runner
from stockade.cli.listing import LIST_OUTPUT, add_list_args, check_list_args, headless, no_headers, selected, watch
from stockade.cli.offline import add_offline_args, offline_or, run_explain, run_lint
from stockade.cli.printable import printable
from stockade.manifests import ManifestError, bounded_yaml
from stockade.manifests.loader import _files
from stockade.v1 import admin_pb2, admin_pb2_grpc


def _emit(args: argparse.Namespace, doc: Callable[[], dict[str, Any]], table: Callable[[], str]) -> None:
    print(jsonout.render(args.output, doc()) if jsonout.is_document(args.output) else table())


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    # Cells come from the cluster and from agents: escaped, so none can drive the terminal.
    cells = [list(map(printable, headers))] + [[printable(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


# ---------------------------------------------------------------------------- commands


def _doc(args: argparse.Namespace, kind: str, msg: Any, items: str) -> str | None:
    """The list ``msg`` (its repeated field ``items``) as -o json or yaml (without the final
    newline print adds), None for the other formats."""
    if not jsonout.is_document(args.output):
        return None
    return jsonout.render(args.output, jsonout.listing(kind, msg, items))


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


async def _policies(s: admin_pb2_grpc.AdminStub, md: list[tuple[str, str]], t: float, a: argparse.Namespace) -> int:
    reqs = check_list_args(a)

    async def render() -> tuple[bytes, str]:
        resp = await s.ListPolicies(admin_pb2.ListPoliciesRequest(namespace=a.namespace or ""), metadata=md, timeout=t)
        kept = [p for p in resp.policies if selected(reqs, p.labels)]
        del resp.policies[:]
        resp.policies.extend(kept)
        return resp.SerializeToString(deterministic=True), _policies_text(a, resp)

    return await watch(a, render)


def _is_cnp(p: admin_pb2.PolicyStatus) -> bool:
    return p.kind == "ClusterNetworkPolicy"


def _policy_name(p: admin_pb2.PolicyStatus) -> str:
    """``NS/NAME`` for a NetworkPolicy, ``cnp/NAME`` for a ClusterNetworkPolicy (its short name)."""
    return f"cnp/{p.name}" if _is_cnp(p) else f"{p.namespace}/{p.name}"


def _policies_text(a: argparse.Namespace, resp: admin_pb2.ListPoliciesResponse) -> str:
    if a.output == "name":
        return "\n".join(
            f"clusternetworkpolicy/{p.name}" if _is_cnp(p) else f"policy/{p.namespace}/{p.name}" for p in resp.policies
        )
    doc = _doc(a, jsonout.POLICY_LIST, resp, "policies")
    if doc is not None:
        return doc
    wide = a.output == "wide"
    rows = []
    for p in resp.policies:
        status = f"REJECTED: {p.rejected}" if p.rejected else f"{p.nodes_applied}/{p.nodes_needed} nodes"
        if p.not_realized:  # accepted, but left out of some nodes' models (e.g. a limit)
            status += "; NOT REALIZED on " + "; ".join(p.not_realized)
        types = ",".join(p.policy_types) or "-"
        if _is_cnp(p) and not p.rejected:
            types = f"{p.tier} {p.priority}: {types}"  # where it sits: tier, then priority
        row = [_policy_name(p), types, len(p.selected_pods), status]
        row.append("; ".join(p.warnings) or "-")
        if wide:
            row += [",".join(p.nodes_pending) or "-", _labels(p.labels)]
        rows.append(row)
    if not rows:
        return "" if no_headers(a) else "No policies."
    headers = ["POLICY", "TYPES", "PODS", "REALIZED", "WARNINGS", *(["PENDING ON", "LABELS"] if wide else [])]
    out = _table(headers, rows)
    return headless(out) if no_headers(a) else out


async def _nodes(s: admin_pb2_grpc.AdminStub, md: list[tuple[str, str]], t: float, a: argparse.Namespace) -> int:
    reqs = check_list_args(a)

    async def render() -> tuple[bytes, str]:
        resp = await s.ListNodes(admin_pb2.ListNodesRequest(), metadata=md, timeout=t)
        kept = [n for n in resp.nodes if selected(reqs, n.labels)]
        del resp.nodes[:]
        resp.nodes.extend(kept)
        return resp.SerializeToString(deterministic=True), _nodes_text(a, resp)

    return await watch(a, render)


def _nodes_text(a: argparse.Namespace, resp: admin_pb2.ListNodesResponse) -> str:
    if a.output == "name":
        return "\n".join(f"node/{n.name}" for n in resp.nodes)
    doc = _doc(a, jsonout.NODE_LIST, resp, "nodes")
    if doc is not None:
        return doc
    wide = a.output == "wide"
    rows = []
    for n in resp.nodes:
        ago = f"{time.time() - n.last_apply_time:.0f}s ago" if n.last_apply_time else "never"
        row = [n.name, "yes" if n.connected else "NO", n.brain or "-", _readiness(n), n.desired_generation]
        row += [n.applied_generation, n.backend or "-", n.pods, n.chains, n.sets, ago, _reason(n)]
        if wide:
            row += [n.agent_version or "-", n.protocol or "-", _labels(n.labels)]
        rows.append(row)
    headers = ["NODE", "CONNECTED", "BRAIN", "READY", "DESIRED", "APPLIED", "BACKEND", "PODS", "CHAINS", "SETS"]
    headers += ["LAST APPLY", "REASON", *(["AGENT", "PROTOCOL", "LABELS"] if wide else [])]
    out = _table(headers, rows)
    if no_headers(a):
        return headless(out)
    # Whose agents this covers (one brain's only without Redis): a disconnected node may be another's.
    return f"{out}\n({printable(resp.view)})" if resp.view else out


def _readiness(n: admin_pb2.NodeStatus) -> str:
    if n.refused:
        return "REFUSED"
    return "yes" if n.ready else "NOT READY"


def _reason(n: admin_pb2.NodeStatus) -> str:
    """Why the node is not ready (or the last apply error): what the operator must act on."""
    if n.refused:
        return n.refused
    if n.problems:
        return "; ".join(n.problems)
    if n.last_error:
        return n.last_error
    if not n.ready:
        return "no rules applied yet" if n.connected else "no agent connected"
    return "-"


async def _explain(s: admin_pb2_grpc.AdminStub, md: list[tuple[str, str]], t: float, a: argparse.Namespace) -> int:
    req = admin_pb2.ExplainRequest(to=a.to, port=a.port, protocol=a.protocol.upper())
    setattr(req, "from", a.source)
    resp = await s.Explain(req, metadata=md, timeout=t)
    # The brain's explanation (explain.py's as_json, the same document `explain -f` writes).
    _emit(a, lambda: jsonout.envelope(jsonout.EXPLANATION, json.loads(resp.json)), lambda: resp.text)
    return exits.OK if resp.allowed else exits.BLOCKED


def _read_manifests(paths: Sequence[str]) -> list[admin_pb2.Manifest]:
    """The files for a dry-run, each checked here as the brain would: a missing, unreadable or
    malformed file is bad input (exit 2) whether or not the brain can be reached."""
    try:
        files = _files(paths)
    except ManifestError as e:
        raise exits.CliError(f"dry-run: {e}", exits.USAGE) from None
    out = []
    for f in files:
        try:
            content = Path(f).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise exits.CliError(f"dry-run: cannot read {f}: {e}", exits.USAGE) from None
        try:
            docs = [d for d in bounded_yaml.load_all(content) if d is not None]
        except yaml.YAMLError as e:
            raise exits.CliError(f"dry-run: {f}: invalid YAML: {e}", exits.USAGE) from None
        for i, d in enumerate(docs, 1):
            if not isinstance(d, dict) or "kind" not in d:
                raise exits.CliError(f"dry-run: {f}, document {i}: not a Kubernetes object", exits.USAGE)
        out.append(admin_pb2.Manifest(name=str(f), content=content))
    return out


def _over(family: str) -> str:
    """A line's family ("over IPv6"): a change may open or close a pair over one family only."""
    return {"ipv4": " over IPv4", "ipv6": " over IPv6"}.get(family, "")


async def _dry_run(s: admin_pb2_grpc.AdminStub, md: list[tuple[str, str]], t: float, a: argparse.Namespace) -> int:
    resp = await s.DryRun(admin_pb2.DryRunRequest(manifests=_read_manifests(a.filename)), metadata=md, timeout=t)

    def table() -> str:
        lines = [f"Compared {resp.checked} connections between existing pods on their declared ports."]
        for title, conns in (("would start working", resp.opened), ("would stop working", resp.closed)):
            lines.append(f"\n{len(conns)} {title}:")
            lines.extend(f"  {getattr(c, 'from')} -> {c.to} {c.protocol}/{c.port}{_over(c.family)}" for c in conns)
        for title, items in (("Rejected", resp.rejected), ("Lint warnings", resp.warnings)):
            if items:
                lines.append(f"\n{title}:")
                lines.extend(f"  - {w}" for w in items)
        return "\n".join(lines)

    _emit(a, lambda: jsonout.obj(jsonout.DRY_RUN_RESULT, resp), table)
    return 0


async def _lint(s: admin_pb2_grpc.AdminStub, md: list[tuple[str, str]], t: float, a: argparse.Namespace) -> int:
    resp = await s.Lint(admin_pb2.LintRequest(), metadata=md, timeout=t)

    def table() -> str:
        lines = [f"REJECTED  {r}" for r in resp.rejected] + [f"WARNING   {w}" for w in resp.warnings]
        return "\n".join(lines) if lines else "No problems found."

    _emit(a, lambda: jsonout.obj(jsonout.LINT_RESULT, resp), table)
    return 1 if resp.rejected else 0


async def _drops_top(s: admin_pb2_grpc.AdminStub, md: list[tuple[str, str]], t: float, a: argparse.Namespace) -> int:
    check_list_args(a)
    group_by = [g.strip() for g in (a.by or "").split(",") if g.strip()]

    async def render() -> tuple[bytes, str]:
        resp = await s.TopDrops(
            admin_pb2.TopDropsRequest(window=a.window, group_by=group_by, limit=a.limit), metadata=md, timeout=t
        )
        return resp.SerializeToString(deterministic=True), _drops_text(a, resp)

    return await watch(a, render)


def _drops_text(a: argparse.Namespace, resp: admin_pb2.TopDropsResponse) -> str:
    doc = _doc(a, jsonout.DROP_COUNT_LIST, resp, "rows")
    if doc is not None:
        return doc
    keys = list(resp.rows[0].key.keys()) if resp.rows else []
    rows = [[*(r.key.get(k, "") for k in keys), r.count] for r in resp.rows]
    if no_headers(a):  # the rows alone, for scripts
        return headless(_table([k.upper() for k in keys] + ["COUNT"], rows)) if rows else ""
    if not rows:
        out = f"No blocked connections in the last {printable(resp.window)}."
    else:
        out = f"Blocked connections, last {printable(resp.window)}:\n" + _table(
            [k.upper() for k in keys] + ["COUNT"], rows
        )
    store = [_store_line(resp.store)] if resp.HasField("store") and resp.store.source == "memory" else []
    return "\n".join([*store, out, *(_refusal_line(r) for r in resp.refused)])


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if 0 < t < 1e11 else "?"


def _store_line(st: admin_pb2.DropStoreStatus) -> str:
    """Where `drops top` counts come from when that is not Redis, or what `drops follow` notices."""
    mine = f"this brain's in-memory counts (its own agents only, since {_clock(st.memory_since)})"
    if not st.redis_configured:
        return f"No Redis (the brain has no --redis-url): {mine}."
    if st.redis_available:
        return "Redis is available again: the counts held in memory are written to it."
    return (
        f"Redis unavailable since {_clock(st.unavailable_since)} ({printable(st.error) or 'no answer'}): "
        f"{mine}; {st.buffered_events} events buffered, written to Redis once it is back."
    )


_REFUSED = {
    "quota": "events refused over its quota of new counters",
    "invalid": "invalid events refused (a field failed validation)",
    "buffer_full": "events shed: its share of the brain's buffer was full while Redis was away",
}


def _refusal_line(r: admin_pb2.DropRefusal) -> str:
    """One node's refused events, e.g. "node n-3: 1200 events refused over its quota ..."."""
    what = _REFUSED.get(r.reason, f"events refused ({printable(r.reason)})")
    return f"node {printable(r.node)}: {r.count} {what}"


def _follow_line(rec: admin_pb2.DropRecord) -> str:
    """One followed drop, every field from the agents escaped."""
    when = time.strftime("%H:%M:%S", time.localtime(rec.time)) if 0 <= rec.time < 1e11 else "--:--:--"
    src = printable(rec.src_pod or rec.src)
    dst = printable(rec.dst_pod or rec.dst)
    pols = f" (isolated by {', '.join(map(printable, rec.policies))})" if rec.policies else ""
    return (
        f"{when} BLOCKED {printable(rec.direction):7s} {src}:{rec.sport} -> {dst}:{rec.dport} "
        f"{printable(rec.protocol)} on {printable(rec.node)}{pols}"
    )


def _follow_doc(rec: admin_pb2.DropRecord) -> dict[str, Any]:
    """A followed record's line: a Drop (every field but ``store``) or a DropStoreNotice (when and
    the store's state)."""
    fields = jsonout.message_fields(rec)
    store = fields.pop("store")
    if rec.HasField("store"):
        return jsonout.envelope(jsonout.DROP_STORE_NOTICE, {"time": fields["time"], "store": store})
    return jsonout.envelope(jsonout.DROP, fields)


async def _drops_follow(s: admin_pb2_grpc.AdminStub, md: list[tuple[str, str]], t: float, a: argparse.Namespace) -> int:
    req = admin_pb2.FollowDropsRequest(
        namespace=a.namespace or "", pod=a.pod or "", direction=a.direction or "", protocol=a.protocol or "",
        port=a.port or 0,
    )  # fmt: skip
    seen = 0
    call = s.FollowDrops(req, metadata=md, timeout=a.duration if a.duration else None)
    try:
        async for rec in call:
            if a.output == "json":
                print(jsonout.render("json", _follow_doc(rec), compact=True), flush=True)
            elif rec.HasField("store"):  # a notice: Redis unavailable, or back
                print(f"-- {_clock(rec.time)} {_store_line(rec.store)}", flush=True)
            else:
                print(_follow_line(rec), flush=True)
            if rec.HasField("store"):
                continue  # not a blocked connection: --count counts those only
            seen += 1
            if a.count and seen >= a.count:
                call.cancel()
                break
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policies", help="policies with their realization, selected pods and warnings")
    add_list_args(p, namespaced=True)
    add_connection_args(p, output=LIST_OUTPUT)
    p.set_defaults(handler=_runner(_policies))

    p = sub.add_parser(
        "nodes",
        help="every node's agent: connected, ready, generations, last apply",
        description="Every node's agent. READY is NOT READY when some pod traffic on the node may bypass "
        "the rules (the agent says why: e.g. a bridge without br_netfilter) and REFUSED when the brain "
        "refused the agent (an older sync protocol); such a node counts as enforcing nothing.",
    )
    add_list_args(p, namespaced=False)  # nodes are cluster-scoped: no -n/-A (as kubectl get nodes)
    add_connection_args(p, output=LIST_OUTPUT)
    p.set_defaults(handler=_runner(_nodes))

    p = sub.add_parser(
        "explain",
        help="why a connection is allowed or blocked",
        description="Explain the verdict for a new connection from FROM to TO (each ns/pod or an IP address "
        "of either family). Two dual-stack pods are judged over each family. Exits 0 when allowed (over "
        "every family judged), 1 when blocked; with -f, judged from manifests offline (2: a malformed one).",
        epilog="example: stockade explain sock-shop/front-end sock-shop/carts --port 80",
    )
    p.add_argument("source", metavar="FROM", help="ns/pod or an IP address")
    p.add_argument("to", metavar="TO", help="ns/pod or an IP address")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--protocol", default="TCP", choices=["TCP", "UDP", "SCTP", "tcp", "udp", "sctp"])
    add_connection_args(p)
    add_offline_args(p)
    p.set_defaults(handler=offline_or(_runner(_explain), run_explain))

    p = sub.add_parser(
        "dry-run",
        help="the connections manifests would open or close, without applying them",
        epilog="example: stockade dry-run -f fix-carts.yaml",
    )
    p.add_argument("-f", "--filename", action="append", required=True, metavar="PATH")
    add_connection_args(p)
    p.set_defaults(handler=_runner(_dry_run))

    p = sub.add_parser(
        "lint",
        help="policies that select nothing, peers that match nothing, rejected policies",
        description="Ask the brain, or (-f) judge manifests offline. Exits 1 when a policy is rejected, "
        "2 when a manifest is malformed (the message names file, document and field).",
    )
    add_connection_args(p)
    add_offline_args(p)
    p.set_defaults(handler=offline_or(_runner(_lint), run_lint))

    p = sub.add_parser("drops", help="blocked connections: top flows, or follow them live")
    dsub = p.add_subparsers(dest="drops_command", metavar="SUBCOMMAND", required=True)
    q = dsub.add_parser("top", help="top blocked flows over a window")
    q.add_argument("--window", default="15m", choices=["1m", "15m", "1h", "24h"])
    q.add_argument(
        "--by", default="dst_namespace,dst_pod,protocol,dport",
        help=f"comma-separated fields: {', '.join(GROUP_FIELDS)} (policy: the NetworkPolicies, or the "
        "ClusterNetworkPolicy rule, that dropped it)",
    )  # fmt: skip
    q.add_argument("--limit", type=int, default=20)
    add_list_args(q, namespaced=False, labels=False)  # rows are counts, not labelled objects
    add_connection_args(q)
    q.set_defaults(handler=_runner(_drops_top))
    q = dsub.add_parser("follow", help="print blocked connections as they happen (like hubble observe --follow)")
    q.add_argument("-n", "--namespace")
    q.add_argument("--pod", help="ns/pod or pod name, source or destination")
    q.add_argument("--direction", choices=["ingress", "egress"])
    q.add_argument("--protocol", choices=["TCP", "UDP", "SCTP"])
    q.add_argument("--port", type=int, help="destination port")
    q.add_argument("--count", type=int, default=0, help="stop after this many records (default: never)")
    q.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: never)")
    add_connection_args(q, output=("table", "json"))
    q.set_defaults(handler=_runner(_drops_follow))
