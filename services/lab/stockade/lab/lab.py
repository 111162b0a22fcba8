"""The lab's commands: up, apply, delete, pods, probe, down. This module sequences the steps;
the pieces live in their own modules (plan, wiring, daemons, state, control plane)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockade.lab import (
    agentids,
    brains,
    control,
    kubeapi,
    manifests,
    netcmds,
    netio,
    nsenter,
    probe,
    procs,
    render,
    restarts,
    state,
    supervisor,
)
from stockade.lab.config import LabConfig
from stockade.lab.kubeproxy import launch as kube_proxy
from stockade.lab.kubeproxy import status as kube_proxy_status
from stockade.lab.kubeproxy import targets as service_targets
from stockade.lab.objects import namespace_object, pod_request, running_pod
from stockade.lab.state import LabState
from stockade.lab.topology import Plan, PodPlan, PodRequest, empty_plan, place, relabel, without

Say = Callable[[str], None]


class LabError(RuntimeError):
    pass


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (it creates network namespaces and firewall rules): "
            "run it with sudo, e.g. `sudo stockade lab up`"
        )


def _lab_namespaces(cfg: LabConfig) -> list[str]:
    return [n for n in nsenter.list_netns() if n.startswith(cfg.prefix)]


def current(cfg: LabConfig) -> LabState:
    try:
        st = state.load(cfg.state_file)
    except (ValueError, TypeError, KeyError) as e:
        raise LabError(
            f"the lab's state file {cfg.state_file} is damaged ({e}); "
            "`stockade lab down` removes what is left of the lab"
        ) from e
    if st is None or st.plan is None:
        raise LabError(f"no lab is running (no state in {cfg.state_dir}); start one with `stockade lab up`")
    return st


# -- up ---------------------------------------------------------------------------------------------


def _elapsed(t0: float) -> str:
    return f"{(time.monotonic() - t0) * 1000:.0f} ms"


def _start(
    cfg: LabConfig, st: LabState, launches: list[tuple[control.Launch, Callable[[], bool]]], timeout: float = 30.0
) -> None:
    """Start the processes at once (they do not depend on each other), then wait for each."""
    started = [(launch, ready, _spawn(cfg, st, launch)) for launch, ready in launches]
    state.save(cfg.state_file, st)
    for launch, ready, pid in started:
        procs.wait_until(
            ready, f"{launch.name} did not start", timeout, pid, procs.log_path(cfg.state_dir, launch.name)
        )


def _spawn(cfg: LabConfig, st: LabState, launch: control.Launch) -> int:
    """Start a process as the supervisor's child (it restarts it when it dies)."""
    if supervisor.NAME not in st.processes:  # a lab made before the supervisor
        pid = procs.spawn(cfg.state_dir, st.token, launch.name, launch.argv, launch.netns)
        st.processes[launch.name] = [pid, procs.start_time(pid) or 0]
        return pid
    req = {"op": "spawn", "name": launch.name, "argv": launch.argv, "netns": launch.netns}
    try:
        answer = supervisor.request(st.token, req)
    except supervisor.Unavailable as e:
        raise LabError(f"{e} (its log: {procs.log_path(cfg.state_dir, supervisor.NAME)})") from None
    st.processes[launch.name] = [answer["pid"], answer["started"]]
    return int(answer["pid"])


def _start_supervisor(cfg: LabConfig, st: LabState) -> None:
    """Started first, so its interpreter's start-up overlaps the wiring; `_spawn` waits for it."""
    argv = procs.python_argv("stockade.lab.supervisor", "--dir", str(cfg.state_dir))
    pid = procs.spawn(cfg.state_dir, st.token, supervisor.NAME, argv)
    st.processes[supervisor.NAME] = [pid, procs.start_time(pid) or 0]
    state.save(cfg.state_file, st)


def _pid(st: LabState, name: str) -> int | None:
    """The recorded process's pid, if that very process still runs."""
    rec = st.processes.get(name)
    return rec[0] if rec and procs.same_process(rec[0], rec[1]) else None


def _brain_ready(st: LabState, b: brains.Brain) -> Callable[[], bool]:
    return lambda: control.brain_ready(st, b)


def _labd_ready(cfg: LabConfig, serial: int) -> Callable[[], bool]:
    """Whether the daemon serves a state at least as new as `serial` (it writes what it loaded)."""
    return lambda: int((cfg.state_dir / "labd.ready").read_text()) >= serial


def _record_objects(st: LabState, objs: manifests.Objects, placed: dict[str, PodPlan]) -> None:
    assert st.plan is not None
    for nso in objs.namespaces:
        st.namespaces[nso["metadata"]["name"]] = nso
    for pod in objs.pods:
        key = manifests.key(pod)
        st.pods[key] = running_pod(pod, placed[key], st.plan)
    for pol in objs.policies:
        st.policies[manifests.key(pol)] = pol
    for cnp in objs.cluster_policies:
        st.cluster_policies[manifests.key(cnp)] = cnp
    for key in [*st.pods, *st.policies, *map(manifests.key, objs.services)]:  # their namespaces exist
        ns = key.split("/", 1)[0]
        st.namespaces.setdefault(ns, namespace_object(ns))


def up(
    cfg: LabConfig,
    nodes: int,
    cluster: list[str],
    backend: str,
    redis_url: str | None,
    say: Say,
    *,
    ip_family: str = "ipv4",
    topology: str = "routed",
    n_brains: int = brains.DEFAULT,
) -> LabState:
    require_root()
    try:
        brains.check_count(n_brains)
    except ValueError as e:
        raise LabError(str(e)) from None
    objs = manifests.load_files(cluster)  # bad input fails here, before anything is made
    requests = sorted(map(pod_request, objs.pods), key=lambda r: (r.namespace, r.name))
    plan = place(empty_plan(cfg.prefix, nodes, ip_family, topology), requests)
    if cfg.state_file.exists() or _lab_namespaces(cfg):
        raise LabError(
            f"a lab already exists (state in {cfg.state_dir}, namespaces named "
            f"{cfg.prefix}*); `stockade lab down` removes it first"
        )
    with state.locked(cfg.state_dir):
        if cfg.state_file.exists():
            raise LabError(f"another `stockade lab up` just built a lab in {cfg.state_dir}")
        st = LabState(token=uuid.uuid4().hex, prefix=cfg.prefix, backend=backend, plan=plan)
        (cfg.state_dir / "token").write_text(st.token)  # survives a damaged state file
        state.save(cfg.state_file, st)  # from here on, `down` can find everything
        t0 = time.monotonic()
        _start_supervisor(cfg, st)
        say(f"network: {nodes} nodes, {len(plan.pods)} pods, 1 external host; {render.describe(plan)} ...")
        _wire(plan)
        say(f"  wired in {_elapsed(t0)}")
        _record_objects(st, objs, {p.key: p for p in plan.pods})
        if objs.skipped:
            say("  not modelled: " + ", ".join(f"{n} {k}" for k, n in sorted(objs.skipped.items())))
        _start_daemons(cfg, st, redis_url, say, objs.services, n_brains)
        st.status = "ready"
        state.save(cfg.state_file, st)
        say(f"lab ready in {_elapsed(t0)}")
        return st


def _wire(plan: Plan) -> None:
    """Namespaces, the nodes' sysctls (before their links, which inherit them), links, addresses
    and routes; then every IPv6 path answers once before anything depends on it."""
    netio.run_batch(netcmds.root_namespaces(plan))
    netio.set_sysctls([n.netns for n in plan.nodes], netcmds.node_sysctls(plan))
    netio.run_batch(netcmds.root_links(plan))
    netio.run_scripts(netcmds.ns_scripts(plan))
    netio.settle(netcmds.settle_checks(plan))


def _start_daemons(
    cfg: LabConfig,
    st: LabState,
    redis_url: str | None,
    say: Say,
    services: list[dict[str, Any]],
    n_brains: int = 1,
) -> None:
    assert st.plan is not None
    # The lab's own ports are listened on in every node's namespace too (the relays, the agents'
    # HTTP): never one a host-network pod declares.
    taken: set[int] = {port for p in st.plan.pods if p.host_network for _, port in p.ports}
    every = brains.planned(n_brains)
    for name in (
        "apiserver",
        *(b.key(p) for b in every for p in brains.PORTS),
        "agent_http",
        *(() if redis_url else ("redis",)),
    ):
        st.ports[name] = control.free_port(cfg, taken)
    brain = control.has_command("brain")
    if brain:
        st.brains = [b.describe(st) for b in every]
        st.relays = brains.grpc_ports(st)
    st.redis_url = redis_url or f"redis://127.0.0.1:{st.ports['redis']}/0"
    brain = brain and control.has_command("agent")
    # The agents' pods, whose tokens prove their nodes to the brain (agentids.py).
    agent_pods = agentids.objects(st.plan) if brain else []
    items = [agentids.with_startup_taint(o) if brain else o for o in restarts.cluster_objects(st)] + agent_pods
    (cfg.state_dir / "cluster.json").write_text(json.dumps({"kind": "List", "items": items}))
    api = kubeapi.Client(f"http://127.0.0.1:{st.ports['apiserver']}")
    control.write_kubeconfig(cfg.state_dir / "kubeconfig", api.url)
    state.save(cfg.state_file, st)

    if brain:
        control.write_certs(cfg.state_dir, [n.name for n in st.plan.nodes])
        control.write_admin_access(st, cfg.state_dir)
    t0 = time.monotonic()
    # Everything starts at once (interpreter start-up dominates, and they wait for each other:
    # the brain retries the API, the agents retry the brain); then each is waited for in turn.
    labd = control.Launch("labd", procs.python_argv("stockade.lab.labd", "--dir", str(cfg.state_dir)))
    launches = [(labd, _labd_ready(cfg, st.serial)), (control.apiserver_launch(st, cfg.state_dir), api.ready)]
    if not redis_url:
        launches.append((control.redis_launch(st, cfg.state_dir), lambda: control.redis_ready(st.ports["redis"])))
    proxy = kube_proxy.available()
    if proxy:
        launches.append((kube_proxy.launch(cfg.state_dir), lambda: kube_proxy.ready(cfg.state_dir)))
    if brain:
        for b in every:
            launches.append((control.brain_launch(st, cfg.state_dir, b), _brain_ready(st, b)))
    agents = [(control.agent_launch(st, n.name, n.netns, cfg.state_dir), lambda: True) for n in st.plan.nodes]
    if brain:
        # The agents' tokens come from the API server (TokenRequest), as the kubelet's do: start
        # everything else, mint them once the API answers, then start the agents.
        _start(cfg, st, launches[:2])
        agentids.write_tokens(api, st.plan, cfg.state_dir)
        if len(every) > 1:
            # Agents that started before every brain listens would all pile onto the first one
            # up (and stay: an agent moves only when its brain goes away). Once all are ready,
            # each agent starts on its own brain, as stockade.dial.order_for picks it.
            _start(cfg, st, launches[2:])
            _start(cfg, st, agents)
        else:
            _start(cfg, st, launches[2:] + agents)
    else:
        _start(cfg, st, launches)
    if proxy:
        _start_services(cfg, st, api, services, say)
    else:
        st.notes.append("the lab's API server does not serve Services in this build: no kube-proxy")
    nports = sum(len(p.ports) for p in st.plan.pods)
    sctp = sum(1 for p in st.plan.pods for proto, _ in p.ports if proto == "SCTP")
    note = f"; {sctp} SCTP ports not served: this kernel has no SCTP sockets" if sctp and not _sctp_ok() else ""
    say(f"pod servers: {nports - (sctp if note else 0)} ports on {len(st.plan.pods)} pods, TCP and UDP echo{note}")
    say(f"redis: {'using ' + redis_url if redis_url else 'private redis-server at ' + st.redis_url}")
    say(
        f"Kubernetes API: {api.url} ({len(st.namespaces)} namespaces, {len(st.plan.nodes)} nodes, "
        f"{len(st.pods)} pods, {len(st.policies)} policies; kubeconfig {cfg.state_dir / 'kubeconfig'})"
    )
    if not brain:
        st.notes.append("no `stockade brain`/`stockade agent` command in this build: policies are not enforced")
        say("brain and agents: not started (not in this build): policies are not enforced")
        return
    for b in every:
        say(
            f"{b.name}: agents' gRPC (mTLS) 127.0.0.1:{b.port(st, 'grpc')}, admin API 127.0.0.1:"
            f"{b.port(st, 'admin')}, HTTP 127.0.0.1:{b.port(st, 'http')} (Lease identity {b.identity})"
        )
    wait_realized(st, timeout=30.0, since={}, state_dir=cfg.state_dir)
    say(f"agents: one per node ({st.backend}), each in sync with the brain serving it")
    if len(every) > 1:
        say(brains.render(brains.status(st, _api_url(st))))
    say(f"  all started in {_elapsed(t0)}")


def _start_services(
    cfg: LabConfig, st: LabState, api: kubeapi.Client, services: list[dict[str, Any]], say: Say
) -> None:
    """Create the Services (the API server allocates their addresses), then wait until the lab's
    kube-proxy programs them on every node."""
    t0 = time.monotonic()
    shown = []
    for svc in services:
        _, stored = api.put(svc)
        st.services[manifests.key(stored)] = stored  # a restarted API server gets it back (restarts.py)
        spec = stored.get("spec") or {}
        ports = ", ".join(
            f"{p.get('protocol', 'TCP')}/{p.get('port')}"
            + (f" (nodePort {p['nodePort']})" if p.get("nodePort") else "")
            for p in spec.get("ports") or []
        )
        ips = ",".join(spec.get("clusterIPs") or [spec.get("clusterIP") or "-"])
        shown.append(f"{manifests.key(stored)} {spec.get('type', 'ClusterIP')} {ips}: {ports}")
    kube_proxy_status.wait_in_step(api.url, cfg.state_dir, 30.0)
    say(
        f"kube-proxy: {len(services)} services programmed on every node (nftables nat, table "
        f"inet stockade-kube-proxy) in {_elapsed(t0)}" + "".join(f"\n  {line}" for line in shown)
    )


def _sctp_ok() -> bool:
    from stockade.lab.podserver import sctp_supported

    return sctp_supported()


def wait_realized(st: LabState, timeout: float, since: dict[str, int], state_dir: Path) -> bool:
    """Wait until the brains have seen the writes in `since` (kind -> resourceVersion) and every
    node's agent acked the result to the brain serving it. False when the lab has no brain to ask."""
    answer = control.realized(st, since, timeout, state_dir)
    if answer is None:
        return False
    if not answer.get("realized"):
        pending = ", ".join(answer.get("pending") or []) or "?"
        raise LabError(
            f"not realized after {timeout:.0f} s: {answer.get('reason') or 'nodes pending: ' + pending} "
            "(the brain's and agents' logs are in the lab's state dir, under logs/)"
        )
    return True


# -- apply / delete ---------------------------------------------------------------------------------


def _signal_labd(cfg: LabConfig, st: LabState) -> None:
    pid = _pid(st, "labd")
    if pid:
        os.kill(pid, signal.SIGHUP)
        procs.wait_until(
            _labd_ready(cfg, st.serial),
            "the pod servers did not reload",
            10.0,
            pid,
            procs.log_path(cfg.state_dir, "labd"),
        )


def _api(st: LabState) -> kubeapi.Client | None:
    return kubeapi.Client(f"http://127.0.0.1:{st.ports['apiserver']}") if "apiserver" in st.processes else None


def _check_node_ports(st: LabState, requests: list[PodRequest]) -> None:
    """A host-network pod cannot declare a port the lab itself listens on in every node's namespace."""
    own = {port: "a relay to a brain" for port in st.relays}
    if "agent_http" in st.ports:
        own[st.ports["agent_http"]] = "the agents' HTTP"
    for r in requests:
        for proto, port in r.ports if r.host_network else []:
            if proto == "TCP" and port in own:
                raise LabError(
                    f"host-network pod {r.namespace}/{r.name} declares TCP/{port}, which the lab uses on "
                    f"every node ({own[port]}): pick another port, or set STOCKADE_LAB_PORTS for the next lab"
                )


