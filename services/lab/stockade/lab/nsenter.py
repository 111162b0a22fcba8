"""Entering a named network namespace for the calling thread only.

A socket belongs to the namespace it was created in, for its whole life; so one process can
serve or probe from many namespaces by entering each just long enough to create its sockets.
``setns(CLONE_NEWNET)`` affects only the calling thread, so other threads are untouched.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the body in network namespace `name` (as made by ``ip netns add``)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(NETNS_DIR / name, os.O_RDONLY)
        except FileNotFoundError:
            raise FileNotFoundError(f"network namespace {name!r} does not exist") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def socket_in(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    with netns(name):
        return socket.socket(family, kind, proto)


def write_sysctl(name: str, key: str, value: str) -> None:
    """Set /proc/sys/<key> inside namespace `name` (/proc/sys/net is per namespace of the opener)."""
    with netns(name), open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []
