"""SIGTERM always ends a real brain process within its grace period (issue 11, item 3): while it
lists from an API server that accepts connections and never answers, while it compiles its cold
start, and while it serves. Kubernetes sends SIGKILL 30 s after SIGTERM by default; the brain
must be gone well before (its own shutdown budget is `STOP_GRACE`)."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brain_process import BrainProcess

from stockade.brain.main import STOP_GRACE
from stockade.lab.apiserver import ApiServer

GRACE = 30.0  # Kubernetes' default terminationGracePeriodSeconds


class Brain(BrainProcess):
    def terminate_within_grace(self) -> int:
        return self.terminate_within(GRACE)


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: '{url}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    return path


@pytest.fixture
def hanging_api(tmp_path: Path) -> Iterator[Path]:
    """An 'API server' that accepts every connection and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield _kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{listener.getsockname()[1]}")
    stop.set()
    t.join()
    for c in held:
        c.close()
    listener.close()


def test_sigterm_while_listing_from_a_hanging_api_server(hanging_api: Path) -> None:
    brain = Brain(hanging_api)
    try:
        brain.wait_for("listing namespaces")
        assert brain.terminate_within_grace() == 0
        assert not any("serving:" in ln for ln in brain.lines)  # it never got past the list
    finally:
        brain.kill()


def _wide_policies(n: int) -> list[dict[str, Any]]:
    """Valid, slow-to-compile policies: ::/0 minus 1,000 random /64s (about 53,000 CIDRs each)."""
    rnd = random.Random(13)
    out = []
    for i in range(n):
        excepts = [str(ipaddress.IPv6Network((rnd.getrandbits(64) << 64, 64))) for _ in range(1000)]
        out.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"wide-{i}", "namespace": "default"},
                "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "::/0", "except": excepts}}]}]},
            }
        )
    return out


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_sigterm_while_compiling_and_while_serving(tmp_path: Path) -> None:
    server = ApiServer()
    await server.start("127.0.0.1", 0)
    try:
        server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        for obj in _wide_policies(40):  # seconds of compiling at the cold start
            server.put_object(obj)
        kc = server.kubeconfig(tmp_path / "kc")
        brain = Brain(kc)
        try:
            await _in_thread(brain.wait_for, "computing node models")
            code = await _in_thread(brain.terminate_within_grace)
            assert code == 0, "".join(brain.lines)
            # it was stopped while compiling: the cold start never finished
            assert not any("computed " in ln for ln in brain.lines), "".join(brain.lines)
        finally:
            brain.kill()
        # and once serving, a SIGTERM ends it cleanly too
        for i in range(40):
            server.delete_object("NetworkPolicy", f"wide-{i}", "default")
        brain = Brain(kc)
        try:
            await _in_thread(brain.wait_for, "serving:")
            assert await _in_thread(brain.terminate_within_grace) == 0
            assert any("shutting down" in ln for ln in brain.lines)
        finally:
            brain.kill()
    finally:
        await server.stop()


def test_the_shutdown_budget_is_inside_the_grace_period() -> None:
    assert STOP_GRACE + 5 < GRACE