def apply(cfg: LabConfig, paths: list[str], wait: bool, say: Say, timeout: float = 30.0) -> int:
    require_root()
    with state.locked(cfg.state_dir):
        st = current(cfg)
        assert st.plan is not None
        objs = manifests.load_files(paths)
        new = [r for r in map(pod_request, objs.pods) if st.plan.pod(f"{r.namespace}/{r.name}") is None]
        for r in map(pod_request, objs.pods):
            old = st.plan.pod(f"{r.namespace}/{r.name}")
            if old and r.node_name and r.node_name != old.node:
                raise LabError(
                    f"pod {old.key} runs on {old.node}; moving it to {r.node_name} is not supported: delete it first"
                )
            if old and r.ports != old.ports:
                raise LabError(f"pod {old.key}: changing its ports is not supported: delete it first")
            if old and r.host_network != old.host_network:
                raise LabError(f"pod {old.key}: changing spec.hostNetwork is not supported: delete it first")
        _check_node_ports(st, new)
        plan = place(st.plan, new)
        added = plan.pods[len(st.plan.pods) :]
        plan = relabel(plan, {f"{r.namespace}/{r.name}": r.labels for r in map(pod_request, objs.pods)})
        if added:
            root, scripts = netcmds.add_pods_scripts(plan, added)
            netio.run_batch(root)
            netio.run_scripts(scripts)
            netio.settle(netcmds.settle_checks(plan, added))
        st.plan = plan
        known = set(st.namespaces)
        _record_objects(st, objs, {p.key: p for p in plan.pods})
        implied = [st.namespaces[n] for n in st.namespaces if n not in known]  # new, and not declared
        declared = {n["metadata"]["name"] for n in objs.namespaces}
        state.save(cfg.state_file, st)
        if added:
            _signal_labd(cfg, st)
        since = _push(
            st,
            [
                *objs.namespaces,
                *(n for n in implied if n["metadata"]["name"] not in declared),
                *(st.pods[manifests.key(p)] for p in objs.pods),
                *objs.policies,
                *objs.cluster_policies,
                *objs.services,
            ],
            say,
        )
    if wait:
        _wait(st, since, timeout, say, cfg)
    return 0


def _push(st: LabState, objs: list[dict[str, Any]], say: Say) -> dict[str, int]:
    """Create or replace each object in the lab's API; return, per kind, the last resourceVersion."""
    api = _api(st)
    since: dict[str, int] = {}
    for obj in sorted(objs, key=lambda o: o["kind"] != "Namespace"):
        name = f"{obj['kind'].lower()}/{manifests.key(obj)}"
        if api is None:
            say(f"{name} recorded (no API server in this lab)")
            continue
        verb, stored = api.put(obj)
        _note_rv(since, obj["kind"], stored)
        if obj["kind"] == "Service":
            st.services[manifests.key(stored)] = stored
        extra = ""
        if obj["kind"] == "Pod" and verb == "created":
            extra = f" ({obj['status']['podIP']} on {obj['spec']['nodeName']})"
        say(f"{name} {verb}{extra}")
    return since


def _note_rv(since: dict[str, int], kind: str, stored: dict[str, Any] | None) -> None:
    rv = int(((stored or {}).get("metadata") or {}).get("resourceVersion") or 0)
    since[kind] = max(since.get(kind, 0), rv)


def _wait(st: LabState, since: dict[str, int], timeout: float, say: Say, cfg: LabConfig) -> None:
    t0 = time.monotonic()
    if wait_realized(st, timeout, since, cfg.state_dir):
        say(f"realized on every node in {_elapsed(t0)}")
    else:
        say("--wait: this lab's brain does not report realization yet; not waiting")
    if kube_proxy.NAME in st.processes:  # Services follow the pods: wait for every node to run them
        try:
            took = kube_proxy_status.wait_in_step(_api_url(st), cfg.state_dir, timeout)
        except kube_proxy_status.NotInStep as e:
            raise LabError(f"{e} (its log: {procs.log_path(cfg.state_dir, kube_proxy.NAME)})") from None
        say(f"services in step on every node in {took * 1000:.0f} ms")


