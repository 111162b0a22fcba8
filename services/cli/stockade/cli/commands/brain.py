"""`stockade brain`: the central controller."""

from __future__ import annotations

import argparse
import asyncio
import os

from stockade.brain.admin.auth import TokensFileError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "brain",
        help="run the brain: watch the API, compile policies, stream per-node rules to agents",
        description="Watch Namespaces, Pods, NetworkPolicies and Nodes, compile every node's rules, and "
        "stream each agent only its own node's deltas over mutual TLS. Serves the admin API and "
        "/healthz, /readyz, /metrics over HTTP.",
    )
    p.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="kubeconfig file (default: $KUBECONFIG, else in-cluster)",
    )
    p.add_argument(
        "--listen",
        default=os.environ.get("STOCKADE_BRAIN_LISTEN", "0.0.0.0:7443"),
        help="gRPC address for agents: sync and drop reports, mTLS (default 0.0.0.0:7443)",
    )
    p.add_argument(
        "--admin-listen", default="0.0.0.0:7444", help="gRPC address of the admin API (default 0.0.0.0:7444)"
    )
    p.add_argument(
        "--http", default="0.0.0.0:9090", help="HTTP address for /healthz /readyz /metrics (default 0.0.0.0:9090)"
    )
    p.add_argument("--tls-cert", help="the brain's certificate (PEM)")
    p.add_argument("--tls-key", help="the brain's key (PEM)")
    p.add_argument("--tls-ca", help="CA that signs agents' client certificates (PEM)")
    p.add_argument("--tls-dir", help="a folder from `stockade certs init` (brain.crt, brain.key, ca.crt)")
    p.add_argument("--insecure", action="store_true", help="plain-text gRPC, node names trusted: tests only")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("STOCKADE_REDIS_URL"),
        help="Redis for blocked-connection records: redis://, rediss://, redis+sentinel://, "
        "redis+cluster:// (default: $STOCKADE_REDIS_URL; none: drops are only counted in metrics)",
    )
    p.add_argument("--admin-tokens-file", help="YAML/JSON {tokens: [{name, token, role: read|admin}]}")
    p.add_argument("--history", type=int, default=256, help="deltas kept per node before a snapshot is sent instead")
    p.add_argument(
        "--no-beta-default-deny",
        action="store_true",
        help="ignore the net.beta.kubernetes.io/network-policy DefaultDeny namespace annotation",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stockade.brain.main import Brain, BrainConfig

    cert, key, ca = args.tls_cert, args.tls_key, args.tls_ca
    if args.tls_dir:
        cert = cert or os.path.join(args.tls_dir, "brain.crt")
        key = key or os.path.join(args.tls_dir, "brain.key")
        ca = ca or os.path.join(args.tls_dir, "ca.crt")
    for flag, path in (
        ("--tls-cert", cert),
        ("--tls-key", key),
        ("--tls-ca", ca),
        ("--admin-tokens-file", args.admin_tokens_file),
    ):
        if path and not os.path.exists(path):
            print(f"stockade brain: {flag}: {path} does not exist")
            return 2
    cfg = BrainConfig(
        kubeconfig=args.kubeconfig,
        listen=args.listen,
        admin_listen=args.admin_listen,
        http=args.http,
        tls_cert=cert,
        tls_key=key,
        tls_ca=ca,
        insecure=args.insecure,
        redis_url=args.redis_url,
        admin_tokens_file=args.admin_tokens_file,
        history=args.history,
        beta_default_deny=not args.no_beta_default_deny,
    )
    try:
        asyncio.run(Brain(cfg).run_forever())
    except TokensFileError as e:
        print(f"stockade brain: {e}")
        return 2
    return 0
