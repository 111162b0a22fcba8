"""The generated code is importable as stockade.v1.* and fresh against protos/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh() -> None:
    out = subprocess.run([sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "fresh" in out.stdout


def test_check_notices_a_stale_tree(tmp_path: Path) -> None:
    # A copy of the repo's protos + generator with one message changed must be reported stale.
    tree = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", tree / "protos")
    shutil.copytree(ROOT / "services/common/stockade/v1", tree / "services/common/stockade/v1")
    (tree / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/gen_protos.py", tree / "scripts/gen_protos.py")
    cmd = [sys.executable, "scripts/gen_protos.py", "--check"]
    assert subprocess.run(cmd, cwd=tree, capture_output=True).returncode == 0
    sync = tree / "protos/stockade/v1/sync.proto"
    sync.write_text(
        sync.read_text().replace("string agent_version = 5;", "string agent_version = 5;\n  string x = 99;")
    )
    out = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    assert out.returncode == 1
    assert "differs:" in out.stdout and "sync_pb2" in out.stdout
    # Regenerating fixes it.
    subprocess.run([sys.executable, "scripts/gen_protos.py"], cwd=tree, check=True, capture_output=True)
    assert subprocess.run(cmd, cwd=tree, capture_output=True).returncode == 0


def test_imports() -> None:
    from stockade.v1 import model_pb2, sync_pb2

    msg = sync_pb2.BrainMessage(snapshot=sync_pb2.Snapshot(model=model_pb2.NodeModel(node="n")))
    assert sync_pb2.BrainMessage.FromString(msg.SerializeToString()).snapshot.model.node == "n"
