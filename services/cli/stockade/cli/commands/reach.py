"""`stockade reach`: which pods can open connections to which, from manifests alone."""

from __future__ import annotations

import argparse
import json
import operator
import sys
from collections import defaultdict
from typing import Protocol as TypingProtocol
from typing import TextIO, cast

from stockade.brain.admin.reachability import Probe
from stockade.cli.offline import compile_checked
from stockade.cli.reach_classes import Classes
from stockade.manifests import IP_FAMILIES, ManifestError
from stockade.model import Protocol

MAX_NODES = 1000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reach",
        help="offline reachability of manifests (no cluster needed)",
        description="Read manifests (Namespace, Pod, Deployment, Service, Node, NetworkPolicy v1 and "
        "extensions/v1beta1, ClusterNetworkPolicy policy.networking.k8s.io/v1alpha2; "
        "files or folders; multi-document YAML), compile them with the policy engine, and show for every "
        "pod pair and port whether a new connection is allowed. Host-network pods are listed at their "
        'node\'s addresses (JSON: "hostNetwork": true on their entries); nodes the manifests do not '
        "define get 192.168.0.N / fd00:192:168::N. Pods without IPs get them (--ip-family); "
        "pods without a node are spread over --nodes nodes. A dual-stack pair is checked once per IP "
        "family: an ipBlock of one family can allow one and not the other.",
        epilog="examples:\n  stockade reach -f examples/sock-shop/ --ports 80 -o json\n"
        "  stockade reach -f policies/ --ip-family dual --family ipv6",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="file or folder (- for standard input); repeatable",
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
    classes = Classes(engine, families or None)
    warnings = [str(w) for w in engine.lint()]
    rejections = [str(r) for r in engine.rejections()]
    if args.output == "json":
        sys.stdout.flush()
        out: ByteSink = getattr(sys.stdout, "buffer", None) or _TextSink(sys.stdout)  # a StringIO has no buffer
        write_json(classes, ports or None, protocols or None, warnings, rejections, out)
        out.flush()
    else:
        print(render_table(classes.probes(ports or None, protocols or None)))
        for title, lines in (("Rejected (not enforced)", rejections), ("Lint warnings", warnings)):
            if lines:
                print(f"\n{title}:")
                for line in lines:
                    print(f"  - {line}")
    return 0


class ByteSink(TypingProtocol):
    def write(self, b: bytes | memoryview, /) -> object: ...

    def flush(self) -> object: ...


class _TextSink:
    """Bytes written to a text stream (stdout replaced by one in-process)."""

    def __init__(self, text: TextIO) -> None:
        self.text = text

    def write(self, b: bytes | memoryview, /) -> int:
        return self.text.write(bytes(b).decode())

    def flush(self) -> None:
        self.text.flush()


def write_json(
    classes: Classes,
    ports: list[int] | None,
    protocols: list[Protocol] | None,
    warnings: list[str],
    rejections: list[str],
    out: ByteSink,
) -> None:
    """The UTF-8 text `json.dump({"results": [...], "warnings": ..., "rejected": ...}, indent=2)`
    gives, written a destination at a time (as bytes: 10,000 pods make gigabytes) so memory stays
    flat however many pairs there are."""
    heads = [f'    {{\n      "from": {json.dumps(p.key)},\n      "to": '.encode() for p in classes.pods]
    # (allowed, either end a host-network pod) -> the entry's end
    tails = {
        (ok, host): f'",\n      "allowed": {"true" if ok else "false"}'
        + (',\n      "hostNetwork": true' if host else "")
        + "\n    }"
        for ok in (True, False)
        for host in (True, False)
    }
    out.write(b'{\n  "results": [')
    first = True
    for row in classes.rows(ports, protocols):
        mid = (
            f'{json.dumps(row.dst.key)},\n      "port": {row.port},\n      "protocol": '
            f'{json.dumps(row.protocol.value)},\n      "family": "'
        )
        per_class = [
            [(mid + fam + tails[ok, row.host or classes.class_host[c]]).encode() for fam, ok in e]
            for c, e in enumerate(row.by_class)
        ]
        own = [(mid + fam + tails[ok, row.host]).encode() for fam, ok in row.own]
        pairs = {i: [(mid + fam + tails[ok, True]).encode() for fam, ok in e] for i, e in row.pairs.items()}
        text = _row_text(heads, classes.of, row.index, per_class, own, pairs)
        if text:
            out.write(b"\n" if first else b",\n")
            out.write(memoryview(text)[: -len(SEP)])
            first = False
    out.write(b"]" if first else b"\n  ]")
    # The rest as json.dump would write it: the same object's text after its opening brace.
    out.write(b"," + json.dumps({"warnings": warnings, "rejected": rejections}, indent=2)[1:].encode() + b"\n")


SEP = b",\n"


def _row_text(
    heads: list[bytes],
    of: list[int],
    index: int,
    per_class: list[list[bytes]],
    own: list[bytes],
    pairs: dict[int, list[bytes]] | None = None,
) -> bytes:
    """One row's probes, each followed by SEP: each source's head before each suffix of its class
    (``own`` for the destination itself, ``pairs`` for the sources whose pair with it is
    own-node). With one probe per source (the common case) heads and suffixes are interleaved by
    slice assignment and joined once, all in C."""
    special = {**(pairs or {}), index: own}  # sources not taking their class's suffixes
    singles = [p[0] + SEP if len(p) == 1 else None for p in per_class]
    picks = list(operator.itemgetter(*of)(singles)) if len(of) > 1 else [singles[c] for c in of]
    for i, mine in special.items():
        picks[i] = b"".join(s + SEP + (heads[i] if k < len(mine) - 1 else b"") for k, s in enumerate(mine))
    if None not in picks:
        pieces: list[bytes | None] = [b""] * (2 * len(of))
        pieces[0::2] = heads
        pieces[1::2] = picks
        for i, mine in special.items():
            if not mine:
                pieces[2 * i] = b""
        return b"".join(cast(list[bytes], pieces))
    general: list[bytes] = []
    for i, c in enumerate(of):
        general.extend(heads[i] + s + SEP for s in (special[i] if i in special else per_class[c]))
    return b"".join(general)


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
