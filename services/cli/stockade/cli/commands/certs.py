"""`stockade certs init`: a CA, the brain's server certificate and one client certificate per
node, for development and the lab (operators bring their own, e.g. from cert-manager)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stockade.codec import ValidationError
from stockade.tls import write_bundle


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("certs", help="create mTLS certificates for the brain and node agents")
    sub = parser.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    init = sub.add_parser(
        "init",
        help="create (or extend) a CA, the brain certificate and node certificates",
        description="Writes DIR/ca.crt, DIR/ca.key, DIR/brain.crt, DIR/brain.key and "
        "DIR/nodes/<node>.crt/.key. An existing CA in DIR is reused, so nodes can be added later.",
    )
    init.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory to write to")
    init.add_argument("--nodes", required=True, type=_names, metavar="N1,N2,...", help="node names")
    init.add_argument(
        "--brain-names",
        type=_names,
        default=["localhost", "127.0.0.1"],
        metavar="NAME,...",
        help="DNS names / IP addresses the brain is reached by (default: localhost,127.0.0.1)",
    )
    init.set_defaults(handler=_init)


def _init(args: argparse.Namespace) -> int:
    try:
        written = write_bundle(args.out, args.nodes, args.brain_names)
    except (ValidationError, ValueError) as e:
        print(f"stockade certs init: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"stockade certs init: cannot write to {args.out}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {args.out}: CA, brain certificate, {len(args.nodes)} node certificates")
    return 0
