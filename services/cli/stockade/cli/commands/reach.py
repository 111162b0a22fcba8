"""`stockade reach`: which pods can open connections to which, from manifests alone."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from stockade.brain.admin.reachability import Probe, reach
from stockade.cli.offline import compile_checked
from stockade.manifests import IP_FAMILIES, ManifestError
from stockade.model import Protocol

MAX_NODES = 1000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reach",
        help="offline reachability of manifests (no cluster needed)",
        description="Read manifests (Namespace, Pod, Deployment, Service, NetworkPolicy v1 and "
        "extensions/v1beta1; "
        "files or folders; multi-document YAML), compile them with the policy engine, and show for every "
        "pod pair and port whether a new connection is allowed. Pods without IPs get them (--ip-family); "
        "pods without a node are spread over --nodes nodes. A dual-stack pair is checked once per IP "
        "family: an ipBlock of one family can allow one and not the other.",
        epilog="examples:\n  stockade reach -f examples/sock-shop/ --ports 80 -o json\n"
        "  stockade reach -f policies/ --ip-family dual --family ipv6",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-f", "--filename", action="append", required=True, metavar="PATH", help="file or folder; repeatable"
    )
    p.add_argument("--ports", help="comma-separated ports to check (default: each destination's declared ports)")
    p.add_argument(
        "--protocols", help="comma-separated protocols: TCP,UDP,SCTP (default: as declared; TCP with --ports)"
    )
    p.add_argument("--nodes", type=int, default=3, help="nodes to spread pods over (default 3)")
    p.add_argument(
        "--ip-family",
        choices=IP_FAMILIES,
        default="ipv4",
        help="addresses given to pods without any, as the lab does (default ipv4)",
    )
    p.add_argument(
        "--family",
        choices=("ipv4", "ipv6"),
        action="append",
        help="only connections of this IP family; repeatable (default: every family a pair shares)",
    )
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(handler=run)


def _parse_list(raw: str | None, what: str, conv: type) -> list:
    if not raw:
        return []
    out = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(conv(item.upper() if conv is Protocol else item))
        except ValueError:
            print(f"stockade reach: {what}: {item!r} is not valid", file=sys.stderr)
            raise SystemExit(2) from None
    return out


def run(args: argparse.Namespace) -> int:
    ports = _parse_list(args.ports, "--ports", int)
    if any(not 1 <= p <= 65535 for p in ports):
        print("stockade reach: --ports: ports must be between 1 and 65535", file=sys.stderr)
        return 2
    protocols = _parse_list(args.protocols, "--protocols", Protocol)
    if not 1 <= args.nodes <= MAX_NODES:
        print(f"stockade reach: --nodes: must be from 1 to {MAX_NODES}", file=sys.stderr)
        return 2
    try:
        engine = compile_checked(args.filename, nodes=args.nodes, ip_family=args.ip_family)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    families = [4 if f == "ipv4" else 6 for f in args.family or ()]
    results = reach(engine, ports or None, protocols or None, families or None)
    warnings = [str(w) for w in engine.lint()]
    rejections = [str(r) for r in engine.rejections()]
    if args.output == "json":
        doc = {"results": [r.as_json() for r in results], "warnings": warnings, "rejected": rejections}
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print(render_table(results))
        for title, lines in (("Rejected (not enforced)", rejections), ("Lint warnings", warnings)):
            if lines:
                print(f"\n{title}:")
                for line in lines:
                    print(f"  - {line}")
    return 0


def render_table(results: list[Probe]) -> str:
    """One matrix per destination port (and IP family, when there is more than one): rows are
    sources, columns destinations, grouped by namespace."""
    if not results:
        return "No pods with IPs and declared ports found; nothing to check (try --ports)."
    several = len({r.family for r in results}) > 1
    by_port: dict[tuple[int, Protocol, str], list[Probe]] = defaultdict(list)
    for r in results:
        by_port[(r.port, r.protocol, r.family)].append(r)
    blocks = []
    for (port, proto, fam), probes in sorted(by_port.items(), key=lambda kv: (kv[0][0], kv[0][1].value, kv[0][2])):
        dsts = sorted({p.dst for p in probes})
        srcs = sorted({p.src for p in probes})
        cell = {(p.src, p.dst): p.allowed for p in probes}
        width = max(len(s) for s in srcs)
        title = f"{proto.value}/{port}" + (f" {fam.replace('ip', 'IP')}" if several else "")
        lines = [f"{title}   (rows: from, columns: to; ✓ allowed, ✗ blocked)"]
        for i, d in enumerate(dsts):
            lines.append(" " * (width + 3) + "│ " * i + f"┌ {d}")
        lines.append(" " * (width + 3) + "│ " * len(dsts))
        last_ns = None
        for s in srcs:
            ns = s.split("/", 1)[0]
            if ns != last_ns:
                lines.append(f"[{ns}]")
                last_ns = ns
            row = " ".join(("✓" if cell[(s, d)] else "✗") if (s, d) in cell else " " for d in dsts)
            lines.append(f"  {s.ljust(width)} {row}")
        allowed = sum(1 for p in probes if p.allowed)
        lines.append(f"  {allowed} of {len(probes)} allowed")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
