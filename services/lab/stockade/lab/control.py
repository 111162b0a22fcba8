"""The lab's control plane: which processes run, with which command lines, and when they are ready.

Every command line the lab launches is built here, in one place: the Kubernetes API server,
Redis, the brain, and one agent per node (inside the node's namespace). A part whose command
does not exist yet is skipped with a note, so the network, the pod servers and the probe work
without it.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import shutil
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockade.lab import agentids, brains, procs
from stockade.lab.config import LabConfig
from stockade.lab.state import LabState


@dataclass(frozen=True)
class Launch:
    name: str
    argv: list[str]
    netns: str | None = None


def free_port(cfg: LabConfig, taken: set[int]) -> int:
    """A free loopback TCP port: from the configured range if any, else one the kernel picks."""
    candidates = range(cfg.port_range[0], cfg.port_range[1] + 1) if cfg.port_range else [0]
    for port in candidates:
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            got: int = s.getsockname()[1]
            if got not in taken and not _taken_v6(got):
                taken.add(got)
                return got
    raise RuntimeError(f"no free loopback port in {cfg.port_range}")


def _taken_v6(port: int) -> bool:
    """Whether an IPv6 loopback socket holds `port` (gRPC listens there too: a port free on
    127.0.0.1 alone may still be another lab's brain)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", port))
    except OSError as e:
        return e.errno == errno.EADDRINUSE  # no IPv6 loopback: nothing can hold it there
    return False


def has_command(name: str) -> bool:
    """Whether `stockade <name>` exists (a module in stockade.cli.commands)."""
    return importlib.util.find_spec(f"stockade.cli.commands.{name}") is not None


def stockade_argv(*args: str) -> list[str]:
    return procs.python_argv("stockade.cli.main", *args)


def redis_launch(st: LabState, state_dir: Path) -> Launch:
    data = state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    return Launch(
        "redis",
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(st.ports["redis"]),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
            "--protected-mode",
            "yes",
        ],
    )


# The Service CIDR of each IP family; a lab serves those of its own families (an IPv6-only lab
# gives Services IPv6 addresses, as a real cluster with that --service-cluster-ip-range does).
SERVICE_CIDRS = {"ipv4": "10.96.0.0/16", "ipv6": "fd00:10:96::/112"}


def apiserver_launch(st: LabState, state_dir: Path) -> Launch:
    families = st.plan.families if st.plan else ("ipv4",)
    return Launch(
        "apiserver",
        procs.python_argv(
            "stockade.lab.apiserver",
            "--port",
            str(st.ports["apiserver"]),
            "--data",
            str(state_dir / "cluster.json"),
            "--bookmark-interval",
            "5",
            "--service-cluster-ip-range",
            ",".join(SERVICE_CIDRS[f] for f in families),
        ),
    )


def write_kubeconfig(path: Path, url: str) -> None:
    """A kubeconfig for the lab's API server, written before anything that reads it starts."""
    ctx = "stockade-lab"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": ctx, "cluster": {"server": url}}],
        "users": [{"name": ctx, "user": {}}],
        "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx}}],
        "current-context": ctx,
    }
    path.write_text(json.dumps(doc, indent=1))  # JSON is YAML


def certs_dir(state_dir: Path) -> Path:
    return state_dir / "certs"


def write_certs(state_dir: Path, nodes: list[str]) -> None:
    """The lab's mTLS material: a CA, the brain's certificate (for 127.0.0.1 and localhost, where
    agents reach it through the relay) and one client certificate per node."""
    from stockade.tls import write_bundle

    write_bundle(certs_dir(state_dir), nodes, ["localhost", "127.0.0.1"])


