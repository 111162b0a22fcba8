"""Run a command inside a named network namespace (``/run/netns/NAME``, as ``ip netns`` makes).

The agent normally runs inside its node's namespace already (``netns=None``). Tests and the lab
drive several nodes from one process, so the backends take a namespace name. The child enters
the namespace with ``setns(2)`` between fork and exec: one exec fewer than ``ip netns exec``,
which matters for the per-delta latency.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def run(
    argv: Sequence[str],
    netns: str | None = None,
    input: str | None = None,
    check: bool = False,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` (text mode, output captured), inside ``netns`` when given."""
    if netns is None:
        return subprocess.run(list(argv), input=input, capture_output=True, text=True, check=check, timeout=timeout)
    fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            preexec_fn=lambda: _setns(fd),
            pass_fds=(fd,),
        )
    finally:
        os.close(fd)


@contextmanager
def entered(netns: str) -> Iterator[None]:
    """Move the calling thread into ``netns`` for the block, then back (for sockets in tests)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)
