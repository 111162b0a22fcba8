"""`stockade agent`: the node agent. Enforces the brain's rules for one node in the kernel.

Run it in the node's network namespace (on a host: the host's; in the lab: ``ip netns exec``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stockade.cli import logformat
from stockade.tls.reload import ClientTLSFiles, ClientTLSSource, TLSFileError

if TYPE_CHECKING:
    from stockade.agent.main import AgentConfig

_BACKENDS = ("nftables", "iptables", "auto")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agent",
        help="run the node agent: apply the brain's rules for this node to the kernel",
        description="Connects to the brain over mTLS, applies this node's rules with nftables or "
        "iptables + ipset, verifies and repairs them, reports blocked connections, and serves "
        "/healthz, /readyz and /metrics. Stopping it leaves the rules in force (fail static). "
        "It is ready only while every pod packet reaches the rules: pods on a Linux bridge need "
        "br_netfilter and net.bridge.bridge-nf-call-iptables/-ip6tables=1 (the agent sets them "
        "unless --no-fix-sysctls), and a node with IPv6 needs a dataplane that filters it; "
        "/readyz, the metrics and `stockade nodes` say what is missing.",
    )
    p.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME"),
        help="this node's name, as its certificate names it (default: $NODE_NAME)",
    )
    p.add_argument(
        "--brain",
        type=_brains,
        default=os.environ.get("STOCKADE_BRAIN"),
        metavar="HOST:PORT[,HOST:PORT...]",
        help="the brains' sync addresses; a name resolving to several addresses (a headless Service) "
        "names every brain. One serves the node at a time; when it goes away the agent moves to the next "
        "at once (default: $STOCKADE_BRAIN)",
    )
    p.add_argument(
        "--backend", choices=_BACKENDS, default="auto", help="dataplane (auto: nftables when the kernel has it)"
    )
    p.add_argument("--nflog-group", type=_group, default=100, metavar="N", help="NFLOG group for blocked connections")
    tls = p.add_argument_group("mTLS (required unless --insecure)")
    tls.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="this node's client certificate (renewed files are picked up without a restart: the agent reconnects)",
    )
    tls.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key")
    tls.add_argument("--tls-ca", type=Path, metavar="FILE", help="the CA that signed the brain's certificate")
    tls.add_argument(
        "--tls-dir",
        type=Path,
        metavar="DIR",
        help="a `stockade certs init` directory: ca.crt and nodes/<node>.crt/.key (or <node>.crt/.key)",
    )
    tls.add_argument("--server-name", metavar="NAME", help="the name to expect in the brain's certificate")
    tls.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="this pod's projected ServiceAccount token (the brain's --agent-auth token|both), read again at "
        "every connect as the kubelet rotates it; with it only --tls-ca is needed (a client certificate is optional)",
    )
    p.add_argument("--http", default="0.0.0.0:9091", metavar="HOST:PORT", help="health and metrics address")
    p.add_argument("--verify-interval", type=_seconds, default=30.0, metavar="SECONDS", help="drift check period")
    p.add_argument(
        "--counters-interval", type=_seconds, default=5.0, metavar="SECONDS", help="kernel deny-counter read period"
    )
    p.add_argument(
        "--no-fix-sysctls",
        dest="fix_sysctls",
        action="store_false",
        help="never change the node's settings (load br_netfilter, set net.bridge.bridge-nf-call-*); "
        "report what is missing and stay not ready instead",
    )
    p.add_argument(
        "--preflight-interval",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how often to re-check what the node needs (also checked on every snapshot)",
    )
    p.add_argument(
        "--keepalive-time",
        type=_seconds,
        default=0.5,
        metavar="SECONDS",
        help="ping the brain this often on the sync stream, to notice a brain that froze or whose host vanished",
    )
    p.add_argument(
        "--keepalive-timeout",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="a ping unanswered this long ends the stream: the agent moves to the next brain",
    )
    p.add_argument("--insecure", action="store_true", help="plain-text gRPC without certificates (tests only)")
    logformat.add_flag(p)
    p.set_defaults(handler=_run)


def _group(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError("an NFLOG group is 0..65535")
    return value


def _brains(text: str) -> str:
    from stockade.dial import TargetError, parse_targets

    try:
        parse_targets(text)
    except TargetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


class UsageError(Exception):
    pass


def tls_files(args: argparse.Namespace) -> tuple[Path, Path, Path] | None:
    """(cert, key, ca) from the flags, or None when none was given."""
    given = [args.tls_cert, args.tls_key, args.tls_ca]
    if args.tls_dir is not None:
        if any(given):
            raise UsageError("give either --tls-dir or --tls-cert/--tls-key/--tls-ca, not both")
        d: Path = args.tls_dir
        for stem in (d / "nodes" / args.node, d / args.node):  # `certs init` layout, then a flat one
            cert, key = stem.with_name(stem.name + ".crt"), stem.with_name(stem.name + ".key")
            if cert.exists() or key.exists():
                return cert, key, d / "ca.crt"
        raise UsageError(f"{d} holds no certificate for node {args.node!r} (nodes/{args.node}.crt or {args.node}.crt)")
    if not any(given):
        return None
    if not all(given):
        raise UsageError("--tls-cert, --tls-key and --tls-ca go together")
    return args.tls_cert, args.tls_key, args.tls_ca


def build_config(args: argparse.Namespace) -> AgentConfig:
    # imported here: the agent's dependencies (grpc, aiohttp, netlink) slow every other command
    from stockade.agent.health import parse_address

    if not args.node:
        raise UsageError("no node name: give --node or set NODE_NAME")
    if not args.brain:
        raise UsageError("no brain address: give --brain HOST:PORT or set STOCKADE_BRAIN")
    try:
        parse_address(args.http)
    except ValueError as e:
        raise UsageError(f"--http: {e}") from None
    if args.token_file is not None:
        return _config(args, _token_tls(args))
    files = tls_files(args)
    if files is None and not args.insecure:
        raise UsageError(
            "no TLS credentials: give --tls-cert, --tls-key and --tls-ca (or --tls-dir). "
            "Plain text (--insecure) is for tests only: the brain would not know which node this is"
        )
    tls = None
    if files is not None:
        try:
            # Re-read while running: a renewed certificate or CA is used without a restart.
            tls = ClientTLSFiles.from_files(*files, server_name=args.server_name, node=args.node)
        except OSError as e:
            raise UsageError(f"cannot read TLS file {e.filename}: {e.strerror}") from None
        except TLSFileError as e:
            raise UsageError(str(e)) from None
    return _config(args, tls)


def _token_tls(args: argparse.Namespace) -> ClientTLSSource:
    from stockade.agent.sync.token import TokenFileError, TokenTLSSource

    if args.insecure:
        raise UsageError("--token-file needs TLS (a token is never sent in plain text): drop --insecure")
    certs = None
    try:
        if args.tls_dir is not None or args.tls_cert is not None or args.tls_key is not None:
            files = tls_files(args)
            assert files is not None
            certs = ClientTLSFiles.from_files(*files, server_name=args.server_name, node=args.node)
            ca = files[2]
        elif args.tls_ca is None:
            raise UsageError("--token-file needs --tls-ca: the CA bundle that signed the brain's certificate")
        else:
            ca = args.tls_ca
        return TokenTLSSource(args.token_file, ca, args.server_name, certs)
    except OSError as e:
        raise UsageError(f"cannot read TLS file {e.filename}: {e.strerror}") from None
    except (TLSFileError, TokenFileError, ValueError) as e:
        raise UsageError(str(e)) from None


def _config(args: argparse.Namespace, tls: ClientTLSSource | None) -> AgentConfig:
    from stockade.agent.main import AgentConfig

    return AgentConfig(
        node=args.node,
        brain=args.brain,
        tls=tls,
        insecure=args.insecure,
        backend=args.backend,
        nflog_group=args.nflog_group,
        http=args.http,
        verify_interval=args.verify_interval,
        counters_interval=args.counters_interval,
        fix_sysctls=args.fix_sysctls,
        preflight_interval=args.preflight_interval,
        keepalive_time=args.keepalive_time,
        keepalive_timeout=args.keepalive_timeout,
    )


def _run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
    except UsageError as e:
        print(f"stockade agent: {e}", file=sys.stderr)
        return 2
    logformat.apply(args.log_format)
    # A daemon's progress (connected, applied generation N, drift repaired) is worth seeing by
    # default; -v/-vv still lower the level further.
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        logging.getLogger("stockade").setLevel(logging.INFO)
    from stockade.agent.main import serve

    try:
        return asyncio.run(serve(config))
    except OSError as e:  # e.g. the HTTP port is taken
        print(f"stockade agent: {e}", file=sys.stderr)
        return 1
