"""`stockade certs init`: a CA, the brain's server certificate and one client certificate per
node; `stockade certs operator`: an operator's client certificate for the admin API. For
development and the lab (operators bring their own, e.g. from cert-manager). Node and operator
certificates say which they are with a URI SAN, so neither is accepted as the other."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stockade.codec import ValidationError
from stockade.tls import write_bundle
from stockade.tls.certs import write_operator
from stockade.tls.identity import OPERATOR_ROLES


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
    op = sub.add_parser(
        "operator",
        help="create an operator's client certificate for the admin API (mTLS port)",
        description="Writes DIR/operators/<name>.crt/.key, signed by the CA in DIR, with the URI SAN "
        "stockade://operator/<role>. The sync port refuses it; the admin mTLS port accepts it.",
    )
    op.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory holding ca.crt and ca.key")
    op.add_argument("--name", required=True, help="who the operator is (the certificate's common name)")
    op.add_argument("--role", choices=OPERATOR_ROLES, default="read", help="read (queries) or admin (default read)")
    op.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    op.set_defaults(handler=_operator)


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


def _operator(args: argparse.Namespace) -> int:
    try:
        written = write_operator(args.out, args.name, args.role, args.days)
    except ValueError as e:
        print(f"stockade certs operator: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"stockade certs operator: cannot write to {args.out}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {written[0]} and {written[1]}: operator {args.name}, role {args.role}")
    return 0