def _api_url(st: LabState) -> str:
    return f"http://127.0.0.1:{st.ports['apiserver']}"


def delete(cfg: LabConfig, paths: list[str], wait: bool, say: Say, timeout: float = 30.0) -> int:
    require_root()
    with state.locked(cfg.state_dir):
        st = current(cfg)
        assert st.plan is not None
        objs = manifests.load_files(paths)
        api = _api(st)
        gone_ns = {ns["metadata"]["name"] for ns in objs.namespaces}
        pod_keys = {manifests.key(p) for p in objs.pods} | {k for k in st.pods if k.split("/")[0] in gone_ns}
        removed = [p for p in st.plan.pods if p.key in pod_keys]
        since: dict[str, int] = {}
        for kind, keys in (
            ("NetworkPolicy", [manifests.key(p) for p in objs.policies]),
            ("ClusterNetworkPolicy", [manifests.key(p) for p in objs.cluster_policies]),
            ("Service", [manifests.key(s) for s in objs.services]),
            ("Pod", sorted(pod_keys)),
            ("Namespace", sorted(gone_ns)),
        ):
            for key in keys:
                ns, _, name = key.rpartition("/")
                gone = api.delete(kind, ns or None, name) if api else None
                _note_rv(since, kind, gone)
                store = {
                    "NetworkPolicy": st.policies,
                    "ClusterNetworkPolicy": st.cluster_policies,
                    "Pod": st.pods,
                    "Namespace": st.namespaces,
                    "Service": st.services,
                }.get(kind, {})
                found = store.pop(key, None) is not None or gone is not None
                say(f"{kind.lower()}/{key} {'deleted' if found else 'not found'}")
        if gone_ns:
            for store in (st.policies, st.services):
                for key in [k for k in store if k.split("/")[0] in gone_ns]:
                    del store[key]
        st.plan = without(st.plan, pod_keys)
        state.save(cfg.state_file, st)
        if removed:
            _signal_labd(cfg, st)  # close the pods' sockets before their namespaces go
            _, scripts = netcmds.remove_pods_scripts(st.plan, removed)
            netio.run_scripts(scripts)
            netio.delete_namespaces(p.netns for p in netcmds.wired(removed))  # never a node's
    if wait:
        _wait(st, since, timeout, say, cfg)
    return 0


# -- brains (fault drills) --------------------------------------------------------------------------

SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "STOP": signal.SIGSTOP}


def _brain(st: LabState, index: int) -> brains.Brain:
    try:
        return brains.find(st, index)
    except LookupError as e:
        raise LabError(str(e)) from None


def brains_status(cfg: LabConfig) -> list[dict[str, Any]]:
    st = current(cfg)
    return brains.status(st, _api_url(st) if "apiserver" in st.ports else None)


def brain_stop(cfg: LabConfig, index: int, sig: str, say: Say) -> int:
    """Signal one brain: TERM (it ends its agents' streams first, they move at once), KILL (they
    notice the reset), STOP (frozen with its sockets open: only keepalives tell)."""
    require_root()
    with state.locked(cfg.state_dir):
        st = current(cfg)
        b = _brain(st, index)
        pid = brains.pid(st, b)
        if pid is None or brains.process_state(st, b) == "down":
            raise LabError(f"brain {index} is not running (`stockade lab brain start {index}` starts it)")
        if sig != "STOP" and supervisor.NAME in st.processes:
            # An intentional stop (as scaling to 0): not restarted until `lab brain start`.
            try:
                supervisor.request(st.token, {"op": "hold", "name": b.name})
            except supervisor.Unavailable as e:
                raise LabError(str(e)) from None
        os.kill(pid, SIGNALS[sig])
        if sig != "STOP":
            procs.wait_until(lambda: not procs.alive(pid), f"brain {index} did not exit on SIG{sig}", 15.0)
        say(f"brain {index} ({b.name}, pid {pid}): SIG{sig} sent" + ("; frozen" if sig == "STOP" else "; exited"))
    return 0


def brain_start(cfg: LabConfig, index: int, say: Say, timeout: float = 30.0) -> int:
    """Start one brain again (a new process, the same ports and flags), or thaw a frozen one."""
    require_root()
    with state.locked(cfg.state_dir):
        st = current(cfg)
        b = _brain(st, index)
        now = brains.process_state(st, b)
        if now == "running":
            raise LabError(f"brain {index} is running already")
        if now == "stopped":
            pid = brains.pid(st, b)
            assert pid is not None
            os.kill(pid, signal.SIGCONT)
            say(f"brain {index} ({b.name}, pid {pid}): SIGCONT sent; running again")
            return 0
        t0 = time.monotonic()
        _start(cfg, st, [(control.brain_launch(st, cfg.state_dir, b), _brain_ready(st, b))], timeout)
        state.save(cfg.state_file, st)
        say(f"brain {index} ({b.name}, pid {st.processes[b.name][0]}) started, ready in {_elapsed(t0)}")
    return 0


# -- processes (restarts) ------------------------------------------------------------------------


def processes_status(cfg: LabConfig) -> list[dict[str, Any]]:
    """Every process of the lab: pid, running / stopped / backoff / held / down, and its restarts
    (count, the last exit's reason and code, when), as the supervisor has them."""
    st = current(cfg)
    sup = supervisor.read_status(cfg.state_dir).get("processes") or {}
    rows = []
    for name in sorted(st.processes, key=lambda n: (n != supervisor.NAME, n)):
        info = sup.get(name) or {}
        pid = _pid(st, name)
        if pid is None or not procs.alive(pid):  # a zombie is dead too
            now = info.get("state") if info.get("state") in ("backoff", "held") else "down"
        else:
            now = "stopped" if procs.stopped(pid) else "running"
        rows.append(
            {
                "name": name,
                "pid": pid,
                "state": now,
                "restarts": int(info.get("restarts") or 0),
                "last_exit": info.get("last_exit"),
                "restart_in": info.get("restart_in") if now == "backoff" else None,
            }
        )
    return rows


# -- pods / probe -----------------------------------------------------------------------------------


def pods_json(cfg: LabConfig) -> dict[str, Any]:
    st = current(cfg)
    assert st.plan is not None
    return {
        "ipFamilies": list(st.plan.families),
        "topology": st.plan.topology,
        "pods": [
            {
                "namespace": p.namespace,
                "name": p.name,
                "ip": p.ip,  # the first family's (IPv4 in a dual-stack lab), as status.podIP
                "ips": list(p.ips),  # every address, in the same order, as status.podIPs
                "node": p.node,
                "hostNetwork": p.host_network,  # then its addresses are its node's
                "labels": p.labels,
                "ports": [{"protocol": pr, "port": n} for pr, n in p.ports],
            }
            for p in st.plan.pods
        ],
        "external": {
            "ip": st.plan.external.ip,
            "ips": list(st.plan.external.ips),
            "via": st.plan.external.via_node,
        },
    }


def _matches(label: str, wanted: list[str] | None) -> bool:
    if not wanted:
        return True
    return any(label == w or (w.endswith("/") and label.startswith(w)) or label.split("/")[0] == w for w in wanted)


def _sources(st: LabState, wanted: list[str] | None) -> list[probe.Source]:
    """The pods and the external host that `--from` names (every one without it). A host-network
    pod's client runs in its node's namespace (its plan's netns), from the node's addresses."""
    assert st.plan is not None
    srcs = [probe.Source(p.key, p.netns) for p in st.plan.pods] + [probe.Source("external", st.plan.external.netns)]
    srcs = [s for s in srcs if _matches(s.label, wanted)]
    if wanted and not srcs:
        raise LabError(f"--from {','.join(wanted)} matches no pod (and not 'external')")
    return srcs


