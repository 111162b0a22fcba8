"""`stockade lab ...`: a real multi-node cluster in network namespaces on this machine."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# The lab's modules are imported when a lab command runs, not when `stockade` builds its parser.


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


def _cfg(args: argparse.Namespace) -> Any:
    from stockade.lab import config

    return config.from_env(prefix=getattr(args, "prefix", None))


def _up(args: argparse.Namespace) -> int:
    from stockade.lab import lab, render

    cfg = _cfg(args)
    st = lab.up(
        cfg,
        args.nodes,
        args.cluster or [],
        args.backend,
        args.redis_url,
        _say,
        ip_family=args.ip_family,
        topology=args.topology,
        n_brains=args.brains,
    )
    assert st.plan is not None
    print()
    print(render.summary(st.plan))
    for note in st.notes:
        print(f"note: {note}")
    print(f"\nstate in {cfg.state_dir}; try `stockade lab probe`, and `stockade lab down` when done")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from stockade.lab import lab

    return lab.apply(_cfg(args), args.filename, args.wait, _say, args.timeout)


def _delete(args: argparse.Namespace) -> int:
    from stockade.lab import lab

    return lab.delete(_cfg(args), args.filename, args.wait, _say, args.timeout)


def _ips_text(entry: dict[str, Any]) -> str:
    """A pod's addresses, marked when they are its node's (a host-network pod)."""
    return ",".join(entry["ips"]) + (" (hostNetwork)" if entry.get("hostNetwork") else "")


def _pods(args: argparse.Namespace) -> int:
    from stockade.lab import lab

    data = lab.pods_json(_cfg(args))
    if args.output == "json":
        print(json.dumps(data, indent=2))
        return 0
    w = max([len(f"{p['namespace']}/{p['name']}") for p in data["pods"]] + [8]) + 2
    iw = max([len(_ips_text(p)) for p in [*data["pods"], data["external"]]] + [12]) + 2
    print("POD".ljust(w) + "IP".ljust(iw) + "NODE      LABELS")
    for p in data["pods"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(p["labels"].items()))
        print(f"{p['namespace'] + '/' + p['name']:<{w}}{_ips_text(p):<{iw}}{p['node']:<10}{labels}")
    print(f"{'external':<{w}}{','.join(data['external']['ips']):<{iw}}(outside the cluster)")
    return 0


def _status(args: argparse.Namespace) -> int:
    from stockade.lab import lab, render
    from stockade.lab.brains import render as brain_table

    cfg = _cfg(args)
    st = lab.current(cfg)
    assert st.plan is not None
    brains = lab.brains_status(cfg)
    processes = lab.processes_status(cfg)
    if args.output == "json":
        doc = {
            "status": st.status,
            "backend": st.backend,
            "ipFamilies": list(st.plan.families),
            "topology": st.plan.topology,
            "nodes": len(st.plan.nodes),
            "pods": len(st.plan.pods),
            "brains": brains,
            "processes": processes,
            "notes": st.notes,
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"lab {st.status}, backend {st.backend}")
    print(render.summary(st.plan))
    if brains:
        print(brain_table(brains))
    print(render.processes(processes))
    for note in st.notes:
        print(f"note: {note}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from stockade.lab import lab, render

    run = lab.run_service_probe if args.via_service else lab.run_probe
    results: list[Any] = run(
        _cfg(args),
        args.ports,
        args.protocols,
        args.sources,
        args.targets,
        args.timeout,
        say=lambda text: print(text, file=sys.stderr),
        families=[args.family] if args.family else None,
    )
    if args.output == "json":
        doc: dict[str, Any] = {"results": [r.to_json() for r in results]}
        print(json.dumps(doc, indent=1))
    else:
        print(render.matrix(results))
    return 0


def _down(args: argparse.Namespace) -> int:
    from stockade.lab import lab

    return lab.down(_cfg(args), _say)


def _brain_stop(args: argparse.Namespace) -> int:
    from stockade.lab import lab

    return lab.brain_stop(_cfg(args), args.index, args.signal, _say)


def _brain_start(args: argparse.Namespace) -> int:
    from stockade.lab import lab

    return lab.brain_start(_cfg(args), args.index, _say, args.timeout)


def _brain_list(args: argparse.Namespace) -> int:
    from stockade.lab import brains, lab

    rows = lab.brains_status(_cfg(args))
    print(json.dumps(rows, indent=2) if args.output == "json" else brains.render(rows))
    return 0


def _brains(text: str) -> int:
    from stockade.lab.brains import check_count

    try:
        n = int(text)
        check_count(n)
    except ValueError as e:
        why = str(e) if "--brains" in str(e) else f"--brains wants a number, not {text!r}"
        raise argparse.ArgumentTypeError(why) from None
    return n


def _demo(args: argparse.Namespace) -> int:
    from stockade.lab import demo

    return demo.run(_cfg(args), args.keep, _say)


def _guard(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from stockade.lab import kubeapi, lab, manifests, netio, procs, topology

        try:
            code: int = fn(args)
            return code
        except (lab.LabError, manifests.ManifestError, topology.PlanError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except (netio.NetError, procs.ProcessError, kubeapi.ApiError, OSError) as e:
            print(
                f"error: {e}\n(the lab may be half-built: `stockade lab down` removes whatever is left)",
                file=sys.stderr,
            )
            return 1
        except KeyboardInterrupt:
            print(
                "\ninterrupted (the lab may be half-built: `stockade lab down` removes whatever is left)",
                file=sys.stderr,
            )
            return 130

    return run


def register(sub: Any) -> None:
    p = sub.add_parser(
        "lab",
        help="a real multi-node cluster in network namespaces (root)",
        description="A real multi-node cluster made of network namespaces on this machine "
        "(needs root). Start with `stockade lab demo`, or `stockade lab up --cluster FILE`, "
        "then `stockade lab probe`; `stockade lab down` removes it.",
    )
    labsub = p.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)

    up = labsub.add_parser("up", help="build the lab: nodes, pods, external host, API, brain, agents")
    up.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    up.add_argument(
        "--cluster",
        action="append",
        metavar="FILE",
        help="manifests (Namespace, Pod, Deployment, Service, NetworkPolicy) to start with; repeatable. "
        "A pod with hostNetwork: true runs in its node's namespace, at its node's addresses",
    )
    up.add_argument("--backend", choices=["nftables", "iptables"], default="nftables")
    up.add_argument(
        "--ip-family",
        choices=["ipv4", "ipv6", "dual"],
        default="ipv4",
        help="pod, node and external addresses: IPv4 only (default), IPv6 only, or both "
        "(dual-stack: every pod gets 10.244.N.H and fd00:10:244:N::H)",
    )
    up.add_argument(
        "--topology",
        choices=["routed", "bridge"],
        default="routed",
        help="routed (default): each pod on its own veth, routed by its node; bridge: each node's "
        "pods on one Linux bridge, as flannel, weave and the bridge CNI plugin do (same-node "
        "traffic is bridged: the node's rules see it only through br_netfilter)",
    )
    up.add_argument(
        "--brains",
        type=_brains,
        default=2,
        metavar="N",
        help="how many brains (1 to 5, default 2 as deployed): each agent is served by one and moves to "
        "another when it goes away; they elect a leader (the one that writes to the API) by a Lease",
    )
    up.add_argument("--redis-url", help="use this Redis instead of starting a private redis-server")
    up.add_argument("--prefix", help="name prefix of the lab's namespaces (default stockade-)")
    up.set_defaults(handler=_guard(_up))

    for name, fn, what in (
        ("apply", _apply, "create or replace objects in the lab"),
        ("delete", _delete, "remove objects from the lab"),
    ):
        a = labsub.add_parser(name, help=what)
        a.add_argument(
            "-f",
            "--filename",
            action="append",
            required=True,
            metavar="PATH",
            help="a manifest file or a folder of them; repeatable",
        )
        a.add_argument("--wait", action="store_true", help="return once every node's agent applied it")
        a.add_argument("--timeout", type=float, default=30.0, help="for --wait, in seconds (default 30)")
        a.set_defaults(handler=_guard(fn))

    pr = labsub.add_parser("probe", help="try every pod-to-pod connection and print the matrix")
    pr.add_argument("--ports", type=_ports, help="ports to try (default: each destination's declared ports)")
    pr.add_argument("--protocols", type=_protocols, help="TCP,UDP,SCTP (default: the declared ones; TCP with --ports)")
    pr.add_argument(
        "--from",
        dest="sources",
        type=_csv,
        metavar="SRC,...",
        help="sources: ns/pod, a namespace, or external (default: every pod and external)",
    )
    pr.add_argument(
        "--to",
        dest="targets",
        type=_csv,
        metavar="DST,...",
        help="destinations: ns/pod or a namespace (a host-network pod is dialled at its node's addresses)",
    )
    pr.add_argument(
        "--family",
        choices=["ipv4", "ipv6"],
        help="probe the pods' addresses of this IP family only (default: every family of the lab, "
        "so a dual-stack lab is probed over both; results name the family)",
    )
    pr.add_argument(
        "--via-service",
        action="store_true",
        help="probe through the Services instead of pod IPs: each ClusterIP:port from the pods, each "
        "NodePort on every node from the external host (--ports matches the Service port or the nodePort; "
        "--to a Service ns/name or a namespace); the JSON says through which Service",
    )
    pr.add_argument("--timeout", type=float, default=1.0, help="seconds per connection (default 1)")
    pr.add_argument("-o", "--output", choices=["table", "json"], default="table")
    pr.set_defaults(handler=_guard(_probe))

    pods = labsub.add_parser(
        "pods", help="list the lab's pods (host-network ones at their node's addresses) and the external host"
    )
    pods.add_argument("-o", "--output", choices=["table", "json"], default="table")
    pods.set_defaults(handler=_guard(_pods))

    status = labsub.add_parser("status", help="the lab's state, IP families, topology, nodes and pods")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    status.set_defaults(handler=_guard(_status))

    br = labsub.add_parser(
        "brain",
        help="fault drills: stop, kill, freeze or start one of the lab's brains",
        description="Stop one brain and watch its agents move to another (`stockade lab status` shows "
        "which brain serves which node and which leads); start it again and it rejoins.",
    )
    brsub = br.add_subparsers(dest="brain_command", metavar="BRAIN_COMMAND", required=True)
    stop = brsub.add_parser("stop", help="signal one brain: TERM (default), KILL or STOP (freeze)")
    stop.add_argument("index", type=int, metavar="N", help="which brain (1 is the first)")
    stop.add_argument(
        "--signal",
        choices=["TERM", "KILL", "STOP"],
        default="TERM",
        help="TERM: it closes its agents' streams first, so they move at once; KILL: they see the "
        "connection reset; STOP: frozen with its sockets open, only keepalives tell (default TERM)",
    )
    stop.set_defaults(handler=_guard(_brain_stop))
    start = brsub.add_parser("start", help="start a stopped or killed brain again (SIGCONT for a frozen one)")
    start.add_argument("index", type=int, metavar="N", help="which brain (1 is the first)")
    start.add_argument("--timeout", type=float, default=30.0, help="seconds to wait until it is ready (default 30)")
    start.set_defaults(handler=_guard(_brain_start))
    blist = brsub.add_parser("list", help="every brain: ports, running or not, leader or not, nodes served")
    blist.add_argument("-o", "--output", choices=["table", "json"], default="table")
    blist.set_defaults(handler=_guard(_brain_list))

    demo = labsub.add_parser(
        "demo",
        help="the Sock Shop, secured step by step, on a 3-node lab",
        description="The Sock Shop on a 3-node lab, secured as the seed article does (NetworkPolicy), then "
        "with the administrator's ClusterNetworkPolicy tiers (Admin, Baseline); each step prints the kubectl "
        "command that does it in a cluster.",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="leave the lab up afterwards, with a kubeconfig for kubectl (printed as `export KUBECONFIG=...`)",
    )
    demo.set_defaults(handler=_guard(_demo))

    down = labsub.add_parser("down", help="remove every namespace, process and file the lab made")
    down.add_argument("--prefix", help="name prefix of the lab's namespaces (default stockade-)")
    down.set_defaults(handler=_guard(_down))


def main(argv: list[str] | None = None) -> int:
    """``python -m stockade.cli.commands.lab ...`` = ``stockade lab ...``, loading no other command
    (the lab's tests and benchmarks use it, so another command's import error cannot break them)."""
    import logging

    parser = argparse.ArgumentParser(prog="stockade")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
