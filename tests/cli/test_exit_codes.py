"""Exit codes as the README says, for every command, as one table (issue 14, item 4).

README: 0 ok (for `explain`: allowed), 1 blocked or failed, 2 bad usage or input, 3 brain
unreachable, 4 not authenticated or not permitted, 5 not found. Each row runs the real `stockade`
in a subprocess: against a real brain (TLS, tokens, the lab's API server) over real gRPC where a
brain is needed, offline where not.
"""

from __future__ import annotations

import os

import pytest
from cli_brain import READ, ROOT, Lab, stockade

OK, BLOCKED, USAGE, UNREACHABLE, DENIED, NOT_FOUND = 0, 1, 2, 3, 4, 5

# (command line, situation, expected exit code). In a command line: {brain} is the brain's admin
# address with TLS and the reader's token, {mtls} its mTLS port, {dead} a port that refuses,
# {files} the folder of test manifests, {certs} the brain's certificates.
BRAIN = "--brain {brain} --ca {certs}/ca.crt --server-name localhost --token " + READ
TABLE: list[tuple[str, str, int]] = [
    # ok
    (f"policies {BRAIN}", "ok", OK),
    (f"policies -n locked {BRAIN} -o json", "ok, one namespace", OK),
    (f"policies -n nosuch {BRAIN}", "an empty list is not an error", OK),
    (f"nodes {BRAIN} -o yaml", "ok", OK),
    (f"lint {BRAIN}", "ok: nothing rejected", OK),
    (f"dry-run -f {{files}}/good.yaml {BRAIN}", "ok", OK),
    (f"drops top {BRAIN}", "ok: the brain counts drops without Redis (in memory)", OK),
    (f"drops follow --duration 1 {BRAIN}", "ok: follows until --duration", OK),
    (f"explain open/a open/b --port 80 {BRAIN}", "allowed", OK),
    (f"explain locked/a open/b --port 80 {BRAIN}", "allowed: egress is not isolated", OK),
    ("explain open/a open/b --port 80 -f {files}/cluster.yaml", "offline, allowed", OK),
    ("lint -f {files}/good.yaml", "offline, ok", OK),
    ("reach -f {files}/cluster.yaml", "offline, ok", OK),
    # blocked or failed
    (f"explain open/a locked/b --port 80 {BRAIN}", "blocked", BLOCKED),
    (f"explain open/a locked/b --port 53 --protocol udp {BRAIN} -o json", "blocked, as JSON", BLOCKED),
    ("explain open/a locked/b --port 80 -f {files}/cluster.yaml", "offline, blocked", BLOCKED),
    # bad usage
    ("nodes --no-such-flag", "unknown flag", USAGE),
    ("policies -o xml", "bad value", USAGE),
    ("explain open/a open/b", "a required flag missing", USAGE),
    ("explain open/a open/b --port eighty", "a flag's value of the wrong type", USAGE),
    (f"explain open/a open/b --port 70000 {BRAIN}", "a value the brain rejects", USAGE),
    ("drops top --window 2m", "a value not among the choices", USAGE),
    ("drops", "a subcommand missing", USAGE),
    ("no-such-command", "an unknown command", USAGE),
    ("", "no command at all", USAGE),
    ("policies --brain {brain} --token " + READ, "a token in plain text (no --ca, no --insecure)", USAGE),
    (
        "policies --brain {brain} --ca {certs}/ca.crt --cert {certs}/brain.crt",
        "--cert without --key",
        USAGE,
    ),
    ("policies --brain {brain} --ca {files}/missing.crt --token " + READ, "a CA file that is not there", USAGE),
    ("policies --brain 10.0.0.1:7444,[fd00::1]:7444 --insecure", "a --brain list of mixed families", USAGE),
    # bad input file
    (f"dry-run -f {{files}}/bad.yaml {BRAIN}", "malformed YAML", USAGE),
    (f"dry-run -f {{files}}/list.yaml {BRAIN}", "YAML that is not a Kubernetes object", USAGE),
    (f"dry-run -f {{files}}/binary.yaml {BRAIN}", "a file that is not text", USAGE),
    (f"dry-run -f {{files}}/missing.yaml {BRAIN}", "a missing file", USAGE),
    ("dry-run -f {files}/bad.yaml --brain {dead} --insecure", "malformed YAML, brain unreachable", USAGE),
    ("lint -f {files}/bad.yaml", "offline: malformed YAML", USAGE),
    ("lint -f {files}/missing.yaml", "offline: a missing file", USAGE),
    ("lint -f {files}/rejected.yaml", "offline: a port out of range is a malformed manifest", USAGE),
    ("explain open/a open/b --port 80 -f {files}/bad.yaml", "offline: malformed YAML", USAGE),
    ("reach -f {files}/bad.yaml", "offline: malformed YAML", USAGE),
    ("reach -f {files}/missing.yaml", "offline: a missing file", USAGE),
    # brain unreachable
    ("policies --brain {dead} --insecure --timeout 5", "nothing listens", UNREACHABLE),
    ("nodes --brain {dead} --insecure --timeout 5", "nothing listens", UNREACHABLE),
    ("explain open/a open/b --port 80 --brain {dead} --insecure --timeout 5", "nothing listens", UNREACHABLE),
    ("lint --brain {dead} --insecure --timeout 5", "nothing listens", UNREACHABLE),
    ("drops top --brain {dead} --insecure --timeout 5", "nothing listens", UNREACHABLE),
    ("drops follow --duration 5 --brain {dead} --insecure", "nothing listens", UNREACHABLE),
    ("dry-run -f {files}/good.yaml --brain {dead} --insecure --timeout 5", "nothing listens", UNREACHABLE),
    ("policies", "no brain named and no lab running", UNREACHABLE),
    # not authenticated or not permitted
    (
        "policies --brain {brain} --ca {certs}/ca.crt --server-name localhost --token wrong-token-0123456789",
        "a wrong token",
        DENIED,
    ),
    ("nodes --brain {brain} --ca {certs}/ca.crt --server-name localhost", "no credentials", DENIED),
    (
        "explain open/a open/b --port 80 --brain {brain} --ca {certs}/ca.crt --server-name localhost --token nope",
        "a wrong token",
        DENIED,
    ),
    (
        "nodes --brain {mtls} --ca {certs}/ca.crt --server-name localhost "
        "--cert {certs}/nodes/node-1.crt --key {certs}/nodes/node-1.key",
        "a node's certificate is not an operator's",
        DENIED,
    ),
    # not found
    (f"explain open/nosuch open/b --port 80 {BRAIN}", "no such pod (source)", NOT_FOUND),
    (f"explain open/a nosuch/b --port 80 {BRAIN}", "no such namespace (destination)", NOT_FOUND),
    ("explain open/nosuch open/b --port 80 -f {files}/cluster.yaml", "offline: no such pod", NOT_FOUND),
]


