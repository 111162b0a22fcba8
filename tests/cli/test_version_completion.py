"""`stockade version` (the CLI's, the brain's and each agent's release and sync protocol) and
`stockade completion bash|zsh|fish` (issue 14, item 2), through the real CLI and a real brain."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cli_brain import READ, Lab, agent_of_node_1, stockade, tls

from stockade.codec.version import MIN_PEER, PROTOCOL, release

AGENT = "stockade-agent/test-9.9"


@pytest.fixture
def agent(lab: Lab) -> Iterator[None]:
    with agent_of_node_1(lab, AGENT):
        yield


def _version(lab: Lab, *extra: str) -> subprocess.CompletedProcess[str]:
    return stockade("version", *tls(lab), "--token", READ, *extra)


def test_version_names_the_brain_and_every_agent(lab: Lab, agent: None) -> None:
    out = _version(lab, "-o", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["client"] == {"version": release(), "protocol": PROTOCOL, "minProtocol": MIN_PEER}
    brain = doc["brain"]
    assert brain["reachable"] is True and brain["address"] == lab.address
    assert (brain["version"], brain["protocol"], brain["minProtocol"]) == (release(), PROTOCOL, MIN_PEER)
    assert brain["agents"] == [
        {"node": "node-1", "connected": True, "version": AGENT, "protocol": PROTOCOL},
        {"node": "node-2", "connected": False, "version": "", "protocol": 0},  # no agent ever came
    ]
    assert yaml.safe_load(_version(lab, "-o", "yaml").stdout) == doc
    text = _version(lab).stdout
    assert f"CLI:    stockade {release()} (sync protocol {PROTOCOL})" in text
    assert f"Brain:  stockade {release()} at {lab.address} (sync protocol {PROTOCOL}" in text
    assert f"Agent:  node-1: {AGENT} (sync protocol {PROTOCOL})" in text
    assert "Agent:  node-2: no agent has connected" in text


def test_version_without_a_brain_still_answers_for_the_cli(lab: Lab) -> None:
    out = stockade("version", "--brain", lab.dead, "--insecure", "--timeout", "5", "-o", "json")
    assert out.returncode == 0, out.stderr  # the CLI's part answered; the brain's is said to be missing
    doc = json.loads(out.stdout)
    assert doc["client"]["version"] == release()
    assert doc["brain"]["reachable"] is False and "UNAVAILABLE" in doc["brain"]["error"]
    assert "unknown" in out.stderr
    text = stockade("version").stdout  # nothing named, no lab
    assert "CLI:    stockade" in text and "Brain:  not reachable: no brain to talk to" in text
    only = stockade("version", "--client", "-o", "json")
    assert only.returncode == 0 and json.loads(only.stdout) == {
        "apiVersion": "stockade.io/v1", "kind": "Version", "client": doc["client"], "brain": None,
    }  # fmt: skip
    assert stockade("--version").stdout.strip() == f"stockade {release()}"
    assert stockade("version", "-o", "xml").returncode == 2


def test_version_with_a_wrong_token_says_so_and_exits_0(lab: Lab) -> None:
    out = stockade("version", *tls(lab), "--token", "wrong-token-0123456789", "-o", "json")
    assert out.returncode == 0
    assert json.loads(out.stdout)["brain"]["error"].startswith("UNAUTHENTICATED")


# ---------------------------------------------------------------------------- completion


def _complete(script: str, *words: str) -> list[str]:
    """What bash offers for the command line ``words`` (the last being the word under the cursor),
    with the script sourced and COMP_WORDS/COMP_CWORD set as bash's completion would set them."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in ("stockade", *words))
    prog = f'{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words)}; _stockade; printf "%s\\n" "${{COMPREPLY[@]}}"'
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [w for w in out.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def bash_script() -> str:
    out = stockade("completion", "bash")
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_bash_completion_is_valid_bash(bash_script: str, tmp_path: Any) -> None:
    path = tmp_path / "stockade.bash"
    path.write_text(bash_script)
    check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    registered = subprocess.run(
        ["bash", "--norc", "-c", f"source {path}; complete -p stockade"], capture_output=True, text=True, timeout=60
    )
    assert "-F _stockade stockade" in registered.stdout, registered.stderr


def test_bash_completes_commands_subcommands_flags_and_values(bash_script: str) -> None:
    assert _complete(bash_script, "dr") == ["dry-run", "drops"]
    assert {"policies", "nodes", "explain", "version", "completion"} <= set(_complete(bash_script, ""))
    assert _complete(bash_script, "drops", "") == ["top", "follow", "-h", "--help"]
    assert _complete(bash_script, "drops", "t") == ["top"]
    assert _complete(bash_script, "drops", "top", "--win") == ["--window"]
    assert _complete(bash_script, "drops", "top", "--window", "") == ["1m", "15m", "1h", "24h"]
    assert _complete(bash_script, "nodes", "-o", "") == ["table", "wide", "json", "yaml", "name"]
    assert _complete(bash_script, "drops", "top", "--output", "") == ["table", "json", "yaml"]
    assert _complete(bash_script, "-v", "lab", "brain", "s") == ["stop", "start"]  # flags before are skipped
    assert _complete(bash_script, "completion", "") == ["bash", "fish", "zsh", "-h", "--help"]
    # a flag's value that looks like a command does not move the path
    assert "--window" in _complete(bash_script, "drops", "top", "--by", "nodes", "--w")


def test_zsh_and_fish_scripts(tmp_path: Any) -> None:
    zsh = stockade("completion", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef stockade")
    assert "bashcompinit" in zsh.stdout and "complete -o default -F _stockade stockade" in zsh.stdout
    fish = stockade("completion", "fish")
    assert fish.returncode == 0
    assert "complete -c stockade -n __fish_use_subcommand -a version" in fish.stdout
    assert "-l window -x -a '1m 15m 1h 24h'" in fish.stdout
    for shell, text in (("zsh", zsh.stdout), ("fish", fish.stdout)):
        binary = shutil.which(shell)
        if binary is None:
            continue  # the shell is not installed: its syntax check is left to where it is
        path = tmp_path / f"stockade.{shell}"
        path.write_text(text)
        check = subprocess.run([binary, "-n", str(path)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
