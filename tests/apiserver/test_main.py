"""Loading the standalone server's --data files."""

from __future__ import annotations

import json
from pathlib import Path

from stockade.lab.apiserver import ApiServer
from stockade.lab.apiserver.__main__ import load_manifests, parse_args


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