def _argv(line: str, lab: Lab) -> list[str]:
    filled = line.format(brain=lab.address, mtls=lab.mtls_address, dead=lab.dead, files=lab.files, certs=lab.certs)
    return filled.split()


@pytest.mark.parametrize(("line", "situation", "expected"), TABLE, ids=[f"{t[0][:40]}: {t[1]}" for t in TABLE])
def test_exit_code(lab: Lab, line: str, situation: str, expected: int) -> None:
    out = stockade(*_argv(line, lab))
    assert out.returncode == expected, f"{situation}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    if expected != OK:
        assert "Traceback" not in out.stderr, out.stderr  # said in a line, not traced back
    if expected not in (OK, BLOCKED):
        assert out.stderr.strip(), "a failure says why on stderr"


def test_the_table_covers_every_command_and_code() -> None:
    from stockade.cli.main import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    tested = {line.split()[0] for line, _, _ in TABLE if line}
    admin = {"policies", "nodes", "explain", "dry-run", "lint", "drops", "reach"}
    assert admin <= tested and admin <= set(sub.choices)
    assert {code for _, _, code in TABLE} == {OK, BLOCKED, USAGE, UNREACHABLE, DENIED, NOT_FOUND}


def test_the_readme_states_these_codes() -> None:
    text = " ".join((ROOT / "README.md").read_text().split())
    assert (
        "Exit codes: 0 ok (for `explain`: allowed), 1 blocked or failed, 2 bad usage or input, "
        "3 brain unreachable, 4 not authenticated or not permitted, 5 not found." in text
    )
    assert os.path.exists(ROOT / "services" / "cli" / "stockade" / "cli" / "exits.py")
