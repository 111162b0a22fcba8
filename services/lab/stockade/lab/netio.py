"""Carrying out the wiring scripts of `netcmds` with iproute2, and taking namespaces down."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Iterable

from stockade.lab import nsenter
from stockade.lab.netcmds import Check, Scripts

SETTLE_PORT = 9  # discard: nothing in the lab listens there, so a reset is the answer


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


async def _answers(netns: str, ip: str, timeout: float) -> bool:
    """Whether a TCP connection from `netns` to `ip` gets any answer (a reset counts)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    s = nsenter.socket_in(netns, family, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (ip, SETTLE_PORT)), timeout)
        return True
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        s.close()


def settle(checks: list[Check], deadline: float = 30.0, concurrency: int = 256) -> None:
    """Try each check until it is answered; raise, naming what never was, after `deadline` s.

    A check that fails is tried again (a second at a time) rather than judged: all that matters
    is that every path answers before the lab reports ready, however busy the machine is."""

    async def run() -> list[Check]:
        gate = asyncio.Semaphore(concurrency)
        end = time.monotonic() + deadline

        async def one(check: Check) -> bool:
            while True:
                async with gate:
                    if await _answers(check[1], check[2], 1.0):
                        return True
                if time.monotonic() > end:
                    return False
                await asyncio.sleep(0.1)

        done = await asyncio.gather(*(one(c) for c in checks))
        return [c for c, ok in zip(checks, done, strict=True) if not ok]

    if not checks:
        return
    failed = asyncio.run(run())
    if failed:
        shown = "; ".join(f"{what} ({ip})" for what, _, ip in failed[:5])
        raise NetError(
            f"the lab's network is not answering: no answer within {deadline:.0f} s from {shown}"
            + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        )
