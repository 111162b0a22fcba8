"""The flags the manifests, the compose file and the README install guide may use, and access to the real
`stockade` parsers so the tests can check them against the code once the services exist."""

from __future__ import annotations

import argparse
import shlex

# The agreed command lines of the two services (issues 4, 6 and 8). The real parsers win when
# they exist: the tests parse every command line with them.
DOCUMENTED_FLAGS: dict[str, frozenset[str]] = {
    "brain": frozenset(
        {
            "--kubeconfig",
            "--listen",
            "--admin-listen",
            "--admin-mtls-listen",
            "--http",
            "--tls-cert",
            "--tls-key",
            "--tls-ca",
            "--tls-dir",
            "--insecure",
            "--redis-url",
            "--admin-tokens-file",
            "--no-admin-kube-auth",  # issue 14: admin callers by Kubernetes RBAC (admin/kubeauth.py)
            "--history",
            "--no-beta-default-deny",
            "--agent-auth",
            "--agent-audience",
            "--agent-service-account",
            # leader election and Events (issue 13): stockade.brain.leader, stockade.brain.events
            "--no-leader-election",
            "--leader-namespace",
            "--leader-identity",
            "--lease-duration",
            "--lease-renew-deadline",
            "--lease-retry",
            "--log-format",
        }
    ),
    "agent": frozenset(
        {
            "--node",
            "--brain",
            "--keepalive-time",
            "--keepalive-timeout",
            "--backend",
            "--nflog-group",
            "--tls-cert",
            "--tls-key",
            "--tls-ca",
            "--tls-dir",
            "--server-name",
            "--token-file",
            "--http",
            "--verify-interval",
            "--preflight-interval",
            "--no-fix-sysctls",
            "--counters-interval",
            "--insecure",
            "--log-format",
        }
    ),
}

DOCUMENTED_ENV: dict[str, frozenset[str]] = {
    "brain": frozenset({"STOCKADE_REDIS_URL", "STOCKADE_BRAIN_LISTEN", "KUBECONFIG"}),
    "agent": frozenset({"NODE_NAME", "STOCKADE_BRAIN"}),
}


def flag_names(args: list[str]) -> set[str]:
    """`--name` of every option in an argument list (`--a=b` and `--a b` alike)."""
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def subcommand_parser(name: str) -> tuple[argparse.ArgumentParser | None, str]:
    """The real parser of `stockade NAME`, or None and why not (not written yet, or broken)."""
    try:
        from stockade.cli.main import build_parser

        parser = build_parser()
    except Exception as exc:  # another part under construction must not break these tests
        return None, f"stockade CLI not importable: {exc!r}"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name], ""
    return None, f"`stockade {name}` is not registered yet"


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings if s.startswith("--")} - {"--help"}


def parse(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    """Parse like the real command would; argparse's exit on a bad flag becomes an error."""
    try:
        return parser.parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"stockade rejects {shlex.join(args)} (exit {exc.code})") from None
