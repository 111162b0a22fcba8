"""compose/compose.yaml: valid against the Compose specification's JSON schema, and wired the way
the README says (images from the Dockerfile, agents with only NET_ADMIN and NET_RAW, nothing
published beyond loopback, every command line accepted by the real CLI)."""

from __future__ import annotations

import importlib.metadata
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .cli_flags import DOCUMENTED_FLAGS, flag_names, parse, subcommand_parser
from .render import REPO

COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"

Compose = dict[str, Any]


def compose_spec_schema() -> dict[str, Any] | None:
    """The Compose specification's schema as shipped by the `docker-compose` package on PyPI
    (compose/config/compose_spec.json); it is read as a file, the package is never imported."""
    try:
        dist = importlib.metadata.distribution("docker-compose")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("compose/config/compose_spec.json")))
    return json.loads(path.read_text()) if path.is_file() else None


@pytest.fixture(scope="module")
def compose() -> Compose:
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the `<<: *anchor` merges
    assert isinstance(data, dict)
    return data


def test_validates_against_the_compose_spec_schema(compose: Compose) -> None:
    schema = compose_spec_schema()
    if schema is None:
        pytest.skip("the Compose spec schema comes from `pip install --no-deps docker-compose==1.29.2`")
    jsonschema.Draft201909Validator(schema).validate(compose)
    broken = {**compose, "services": {**compose["services"], "brain": {**compose["services"]["brain"]}}}
    broken["services"]["brain"]["cap_ad"] = ["NET_ADMIN"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate(broken)


def test_the_stack_is_complete(compose: Compose) -> None:
    services = compose["services"]
    assert {"redis", "apiserver", "brain", "agent-a", "agent-b"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source}"
            else:
                assert source in compose.get("volumes", {}), f"{name}: named volume {source} not declared"


def test_stockade_services_build_from_the_dockerfile(compose: Compose) -> None:
    for name in ("apiserver", "brain", "agent-a", "agent-b"):
        build = compose["services"][name]["build"]
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == REPO / "Dockerfile", name


def test_agents_have_only_net_admin_and_net_raw(compose: Compose) -> None:
    for name, svc in compose["services"].items():
        if name.startswith("agent-"):
            assert svc["cap_drop"] == ["ALL"]
            assert sorted(svc["cap_add"]) == ["NET_ADMIN", "NET_RAW"]
            assert not svc.get("privileged", False)
            assert svc.get("network_mode") != "host"  # each agent only touches its own netns
            assert svc["environment"]["NODE_NAME"] == svc["hostname"]
        else:
            assert "cap_add" not in svc, name


def test_certificates_are_made_for_the_names_in_use(compose: Compose) -> None:
    services = compose["services"]
    ((_, certs),) = [c for c in stockade_commands(compose) if c[0] == "certs"]
    opts = dict(zip(certs[1::2], certs[2::2], strict=False))
    agents = {s["environment"]["NODE_NAME"]: s for n, s in services.items() if n.startswith("agent-")}
    assert set(opts["--nodes"].split(",")) == set(agents)
    assert opts["--brain-names"] == "brain" == next(iter(agents.values()))["command"][1].split("=")[1].split(":")[0]
    for node, svc in agents.items():
        assert f"--tls-cert=/certs/nodes/{node}.crt" in svc["command"]
    brain_user = "10001"
    assert f"chown -R {brain_user}:{brain_user} /certs" in services["certs"]["command"][0]
    assert services["brain"].get("user", brain_user).split(":")[0] == brain_user


def test_agents_are_nodes_of_the_api_servers_data(compose: Compose) -> None:
    nodes = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all((COMPOSE_DIR / "cluster.yaml").read_text())
        if d and d["kind"] == "Node"
    }
    agents = {s["environment"]["NODE_NAME"] for n, s in compose["services"].items() if n.startswith("agent-")}
    assert agents == nodes


def test_ports_are_published_on_loopback_only(compose: Compose) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_brain_reads_the_api_server_through_the_kubeconfig(compose: Compose) -> None:
    kubeconfig = yaml.safe_load((COMPOSE_DIR / "kubeconfig.yaml").read_text())
    (cluster,) = kubeconfig["clusters"]
    api = compose["services"]["apiserver"]["command"]
    port = api[api.index("--port") + 1]
    assert cluster["cluster"]["server"] == f"http://apiserver:{port}"
    brain_args = compose["services"]["brain"]["command"]
    assert "--kubeconfig=/compose/kubeconfig.yaml" in brain_args


def test_api_server_command_line_is_accepted() -> None:
    from stockade.lab.apiserver.__main__ import parse_args

    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    api = compose["services"]["apiserver"]
    assert api["entrypoint"] == ["python", "-m", "stockade.lab.apiserver"]
    args = parse_args(api["command"])
    assert args.host == "0.0.0.0"
    assert [Path(p).name for p in args.data] == ["cluster.yaml"]


def test_api_server_loads_the_compose_cluster(tmp_path: Path) -> None:
    # The real server with the real data file: it prints its URL once every object is in.
    proc = subprocess.Popen(
        [sys.executable, "-m", "stockade.lab.apiserver", "--port", "0", "--data", str(COMPOSE_DIR / "cluster.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving the Kubernetes API on http://127.0.0.1:" in line, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def stockade_commands(compose: Compose) -> list[tuple[str, list[str]]]:
    """(subcommand, args) of every `stockade` run in the stack, shell one-liners included."""
    out = []
    for svc in compose["services"].values():
        if not svc.get("image", "").startswith("stockade"):
            continue
        entrypoint = svc.get("entrypoint")
        if entrypoint is None:
            cmd = svc["command"]
        elif entrypoint == ["sh", "-c"]:
            (script,) = svc["command"]
            cmd = shlex.split(script.split("&&")[0])
            assert cmd[0] == "stockade", script
            cmd = cmd[1:]
        else:
            continue
        out.append((cmd[0], cmd[1:]))
    return out


def test_command_lines_use_only_the_agreed_flags(compose: Compose) -> None:
    commands = stockade_commands(compose)
    assert {c for c, _ in commands} >= {"brain", "agent"}
    for cmd, args in commands:
        if cmd in DOCUMENTED_FLAGS:
            assert flag_names(args) <= DOCUMENTED_FLAGS[cmd], cmd


@pytest.mark.parametrize("command", ["brain", "agent", "certs"])
def test_command_lines_parse_with_the_real_cli(compose: Compose, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parser, why = subcommand_parser(command)
    if parser is None:
        pytest.skip(why)
    monkeypatch.setenv("NODE_NAME", "node-a")
    for cmd, args in stockade_commands(compose):
        if cmd == command:
            parse(parser, args)


def test_admin_tokens_file_loads_with_the_brains_loader(compose: Compose) -> None:
    from stockade.brain.admin.auth import load_tokens

    brain = compose["services"]["brain"]
    (flag,) = [a for a in brain["command"] if a.startswith("--admin-tokens-file=")]
    inside = flag.split("=", 1)[1]
    (mount,) = [v for v in brain["volumes"] if v.split(":")[1] == inside]
    tokens = load_tokens(COMPOSE_DIR / mount.split(":")[0])
    assert [c.role for c in tokens.values()] == ["admin"]
