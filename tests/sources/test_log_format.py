"""`stockade brain --log-format json`: the real brain process against the lab API server writes
one JSON object per line (time, level, logger, message), its warnings included; and the
formatter carries a traceback as the ``exception`` field of one line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from kubernetes_asyncio import client as k8s

from stockade.brain.sources import api_client
from stockade.cli.logformat import JsonFormatter
from stockade.lab.apiserver import ApiServer

STOCKADE = str(Path(sys.executable).with_name("stockade"))
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_brain_writes_json_lines(server: ApiServer, tmp_path: Path) -> None:
    kc = server.kubeconfig(tmp_path / "kc")
    ac = await api_client(str(kc))
    try:
        await k8s.CoreV1Api(ac).create_namespace({"metadata": {"name": "team"}})
        wide = {"podSelector": {}, "ingress": [{"ports": [{"port": 1000 + i} for i in range(1001)]}]}
        await k8s.NetworkingV1Api(ac).create_namespaced_network_policy(
            "team", {"metadata": {"name": "wide"}, "spec": wide}
        )
    finally:
        await ac.close()
    proc = await asyncio.create_subprocess_exec(
        STOCKADE,
        "-v",
        "brain",
        "--kubeconfig",
        str(kc),
        "--listen=127.0.0.1:0",
        "--admin-listen=127.0.0.1:0",
        "--admin-mtls-listen=",
        "--http=127.0.0.1:0",
        "--insecure",
        "--leader-namespace=no-such-namespace",  # the election's warning, as JSON too
        "--leader-identity=brain-json",
        "--log-format=json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false"},
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while not (any("serving: sync" in x for x in lines) and any("leader election" in x for x in lines)):
            assert time.monotonic() < deadline, lines
            line = await asyncio.wait_for(proc.stderr.readline(), timeout=60)
            assert line, f"the brain exited: {lines}"
            lines.append(line.decode())
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    lines += err.decode().splitlines(keepends=True)
    records = [json.loads(x) for x in lines if x.strip()]  # every line is one JSON object
    for r in records:
        assert {"time", "level", "logger", "message"} <= r.keys(), r
        assert TIME.match(r["time"]), r["time"]
    levels = {(r["level"], r["logger"]) for r in records}
    assert ("warning", "stockade.brain") in levels  # the refused policy
    assert any(r["level"] == "warning" and "no-such-namespace" in r["message"] for r in records)
    assert any("NetworkPolicy team/wide" in r["message"] for r in records)
    assert proc.returncode == 0


def test_exception_text_is_one_field() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("stockade.x", logging.ERROR, __file__, 1, "failed on %s", ("p",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "failed on p" and out["level"] == "error" and out["logger"] == "stockade.x"
    assert out["exception"].startswith("Traceback") and "ValueError: bad\nthing" in out["exception"]
