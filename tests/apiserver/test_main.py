"""Loading the standalone server's --data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockade.lab.apiserver import ApiError, ApiServer
from stockade.lab.apiserver.__main__ import FAULT_INJECTION_ENV, load_manifests, main, parse_args


def test_data_files_json_list_and_yaml_documents(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text(
        json.dumps(
            {
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": "p", "namespace": "n"},
                        "status": {"podIP": "10.0.0.1"},
                    },
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}},
                ],
            }
        )
    )
    (tmp_path / "more.yaml").write_text("apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n---\n")
    objs = load_manifests([str(tmp_path / "cluster.json"), str(tmp_path / "more.yaml")])
    assert [o["kind"] for o in objs] == ["Namespace", "Node", "Pod"]
    server = ApiServer()
    for o in objs:
        server.put_object(o)
    assert server.get_object("Pod", "p", "n")["status"] == {"podIP": "10.0.0.1"}
    args = parse_args(["--port", "0", "--data", "x.yaml", "--token", "t", "--bookmark-interval", "5"])
    assert (args.port, args.data, args.token, args.bookmark_interval) == (0, ["x.yaml"], "t", 5.0)


def test_service_range_flags(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--service-cluster-ip-range", "10.100.0.0/24", "--service-node-port-range", "31000-31010"])
    assert (args.service_cluster_ip_range, args.service_node_port_range) == ("10.100.0.0/24", "31000-31010")
    defaults = parse_args([])
    assert defaults.service_cluster_ip_range == "10.96.0.0/16,fd00:10:96::/112"
    assert defaults.service_node_port_range == "30000-32767"
    assert main(["--service-cluster-ip-range", "10.0.0.0/8"]) == 2
    assert "10.0.0.0/8: at most 1048576 addresses" in capsys.readouterr().err
    assert main(["--service-cluster-ip-range", "10.96.0.0/16,10.97.0.0/16"]) == 2
    assert "at most one IPv4 and one IPv6 range" in capsys.readouterr().err


def test_small_ranges_fill_up_and_say_so() -> None:
    server = ApiServer(service_cidrs=["10.100.0.0/29"], node_port_range="31000-31001")
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}})
    ips = []
    for i in range(6):  # a /29 holds 6 addresses
        svc = {"kind": "Service", "apiVersion": "v1", "metadata": {"name": f"s{i}", "namespace": "n"}}
        ips.append(server.put_object({**svc, "spec": {"ports": [{"port": 80}]}})["spec"]["clusterIP"])
    assert sorted(ips) == [f"10.100.0.{i}" for i in range(1, 7)]
    with pytest.raises(ApiError) as exc:
        server.put_object({**svc, "metadata": {"name": "full", "namespace": "n"}, "spec": {"ports": [{"port": 80}]}})
    assert exc.value.code == 500 and "failed to allocate a serviceIP: range is full" in exc.value.message


def test_fault_injection_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAULT_INJECTION_ENV, raising=False)
    assert parse_args(["--port", "0"]).enable_fault_injection is False
    assert parse_args(["--enable-fault-injection"]).enable_fault_injection is True
    monkeypatch.setenv(FAULT_INJECTION_ENV, "1")
    assert parse_args([]).enable_fault_injection is True
    monkeypatch.setenv(FAULT_INJECTION_ENV, "yes")  # only "1" turns it on
    assert parse_args([]).enable_fault_injection is False


def test_data_files_are_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: [a]}\n")
    assert main(["--port", "0", "--data", str(bad)]) == 2
    assert "cannot unmarshal array into Go struct field ObjectMeta.metadata.labels" in capsys.readouterr().err
