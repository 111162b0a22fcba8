"""python -m stockade.lab.apiserver --port N [--data FILE.yaml ...] [--kubeconfig PATH]
[--service-cluster-ip-range CIDR[,CIDR]] [--service-node-port-range FIRST-LAST]
[--enable-fault-injection] [--without-crds]

Fault injection (for tests only) is off unless asked for with the flag or with
STOCKADE_APISERVER_FAULT_INJECTION=1 in the environment (how a test reaches the API server of a lab
it starts): it lets anyone who can reach the server store objects that no validation has seen."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from .kinds import DEFAULT_NODE_PORTS, DEFAULT_SERVICE_CIDRS
from .server import ApiServer
from .store import ApiError

FAULT_INJECTION_ENV = "STOCKADE_APISERVER_FAULT_INJECTION"

# Namespaces and CRDs first, so the objects inside them (or served by them) can be created.
_ORDER = {"Namespace": 0, "CustomResourceDefinition": 0, "Node": 1}


def load_manifests(paths: list[str]) -> list[dict[str, Any]]:
    """Every object in the YAML files (multi-document, `kind: List` unrolled), namespaces first."""
    objs: list[dict[str, Any]] = []
    for p in paths:
        for doc in yaml.safe_load_all(Path(p).read_text()):
            if not doc:
                continue
            objs.extend((doc.get("items") or []) if doc.get("kind", "").endswith("List") else [doc])
    return sorted(objs, key=lambda o: _ORDER.get(o.get("kind", ""), 2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m stockade.lab.apiserver", description="A small Kubernetes API server for tests and the lab."
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    ap.add_argument(
        "--data", action="append", default=[], metavar="FILE.yaml", help="objects to load at start (repeatable)"
    )
    ap.add_argument("--token", help="require this bearer token")
    ap.add_argument("--tls", action="store_true", help="serve HTTPS with a self-signed certificate")
    ap.add_argument("--tls-cert", help="serving certificate (PEM); implies --tls")
    ap.add_argument("--tls-key", help="its private key (PEM)")
    ap.add_argument("--kubeconfig", help="write a kubeconfig for this server here")
    ap.add_argument("--bookmark-interval", type=float, default=10.0)
    ap.add_argument("--history", type=int, default=10_000, help="watch events kept (older: 410)")
    ap.add_argument(
        "--initial-resource-version",
        type=int,
        default=1,
        help="start the resourceVersion counter here: a restarted server continues past the old one's, "
        "as etcd's revision outlives a kube-apiserver restart (older watches get 410 and relist)",
    )
    ap.add_argument(
        "--service-cluster-ip-range",
        default=",".join(DEFAULT_SERVICE_CIDRS),
        metavar="CIDR[,CIDR]",
        help="where Services' cluster IPs come from, as kube-apiserver's flag: one range, or one per family "
        "for dual-stack, the first being the default family (default %(default)s)",
    )
    ap.add_argument(
        "--service-node-port-range",
        default=DEFAULT_NODE_PORTS,
        metavar="FIRST-LAST",
        help="where NodePort and LoadBalancer Services' node ports come from (default %(default)s)",
    )
    ap.add_argument(
        "--without-crds",
        action="store_true",
        help="start without the CRDs of the custom resources the lab serves (ClusterNetworkPolicy): each is "
        "served once its CRD is created (kubectl apply -f deploy/crds/)",
    )
    ap.add_argument(
        "--enable-fault-injection",
        action="store_true",
        default=os.environ.get(FAULT_INJECTION_ENV) == "1",
        help="FOR TESTS ONLY: serve POST /fault-injection/v1/raw-objects, which stores an object verbatim, "
        f"past every validation (also on with {FAULT_INJECTION_ENV}=1)",
    )
    return ap.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    try:
        server = ApiServer(
            token=args.token,
            tls=args.tls,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            history_size=args.history,
            bookmark_interval=args.bookmark_interval,
            service_cidrs=args.service_cluster_ip_range.split(","),
            node_port_range=args.service_node_port_range,
            fault_injection=args.enable_fault_injection,
            crds=not args.without_crds,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    server.store.rv = server.store.floor = args.initial_resource_version
    try:
        for obj in load_manifests(args.data):
            server.put_object(obj)
    except (ApiError, KeyError, OSError, yaml.YAMLError) as e:
        print(f"error: cannot load --data: {e}", file=sys.stderr)
        return 2
    await server.start(args.host, args.port)
    if args.kubeconfig:
        server.kubeconfig(args.kubeconfig)
    print(f"serving the Kubernetes API on {server.url}", flush=True)
    if server.fault_injection:
        print("FAULT INJECTION ENABLED: objects posted to /fault-injection/v1/raw-objects skip validation", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
