"""`stockade lab ...`: a real multi-node cluster in network namespaces on this machine."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stockade.lab import config, lab, render


def _say(text: str) -> None:
    print(text, flush=True)


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _ports(text: str) -> list[int]:
    try:
        return [int(x) for x in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ports wants numbers separated by commas, not {text!r}") from None


def _protocols(text: str) -> list[str]:
    out = [x.upper() for x in _csv(text)]
    bad = [x for x in out if x not in {"TCP", "UDP", "SCTP"}]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown protocol {bad[0]!r}: use TCP, UDP or SCTP")
    return out


def _cfg(args: argparse.Namespace) -> config.LabConfig:
    return config.from_env(prefix=getattr(args, "prefix", None))


def _up(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    st = lab.up(cfg, args.nodes, args.cluster or [], args.backend, args.redis_url, _say)
    assert st.plan is not None
    print()
    print(render.summary(st.plan))
    for note in st.notes:
        print(f"note: {note}")
    print(f"\nstate in {cfg.state_dir}; try `stockade lab probe`, and `stockade lab down` when done")
    return 0


def _apply(args: argparse.Namespace) -> int:
    return lab.apply(_cfg(args), args.filename, args.wait, _say, args.timeout)


def _delete(args: argparse.Namespace) -> int:
    return lab.delete(_cfg(args), args.filename, args.wait, _say, args.timeout)


def _pods(args: argparse.Namespace) -> int:
    data = lab.pods_json(_cfg(args))
    if args.output == "json":
        print(json.dumps(data, indent=2))
        return 0
    w = max([len(f"{p['namespace']}/{p['name']}") for p in data["pods"]] + [8]) + 2
    print("POD".ljust(w) + "IP            NODE      LABELS")
    for p in data["pods"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(p["labels"].items()))
        print(f"{p['namespace'] + '/' + p['name']:<{w}}{p['ip']:<14}{p['node']:<10}{labels}")
    print(f"{'external':<{w}}{data['external']['ip']:<14}(outside the cluster)")
    return 0


def _probe(args: argparse.Namespace) -> int:
    protocols = args.protocols
    for proto in lab.probe.unsupported_protocols(protocols or []):
        print(f"warning: {proto} sockets are not available in this kernel; {proto} probes skipped",
              file=sys.stderr)
        protocols = [p for p in protocols if p != proto]
    results = lab.run_probe(_cfg(args), args.ports, protocols, args.sources, args.targets, args.timeout)
    if args.output == "json":
        doc: dict[str, Any] = {"results": [r.to_json() for r in results]}
        print(json.dumps(doc, indent=1))
    else:
        print(render.matrix(results))
    return 0


def _down(args: argparse.Namespace) -> int:
    return lab.down(_cfg(args), _say)


def _guard(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            code: int = fn(args)
            return code
        except (lab.LabError, lab.manifests.ManifestError, lab.topology_error()) as e:  # type: ignore[misc]
            print(f"error: {e}", file=sys.stderr)
            return 1
        except (lab.netio.NetError, lab.procs.ProcessError, lab.kubeapi.ApiError) as e:
            print(f"error: {e}\n(the lab may be half-built: `stockade lab down` removes whatever is left)",
                  file=sys.stderr)
            return 1

    return run


def register(sub: Any) -> None:
    p = sub.add_parser("lab", help="a real multi-node cluster in network namespaces (root)",
                       description=__doc__)
    labsub = p.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)

    up = labsub.add_parser("up", help="build the lab: nodes, pods, external host, API, brain, agents")
    up.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    up.add_argument("--cluster", action="append", metavar="FILE",
                    help="manifests (Namespace, Pod, Deployment, NetworkPolicy) to start with; repeatable")
    up.add_argument("--backend", choices=["nftables", "iptables"], default="nftables")
    up.add_argument("--redis-url", help="use this Redis instead of starting a private redis-server")
    up.add_argument("--prefix", help="name prefix of the lab's namespaces (default stockade-)")
    up.set_defaults(handler=_guard(_up))

    for name, fn, what in (("apply", _apply, "create or replace objects in the lab"),
                           ("delete", _delete, "remove objects from the lab")):
        a = labsub.add_parser(name, help=what)
        a.add_argument("-f", "--filename", action="append", required=True, metavar="PATH",
                       help="a manifest file or a folder of them; repeatable")
        a.add_argument("--wait", action="store_true", help="return once every node's agent applied it")
        a.add_argument("--timeout", type=float, default=30.0, help="for --wait, in seconds (default 30)")
        a.set_defaults(handler=_guard(fn))

    pr = labsub.add_parser("probe", help="try every pod-to-pod connection and print the matrix")
    pr.add_argument("--ports", type=_ports, help="ports to try (default: each destination's declared ports)")
    pr.add_argument("--protocols", type=_protocols,
                    help="TCP,UDP,SCTP (default: the declared ones; TCP with --ports)")
    pr.add_argument("--from", dest="sources", type=_csv, metavar="SRC,...",
                    help="sources: ns/pod, a namespace, or external (default: every pod and external)")
    pr.add_argument("--to", dest="targets", type=_csv, metavar="DST,...", help="destinations: ns/pod or a namespace")
    pr.add_argument("--timeout", type=float, default=1.0, help="seconds per connection (default 1)")
    pr.add_argument("-o", "--output", choices=["table", "json"], default="table")
    pr.set_defaults(handler=_guard(_probe))

    pods = labsub.add_parser("pods", help="list the lab's pods and the external host")
    pods.add_argument("-o", "--output", choices=["table", "json"], default="table")
    pods.set_defaults(handler=_guard(_pods))

    down = labsub.add_parser("down", help="remove every namespace, process and file the lab made")
    down.add_argument("--prefix", help="name prefix of the lab's namespaces (default stockade-)")
    down.set_defaults(handler=_guard(_down))