def write_admin_access(st: LabState, state_dir: Path) -> None:
    """Admin API tokens for the lab's brain, and ``admin.json`` so that `stockade policies`,
    `explain`, `drops` ... find the lab's brain on their own (see `stockade.cli.client`)."""
    import secrets

    admin, reader = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    tokens = {
        "tokens": [
            {"name": "lab-admin", "token": admin, "role": "admin"},
            {"name": "lab-reader", "token": reader, "role": "read"},
        ]
    }
    path = state_dir / "admin-tokens.json"
    path.write_text(json.dumps(tokens, indent=1))
    path.chmod(0o600)
    every = brains.of(st)
    access: dict[str, Any] = {
        "brain": f"127.0.0.1:{st.ports['brain_admin']}",
        # Every brain answers the admin API (each with what it knows; brain 1 first).
        "brains": [f"127.0.0.1:{b.port(st, 'admin')}" for b in every],
        "token": admin,
        "read_token": reader,
        "ca": str(certs_dir(state_dir) / "ca.crt"),
        "server_name": "localhost",
    }
    if "brain_admin_mtls" in st.ports:  # operator certificates are verified there
        access["mtls_brain"] = f"127.0.0.1:{st.ports['brain_admin_mtls']}"
        access["mtls_brains"] = [f"127.0.0.1:{b.port(st, 'admin_mtls')}" for b in every]
    (state_dir / "admin.json").write_text(json.dumps(access, indent=1))
    (state_dir / "admin.json").chmod(0o600)


def brain_launch(st: LabState, state_dir: Path, brain: brains.Brain | None = None) -> Launch:
    b = brain or brains.Brain(1)
    mtls = b.key("admin_mtls")
    return Launch(
        b.name,
        stockade_argv(
            "brain",
            "--kubeconfig",
            str(state_dir / "kubeconfig"),
            "--listen",
            f"127.0.0.1:{b.port(st, 'grpc')}",
            "--admin-listen",
            f"127.0.0.1:{b.port(st, 'admin')}",
            "--admin-mtls-listen",
            f"127.0.0.1:{st.ports[mtls]}" if mtls in st.ports else "",
            "--http",
            f"127.0.0.1:{b.port(st, 'http')}",
            # Brains elect a leader (the one that writes to the API) by a Lease in the lab's API.
            "--leader-identity",
            b.identity,
            *brains.LEASE_FLAGS,
            "--tls-dir",
            str(certs_dir(state_dir)),
            "--admin-tokens-file",
            str(state_dir / "admin-tokens.json"),
            # Agents prove their node with a token (TokenReview, as deployed) and with their
            # certificate too, naming the same node: both paths run in every lab.
            "--agent-auth",
            "both",
            *(["--redis-url", st.redis_url] if st.redis_url else []),
        ),
    )


def agent_launch(st: LabState, node: str, netns: str, state_dir: Path) -> Launch:
    # The agent reaches every brain through the relays on its node's own loopback (see relay.py)
    # and picks one, moving to another when its brain goes away; it serves its health and metrics on that loopback too.
    return Launch(
        f"agent-{node}",
        stockade_argv(
            "agent",
            "--node",
            node,
            "--brain",
            brains.agent_brain_flag(st),
            "--backend",
            st.backend,
            "--tls-dir",
            str(certs_dir(state_dir)),
            "--token-file",
            str(agentids.token_file(state_dir, node)),
            "--http",
            f"127.0.0.1:{st.ports['agent_http']}",
        ),
        netns=netns,
    )


def redis_ready(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1.0) as resp:
        return bool(resp.status == 200)


def brain_ready(st: LabState, brain: brains.Brain | None = None) -> bool:
    return http_ok(f"http://127.0.0.1:{(brain or brains.Brain(1)).port(st, 'http')}/readyz")


def realized(st: LabState, since: dict[str, int], timeout: float, state_dir: Path) -> dict[str, Any] | None:
    """Wait until the brains have seen each kind's last write (kind -> resourceVersion) and every
    node has applied what followed (realize.py asks every brain). None when this lab has no brain."""
    from stockade.lab import realize

    return realize.wait(st, since, timeout, state_dir)


def have_redis_server() -> bool:
    return shutil.which("redis-server") is not None
