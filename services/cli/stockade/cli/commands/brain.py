"""`stockade brain`: the central controller."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

from stockade.brain.admin.auth import TokensFileError
from stockade.cli import logformat


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
        "--admin-listen",
        default="0.0.0.0:7444",
        help="gRPC address of the admin API, TLS with bearer tokens (default 0.0.0.0:7444)",
    )
    p.add_argument(
        "--admin-mtls-listen",
        default="0.0.0.0:7445",
        help="gRPC address of the admin API for operator client certificates, mutual TLS; tokens work "
        "there too (default 0.0.0.0:7445; '' turns it off)",
    )
    p.add_argument(
        "--http",
        default="127.0.0.1:9090",
        help="HTTP address for /healthz /readyz /metrics and /v1/realized (which needs an admin token); "
        "default 127.0.0.1:9090: give the address the kubelet's probes and the scraper reach",
    )
    # The files are re-read when they change (cert-manager renewals): no restart needed.
    p.add_argument("--tls-cert", help="the brain's certificate (PEM; a renewed file is used without a restart)")
    p.add_argument("--tls-key", help="the brain's key (PEM)")
    p.add_argument("--tls-ca", help="CA that signs agents' client certificates (PEM)")
    p.add_argument("--tls-dir", help="a folder from `stockade certs init` (brain.crt, brain.key, ca.crt)")
    p.add_argument("--insecure", action="store_true", help="plain-text gRPC, node names trusted: tests only")
    p.add_argument(
        "--agent-auth",
        choices=("cert", "token", "both"),
        default="cert",
        help="how agents prove their node: cert (client certificate with stockade://node/<node>), token "
        "(projected ServiceAccount token, verified with TokenReview; no client certificate), both "
        "(a certificate and a token naming the same node); default cert",
    )
    p.add_argument(
        "--agent-audience",
        default="stockade",
        help="the audience agents' tokens must be for (the projected volume's audience); default stockade",
    )
    p.add_argument(
        "--agent-service-account",
        action="append",
        metavar="NAMESPACE:NAME",
        help="a service account whose tokens may prove a node (repeatable; default stockade-system:stockade-agent)",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("STOCKADE_REDIS_URL"),
        help="Redis for blocked-connection records: redis://, rediss://, redis+sentinel://, "
        "redis+cluster:// (default: $STOCKADE_REDIS_URL; none: drops are only counted in metrics)",
    )
    p.add_argument("--admin-tokens-file", help="YAML/JSON {tokens: [{name, token, role: read|admin}]}")
    p.add_argument(
        "--no-admin-kube-auth",
        dest="admin_kube_auth",
        action="store_false",
        help="admin API: refuse Kubernetes tokens (by default a token not in --admin-tokens-file is checked by "
        "TokenReview and each call authorized by RBAC: get/update on brains.stockade.io)",
    )
    p.add_argument("--history", type=int, default=256, help="deltas kept per node before a snapshot is sent instead")
    p.add_argument(
        "--no-beta-default-deny",
        action="store_true",
        help="ignore the net.beta.kubernetes.io/network-policy DefaultDeny namespace annotation",
    )
    _election_flags(p)
    logformat.add_flag(p)
    p.set_defaults(handler=run)


def _election_flags(p: argparse.ArgumentParser) -> None:
    # Every brain serves agents; the leader alone writes to the API (Events): stockade.brain.leader.
    p.add_argument(
        "--no-leader-election",
        action="store_true",
        help="do not elect a leader: this brain writes Events as if it were the only one (one replica only)",
    )
    p.add_argument(
        "--leader-namespace",
        default=os.environ.get("POD_NAMESPACE") or "stockade-system",
        help="namespace of the Lease stockade-brain (default: $POD_NAMESPACE, else stockade-system)",
    )
    p.add_argument(
        "--leader-identity",
        default=os.environ.get("POD_NAME") or socket.gethostname(),
        help="this brain's name in the Lease (default: $POD_NAME, else the hostname: the pod's name)",
    )
    for flag, default, what in (
        ("--lease-duration", 15.0, "how long a Lease not renewed keeps others from taking over"),
        ("--lease-renew-deadline", 10.0, "how long the leader keeps writing without a successful renewal"),
        ("--lease-retry", 2.0, "how often the Lease is tried and renewed"),
    ):
        p.add_argument(flag, type=float, default=default, metavar="SECONDS", help=f"{what} (default {default:g} s)")


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
    for sa in args.agent_service_account or ():
        if sa.count(":") != 1 or not all(sa.split(":")):
            print(
                f"stockade brain: --agent-service-account {sa!r}: "
                "give NAMESPACE:NAME, e.g. stockade-system:stockade-agent"
            )
            return 2
    from stockade.brain.drops.quota import QuotaConfig

    try:
        drops_quota = QuotaConfig.from_env(os.environ)
    except ValueError as e:
        print(f"stockade brain: {e}")
        return 2
    logformat.apply(args.log_format)
    from stockade.brain.leader import ElectionConfig

    election = None
    if not args.no_leader_election:
        election = ElectionConfig(
            namespace=args.leader_namespace,
            identity=args.leader_identity,
            lease_duration=args.lease_duration,
            renew_deadline=args.lease_renew_deadline,
            retry=args.lease_retry,
        )
        try:
            election.check()
        except ValueError as e:
            print(f"stockade brain: {e}")
            return 2
    cfg = BrainConfig(
        election=election,
        drops_quota=drops_quota,
        kubeconfig=args.kubeconfig,
        listen=args.listen,
        admin_listen=args.admin_listen,
        admin_mtls_listen=args.admin_mtls_listen or None,
        http=args.http,
        tls_cert=cert,
        tls_key=key,
        tls_ca=ca,
        insecure=args.insecure,
        redis_url=args.redis_url,
        admin_tokens_file=args.admin_tokens_file,
        admin_kube_auth=args.admin_kube_auth,
        history=args.history,
        beta_default_deny=not args.no_beta_default_deny,
        agent_auth=args.agent_auth,
        agent_audience=args.agent_audience,
        agent_service_accounts=tuple(args.agent_service_account or ("stockade-system:stockade-agent",)),
    )
    try:
        asyncio.run(Brain(cfg).run_forever())
    except TokensFileError as e:
        print(f"stockade brain: {e}")
        return 2
    return 0
