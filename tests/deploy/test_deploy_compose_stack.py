"""The compose stack, run for real without a container engine: each compose service's command line
(only the /certs and /compose mount points rewritten to folders here) runs in a network namespace
standing in for its container (tests/deploy/netstack.py), with the compose service names in that
namespace's /etc/hosts. Redis, the lab's API server and the brain share the core namespace;
agent-a (nftables) and agent-b (iptables) each have theirs. Then: both agents become ready, their
kernels hold the rules, and the admin API (with the compose token) reports both nodes in sync."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from .netstack import STOCKADE, Stack, can_run
from .render import REPO

COMPOSE_DIR = REPO / "compose"

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    why = can_run()
    if why:
        pytest.skip(why)
    s = Stack(tmp_path, ["agent-a", "agent-b"])
    try:
        s.up(core_names=["redis", "apiserver", "brain"], agent_names=["brain"])
        yield s
    finally:
        s.down()


def stockade_argv(svc: dict[str, Any], mounts: dict[str, str]) -> list[str]:
    """The service's `stockade` command line, with container paths mapped to host folders."""

    def local(arg: str) -> str:
        for inside, outside in mounts.items():
            arg = arg.replace(inside, outside)
        return arg

    return [*STOCKADE, "-v", *(local(a) for a in svc["command"])]


def agent_ready(stack: Stack, name: str) -> bool:
    return stack.http_status(name, "http://127.0.0.1:9091/readyz") == "200"


def test_compose_stack_syncs_both_agents(stack: Stack) -> None:
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    services = compose["services"]
    certs = stack.tmp / "certs"
    mounts = {"/certs": str(certs), "/compose": str(COMPOSE_DIR)}

    # certs: the one-shot's stockade command (the chown that follows is for the container's user).
    (script,) = services["certs"]["command"]
    certs_cmd = script.split("&&")[0].split()
    assert certs_cmd[0] == "stockade"
    made = subprocess.run(
        [*STOCKADE, *(a.replace("/certs", str(certs)) for a in certs_cmd[1:])],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr

    redis = services["redis"]["command"]
    stack.run("redis", [shutil.which("redis-server") or "redis-server", *redis[1:], "--dir", str(stack.tmp)])
    api = services["apiserver"]
    stack.run(
        "apiserver",
        [sys.executable, *api["entrypoint"][1:], *(a.replace("/compose", str(COMPOSE_DIR)) for a in api["command"])],
    )
    brain = services["brain"]
    stack.run("brain", stockade_argv(brain, mounts), env=brain["environment"])
    for name in ("agent-a", "agent-b"):
        svc = services[name]
        stack.run(name, stockade_argv(svc, mounts), where=name, env=svc["environment"])

    for name in ("agent-a", "agent-b"):
        stack.wait_for(f"{name} ready", partial(agent_ready, stack, name))

    # The kernels hold the rules: node-a's web pod is isolated by the compose cluster's policy.
    nft = stack.exec("agent-a", "nft", "list", "table", "inet", "stockade")
    assert nft.returncode == 0 and "10.244.1.10" in nft.stdout, nft.stdout + nft.stderr
    ipt = stack.exec("agent-b", "iptables-save", "-t", "filter")
    assert "STOCKADE-FWD" in ipt.stdout, ipt.stdout

    # The brain's HTTP and admin API, as compose/README.md shows them.
    readyz = stack.exec("brain", "curl", "-s", "http://127.0.0.1:9090/readyz")
    assert readyz.stdout.startswith("ready"), readyz.stdout
    nodes = stack.exec(
        "agent-a",
        *STOCKADE, "nodes", "--brain", "brain:7444",
        "--ca", str(certs / "ca.crt"), "--server-name", "brain",
        "--token", "compose-dev-token-not-a-secret", "-o", "json",
    )  # fmt: skip
    assert nodes.returncode == 0, nodes.stderr
    status = {n["name"]: n for n in json.loads(nodes.stdout)["items"]}
    assert set(status) == {"node-a", "node-b"}
    for node in status.values():
        assert node["connected"] is True
        assert node["appliedGeneration"] == node["desiredGeneration"] > 0
