"""The ServiceMonitor's relabelling, run by a real Prometheus: the brain's per-node series keep
the node they are about, and an agent's series get the node it runs on.

The Prometheus Operator turns an endpoint's `relabelings` into the job's `relabel_configs`
(camelCase to snake_case) on top of Kubernetes service discovery. Here the same rules run on
static targets that carry the discovery labels that matter (`__meta_kubernetes_*`), scraping a
local server that serves a brain's and an agent's metrics."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from .render import DEPLOY, Obj, find, render

# What a brain serves about the nodes (names the alert rules read), with the node it is about.
BRAIN_BODY = b"""# TYPE stockade_brain_node_agent_connected gauge
stockade_brain_node_agent_connected{node="node-a"} 1
stockade_brain_node_agent_connected{node="node-b"} 0
"""
BRAIN_POD_NODE = "node-brain"
AGENT_POD_NODE = "node-b"
CAMEL = {"sourceLabels": "source_labels", "targetLabel": "target_label"}


def relabel_configs(relabelings: list[Obj]) -> list[Obj]:
    return [{CAMEL.get(k, k): (v.lower() if k == "action" else v) for k, v in r.items()} for r in relabelings]


def agent_body() -> bytes:
    from stockade.agent.metrics import AgentMetrics
    from stockade.agent.sync.applier import AgentStatus

    metrics = AgentMetrics()
    metrics.watch_sync(AgentStatus("node-b", connected=True))
    return generate_latest(metrics.registry)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def exporter() -> Iterator[int]:
    bodies = {"/brain": BRAIN_BODY, "/agent": agent_body()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def targets(port: int) -> list[Obj]:
    def target(component: str, node: str) -> Obj:
        return {
            "targets": [f"127.0.0.1:{port}"],
            "labels": {
                "__metrics_path__": f"/{component}",
                "__meta_kubernetes_service_label_app_kubernetes_io_component": component,
                "__meta_kubernetes_pod_node_name": node,
            },
        }

    return [target("brain", BRAIN_POD_NODE), target("agent", AGENT_POD_NODE)]


def query(api: str, promql: str) -> list[Obj]:
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        result: list[Obj] = json.load(resp)["data"]["result"]
        return result


def wait_for_series(api: str, promql: str, want: int, proc: subprocess.Popen[bytes], log: Path) -> list[Obj]:
    deadline = time.monotonic() + 120  # a generous bound on a loaded machine, not a timing assertion
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
        try:
            result = query(api, promql)
        except OSError:
            result = []
        if len(result) >= want:
            return result
        time.sleep(0.5)
    raise AssertionError(f"no {want} series for {promql} after 120 s: {log.read_text()[-2000:]}")


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (make deps)")
def test_relabelling_keeps_the_series_node(exporter: int, tmp_path: Path) -> None:
    (endpoint,) = find(render(DEPLOY).objects, "ServiceMonitor", "stockade")["spec"]["endpoints"]
    shipped = relabel_configs(endpoint["relabelings"])
    # The relabelling the ServiceMonitor had before: the control that shows the check can fail.
    old = [{"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"}]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": name, "static_configs": targets(exporter), "relabel_configs": rules}
            for name, rules in (("shipped", shipped), ("old", old))
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    api = f"http://127.0.0.1:{port}"
    try:
        brain = wait_for_series(api, 'stockade_brain_node_agent_connected{job="shipped"}', 2, proc, log)
        assert {r["metric"]["node"]: r["value"][1] for r in brain} == {"node-a": "1", "node-b": "0"}
        assert not [r for r in brain if "exported_node" in r["metric"]]
        (agent,) = wait_for_series(api, 'stockade_agent_brain_connected{job="shipped"}', 1, proc, log)
        assert agent["metric"]["node"] == AGENT_POD_NODE
        # The old rule: every brain series named the brain's own node, the real one pushed aside.
        before = wait_for_series(api, 'stockade_brain_node_agent_connected{job="old"}', 2, proc, log)
        assert {r["metric"]["node"] for r in before} == {BRAIN_POD_NODE}
        assert {r["metric"]["exported_node"] for r in before} == {"node-a", "node-b"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
