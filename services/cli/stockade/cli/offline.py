"""Manifests for the offline tools (`reach`, `lint -f`, `explain -f`): read, checked field by field,
compiled. Any malformed object is one ManifestError naming file, document, object and field."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from stockade.brain.admin.explain import ExplainError, explain
from stockade.brain.admin.reachability import load_cluster
from stockade.brain.engine import Engine
from stockade.brain.engine.cnp_parse import parse_cnp
from stockade.brain.engine.errors import PolicyError
from stockade.brain.engine.policy import parse_policy
from stockade.cli import jsonout
from stockade.manifests import (
    IP_FAMILIES,
    Cluster,
    Document,
    ManifestError,
    assign_addresses,
    bounded_yaml,
    build_cluster,
    complete_nodes,
    node_names,
    read_documents,
)
from stockade.model import Protocol


def _describe(d: Document) -> str:
    meta = d.obj.get("metadata") or {}
    return f"{d.obj['kind']} {meta.get('namespace') or 'default'}/{meta['name']}"


STDIN = "-"


def _stdin_documents(stream: BinaryIO) -> list[Document]:
    """The manifests on standard input, read as a file is (same size bound, YAML reader and
    checks); messages and sources name it ``-``."""
    data = stream.read(bounded_yaml.MAX_BYTES + 1)
    if len(data) > bounded_yaml.MAX_BYTES:
        raise ManifestError(f"-: over {bounded_yaml.MAX_BYTES:,} bytes; manifests over that are refused")
    with tempfile.TemporaryDirectory(prefix="stockade-stdin-") as tmp:
        f = Path(tmp) / "stdin.yaml"
        f.write_bytes(data)
        try:
            docs = read_documents([f])
        except ManifestError as e:
            raise ManifestError(str(e).replace(str(f), STDIN)) from None
    return [Document(d.obj, d.source.replace(str(f), STDIN, 1)) for d in docs]


def read_manifests(paths: Sequence[str], stdin: BinaryIO | None = None) -> list[Document]:
    """Every object in ``paths`` in order, as `read_documents`; ``-`` is standard input (once)."""
    if list(paths).count(STDIN) > 1:
        raise ManifestError("-: standard input can be named once")
    docs: list[Document] = []
    for p in paths:
        docs.extend(_stdin_documents(stdin or sys.stdin.buffer) if p == STDIN else read_documents([p]))
    return docs


def check_policies(docs: Sequence[Document]) -> None:
    """A malformed NetworkPolicy or ClusterNetworkPolicy is an error of the manifest offline (the
    brain would reject it)."""
    for d in docs:
        kind = d.obj["kind"]
        if kind in ("NetworkPolicy", "ClusterNetworkPolicy"):
            try:
                parse_policy(d.obj) if kind == "NetworkPolicy" else parse_cnp(d.obj)
            except PolicyError as e:
                what = _describe(d) if kind == "NetworkPolicy" else f"{kind} {d.obj['metadata']['name']}"
                raise ManifestError(f"{d.source} ({what}): {e}") from None


def checked_cluster(paths: Sequence[str], nodes: int = 3, ip_family: str = "ipv4") -> Cluster:
    """The manifests read and checked, their pods given nodes and addresses."""
    docs = read_manifests(paths)
    check_policies(docs)
    cluster = build_cluster(docs)
    try:
        assign_addresses(cluster.pods, node_names(nodes), ip_family)
    except ValueError as e:
        raise ManifestError(str(e)) from None
    return cluster


def compile_checked(paths: Sequence[str], nodes: int = 3, ip_family: str = "ipv4") -> Engine:
    """The manifests compiled as a cluster of ``nodes`` nodes (see reachability.compile_manifests)."""
    return load_cluster(checked_cluster(paths, nodes, ip_family), nodes, ip_family)


def cluster_objects(paths: Sequence[str], nodes: int = 3, ip_family: str = "ipv4") -> list[dict[str, Any]]:
    """The manifests as the objects a brain holds (Namespaces, Pods, Nodes, policies, Services):
    what `suggest -f` and a dry-run judge, as `compile_checked` compiles them."""
    c = checked_cluster(paths, nodes, ip_family)
    node_objects = complete_nodes(c.nodes, node_names(nodes), c.pods, ip_family)
    return [*c.namespaces, *c.pods, *node_objects, *c.policies, *c.cluster_policies, *c.services]


# -- `stockade lint -f` and `stockade explain -f`: the online commands' output, from manifests -----


def add_offline_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("offline (from manifests, no brain: as `stockade reach`)")
    g.add_argument(
        "-f",
        "--filename",
        action="append",
        metavar="PATH",
        help="judge these manifests instead (- for standard input); repeatable",
    )
    g.add_argument("--nodes", type=int, default=3, help="with -f: nodes to spread pods over (default 3)")
    g.add_argument("--ip-family", choices=IP_FAMILIES, default="ipv4", help="with -f: addresses for pods without")


def _compile(args: argparse.Namespace, command: str) -> Engine | int:
    if not 1 <= args.nodes <= 1000:
        print(f"stockade {command}: --nodes: must be from 1 to 1000", file=sys.stderr)
        return 2
    try:
        return compile_checked(args.filename, nodes=args.nodes, ip_family=args.ip_family)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _emit(args: argparse.Namespace, doc: dict[str, Any], text: str) -> None:
    """As the online command writes it (the same kind and fields)."""
    print(jsonout.render(args.output, doc) if jsonout.is_document(args.output) else text)


def run_lint(args: argparse.Namespace) -> int:
    """Exit 1 when a policy is rejected (as online), 2 when a manifest is malformed."""
    engine = _compile(args, "lint")
    if isinstance(engine, int):
        return engine
    rejected = [str(r) for r in engine.rejections()]
    warnings = [str(w) for w in engine.lint()]
    lines = [f"REJECTED  {r}" for r in rejected] + [f"WARNING   {w}" for w in warnings]
    _emit(
        args,
        jsonout.envelope(jsonout.LINT_RESULT, {"warnings": warnings, "rejected": rejected}),
        "\n".join(lines) if lines else "No problems found.",
    )
    return 1 if rejected else 0


def run_explain(args: argparse.Namespace) -> int:
    """Exit 0 allowed, 1 blocked, 2 malformed manifests or arguments, 5 no such pod or address."""
    if not 1 <= args.port <= 65535:
        print("stockade explain: --port: must be between 1 and 65535", file=sys.stderr)
        return 2
    engine = _compile(args, "explain")
    if isinstance(engine, int):
        return engine
    try:
        ex = explain(engine, args.source, args.to, args.port, Protocol(args.protocol.upper()))
    except ExplainError as e:
        print(f"stockade explain: {e}", file=sys.stderr)
        return 5
    _emit(args, jsonout.envelope(jsonout.EXPLANATION, ex.as_json()), ex.text())
    return 0 if ex.allowed else 1


Handler = Callable[[argparse.Namespace], int]


def offline_or(online: Handler, offline: Handler) -> Handler:
    """The handler: ``offline`` when -f names manifests, else ``online`` (against the brain)."""
    return lambda args: offline(args) if getattr(args, "filename", None) else online(args)
