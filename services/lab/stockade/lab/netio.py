"""Carrying out the wiring scripts of `netcmds` with iproute2, and taking namespaces down."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

from stockade.lab import nsenter
from stockade.lab.netcmds import Scripts


class NetError(RuntimeError):
    pass


def run_batch(lines: list[str], netns: str | None = None) -> None:
    if not lines:
        return
    cmd = ["ip", "-n", netns, "-batch", "-"] if netns else ["ip", "-batch", "-"]
    res = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False)
    if res.returncode != 0:
        where = f"in {netns}" if netns else "in the host namespace"
        raise NetError(f"ip -batch failed {where}: {res.stderr.strip()}")


def run_scripts(scripts: Scripts) -> None:
    """One `ip` process per namespace, all at once."""
    procs = []
    for netns, lines in scripts.items():
        p = subprocess.Popen(
            ["ip", "-n", netns, "-batch", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append((netns, p, "\n".join(lines) + "\n"))
    errors = []
    for netns, p, text in procs:
        _, err = p.communicate(text)
        if p.returncode != 0:
            errors.append(f"{netns}: {err.strip()}")
    if errors:
        raise NetError("wiring failed: " + "; ".join(errors))


def set_sysctls(namespaces: Iterable[str], values: dict[str, str]) -> None:
    for ns in namespaces:
        for key, value in values.items():
            nsenter.write_sysctl(ns, key, value)


def delete_namespaces(names: Iterable[str]) -> list[str]:
    """Delete each namespace; return the errors (a missing namespace is not one)."""
    names = [n for n in names if n in set(nsenter.list_netns())]
    if not names:
        return []
    res = subprocess.run(
        ["ip", "-force", "-batch", "-"],
        input="".join(f"netns del {n}\n" for n in names),
        capture_output=True,
        text=True,
        check=False,
    )
    left = set(names) & set(nsenter.list_netns())
    return [f"could not delete namespace {n}: {res.stderr.strip()}" for n in sorted(left)]


def netns_pids(name: str) -> list[int]:
    res = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
    return [int(x) for x in res.stdout.split() if x.isdigit()]