def run_probe(
    cfg: LabConfig,
    ports: list[int] | None,
    protocols: list[str] | None,
    sources: list[str] | None,
    targets: list[str] | None = None,
    timeout: float = probe.TIMEOUT,
    say: Say = print,
    families: list[str] | None = None,
) -> list[probe.Result]:
    """Probe from the sources to each port of each target, in `families` (default: every IP
    family of the lab, so a dual-stack lab is probed over both). A host-network pod is dialled at
    its node's addresses (its plan's ips), where it listens."""
    require_root()
    st = current(cfg)
    assert st.plan is not None
    missing = [f for f in families or [] if f not in st.plan.families]
    if missing:
        raise LabError(
            f"--family {missing[0]}: this lab has no {missing[0]} addresses (it was built with "
            f"--ip-family {st.plan.ip_family}; `stockade lab up --ip-family dual` has both)"
        )
    wanted = [f for f in st.plan.families if not families or f in families]
    srcs = _sources(st, sources)
    dsts = [
        probe.Target(p.key, ip, probe.select_ports(p.ports, ports, protocols))
        for f in wanted
        for p in st.plan.pods
        if _matches(p.key, targets) and (ip := p.ip_of(f))
    ]
    if probe.unsupported_protocols(["SCTP"]):
        skipped = sum(1 for t in dsts for proto, _ in t.ports if proto == "SCTP")
        if skipped:
            say(f"note: this kernel has no SCTP sockets (errno 93): {skipped} SCTP port(s) not probed")
            dsts = [probe.Target(t.label, t.ip, tuple(x for x in t.ports if x[0] != "SCTP")) for t in dsts]
    return asyncio.run(probe.probe(srcs, dsts, timeout))


def run_service_probe(
    cfg: LabConfig,
    ports: list[int] | None,
    protocols: list[str] | None,
    sources: list[str] | None,
    targets: list[str] | None = None,
    timeout: float = probe.TIMEOUT,
    say: Say = print,
    families: list[str] | None = None,
) -> list[service_targets.ServiceResult]:
    """Probe through the Services, as clients in a cluster reach them: from each pod to every
    ClusterIP:port, from the external host to every NodePort on every node's address."""
    require_root()
    st = current(cfg)
    assert st.plan is not None
    api = _api(st)
    if api is None or kube_proxy.NAME not in st.processes:
        raise LabError("--via-service: this lab has no kube-proxy (its API server does not serve Services)")
    srcs = _sources(st, sources)
    if protocols is None and probe.unsupported_protocols(["SCTP"]):
        protocols = ["TCP", "UDP"]
    cells, skipped = service_targets.cells(api.list("Service"), st.plan, srcs, families, protocols, ports, targets)
    for why in skipped:
        say(f"note: not probed: {why}")
    return asyncio.run(service_targets.probe_cells(cells, timeout))


# -- down -------------------------------------------------------------------------------------------


def down(cfg: LabConfig, say: Say) -> int:
    require_root()
    try:
        st = state.load(cfg.state_file)
    except (ValueError, TypeError, KeyError):
        st = None
        say(f"the state file in {cfg.state_dir} is damaged; removing by name prefix {cfg.prefix!r}")
    prefix = st.prefix if st else cfg.prefix
    found = False
    try:
        token = st.token if st else (cfg.state_dir / "token").read_text().strip()
    except OSError:
        token = None
    if token:
        sup = _pid(st, supervisor.NAME) if st else None
        if sup:  # first, or it would restart what is being stopped
            procs.stop([sup])
        recorded = [pid for pid in (_pid(st, name) for name in st.processes) if pid] if st else []
        pids = sorted(set(recorded) | set(procs.marked(token)))
        left = procs.stop(pids)
        found = True
        say(f"stopped {len(pids) - len(left)} of the lab's processes" + (f"; could not stop {left}" if left else ""))
    names = [n for n in nsenter.list_netns() if n.startswith(prefix)]
    stray = sorted({pid for n in names for pid in netio.netns_pids(n)})
    if stray:
        procs.stop(stray)
        say(f"stopped {len(stray)} more processes inside the lab's namespaces")
    errors = netio.delete_namespaces(names)
    if names:
        found = True
        say(f"removed {len(names) - len(errors)} network namespaces ({prefix}*)")
    for e in errors:
        say(e)
    if cfg.state_dir.exists():
        found = True
        shutil.rmtree(cfg.state_dir, ignore_errors=True)
        say(f"removed {cfg.state_dir}")
    if not found:
        say("no lab found: nothing to remove")
    return 1 if errors else 0
