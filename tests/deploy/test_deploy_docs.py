"""The README install guide: its manifests validate, its configuration reference matches the flags the
manifests and the real parsers use, and its uninstall script really removes what the agent's
backends create (run as root in a network namespace of our own)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .cli_flags import DOCUMENTED_ENV, DOCUMENTED_FLAGS, option_strings, subcommand_parser
from .crd_schemas import CRD_SCHEMAS
from .render import REPO

GUIDE = REPO / "README.md"


def guide() -> str:
    return GUIDE.read_text()


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", guide(), flags=re.S | re.M)


def section(title: str) -> str:
    """The text under a `#### title` heading (the README's install guide), up to the next heading."""
    match = re.search(rf"^#### {re.escape(title)}\n(.*?)(?=^#)", guide() + "\n#", flags=re.S | re.M)
    assert match, title
    return match.group(1)


def table_flags(text: str) -> set[str]:
    return set(re.findall(r"^\| `(--[a-z0-9-]+)", text, flags=re.M))


def cleanup_script() -> str:
    (ds,) = [d for d in map(yaml.safe_load, code_blocks("yaml")) if d["metadata"]["name"] == "stockade-cleanup"]
    script: str = ds["spec"]["template"]["spec"]["containers"][0]["command"][2]
    return script


def test_yaml_examples_validate() -> None:
    blocks = code_blocks("yaml")
    assert len(blocks) >= 2
    for block in blocks:
        obj = yaml.safe_load(block)
        schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if schema is None:
            kubernetes_validate.validate(obj, "1.28", strict=True)
        else:
            jsonschema.validate(obj, schema, cls=jsonschema.Draft202012Validator)


def test_admin_connection_flags_match_the_real_client() -> None:
    parser, why = subcommand_parser("nodes")
    if parser is None:
        pytest.skip(why)
    documented = table_flags(section("Admin commands (`stockade nodes`, `policies`, `explain`, `lint`, `drops`, …)"))
    assert documented == option_strings(parser) - {"--output"}
    text = guide()
    for env in re.findall(r"env (STOCKADE_[A-Z_]+)", "\n".join(a.help or "" for a in parser._actions)):
        assert f"`{env}`" in text, env


@pytest.mark.parametrize("command", ["brain", "agent"])
def test_reference_documents_every_agreed_flag_and_env(command: str) -> None:
    text = section(f"`stockade {command}`")
    assert table_flags(text) == DOCUMENTED_FLAGS[command]
    for env in DOCUMENTED_ENV[command]:
        assert f"`{env}`" in text, env


@pytest.mark.parametrize("command", ["brain", "agent"])
def test_reference_matches_the_real_parser(command: str) -> None:
    parser, why = subcommand_parser(command)
    if parser is None:
        pytest.skip(why)
    assert table_flags(section(f"`stockade {command}`")) == option_strings(parser)


def test_certs_reference_matches_the_real_parser() -> None:
    parser, why = subcommand_parser("certs")
    if parser is None:
        pytest.skip(why)
    import argparse

    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert table_flags(section("`stockade certs init`")) == option_strings(sub.choices["init"])


def test_weave_migration_explains_the_beta_annotation() -> None:
    text = guide()
    assert "net.beta.kubernetes.io/network-policy" in text
    assert '{"ingress":{"isolation":"DefaultDeny"}}' in text
    assert "--no-beta-default-deny" in text and "by default" in text


def test_cleanup_names_what_the_backends_create() -> None:
    from stockade.agent.backends import names, nft_render
    from stockade.agent.backends.ipt_render import FWD

    script = cleanup_script()
    assert f"nft delete table {nft_render.TABLE}" in script
    assert f"$t -D FORWARD -j {FWD}" in script and "for t in iptables ip6tables" in script
    for made in (names.ipset_set("x"), names.ipset_pods("x"), names.ipt_chain("in_1"), names.ipt_chain("é")):
        assert made.startswith("STK-")
    assert "STK-" in script


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = f"st-dep-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_ns(ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=30)


@pytest.mark.root
def test_cleanup_script_removes_the_rules(netns: str) -> None:
    from stockade.agent.backends import names
    from stockade.agent.backends.ipt_render import FWD, tagged

    chain, pod_chain, aset = names.ipt_chain("in_1"), names.ipt_chain("out_2"), names.ipset_set("ag1")
    aset6 = tagged(aset, 6)  # the IPv6 twin, used by the same chains in ip6tables
    setup = f"""
        set -e
        nft add table inet stockade
        nft add chain inet stockade forward '{{ type filter hook forward priority filter; }}'
        ipset create {aset} hash:net
        iptables -N {FWD}
        iptables -N {chain}
        iptables -N {pod_chain}
        iptables -A {chain} -m set --match-set {aset} src -j RETURN
        iptables -A {FWD} -j {chain}
        iptables -A {FWD} -j {pod_chain}
        iptables -I FORWARD 1 -j {FWD}
        iptables -N KEEP-ME
        ipset create {aset6} hash:net family inet6
        ip6tables -N {FWD}
        ip6tables -N {chain}
        ip6tables -A {chain} -m set --match-set {aset6} src -j RETURN
        ip6tables -A {FWD} -j {chain}
        ip6tables -I FORWARD 1 -j {FWD}
        ip6tables -N KEEP-ME6
        nft add table inet other
    """
    result = in_ns(netns, "sh", "-c", setup)
    assert result.returncode == 0, result.stderr
    script = cleanup_script().replace("exec sleep infinity", "")
    result = in_ns(netns, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    tables = in_ns(netns, "nft", "list", "tables").stdout
    assert "inet stockade" not in tables and "inet other" in tables
    rules = in_ns(netns, "iptables-save", "-t", "filter").stdout
    assert "STOCKADE" not in rules and "STK-" not in rules
    assert ":KEEP-ME" in rules  # only ours is removed
    rules6 = in_ns(netns, "ip6tables-save", "-t", "filter").stdout
    assert "STOCKADE" not in rules6 and "STK-" not in rules6
    assert ":KEEP-ME6" in rules6
    assert "STK-" not in in_ns(netns, "ipset", "list", "-n").stdout


def test_guide_lists_every_file_of_the_base() -> None:
    from .render import DEPLOY, load_yaml_docs

    (kust,) = load_yaml_docs(DEPLOY / "kustomization.yaml")
    listed = set(re.findall(r"^\| `([^`]+)` \|", guide(), flags=re.M))
    for entry in [*kust["resources"], "agent-certs.sh"]:
        assert entry in listed, entry


@pytest.mark.parametrize("which", ["deploy/agent-certs.sh", "cleanup DaemonSet"])
def test_shell_scripts_pass_shellcheck(which: str, tmp_path: Path) -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    if which == "cleanup DaemonSet":
        path = tmp_path / "cleanup.sh"
        path.write_text(cleanup_script())
        cmd = [exe, "-s", "sh", str(path)]
    else:
        cmd = [exe, str(REPO / which)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
