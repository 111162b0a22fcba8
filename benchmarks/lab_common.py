"""Shared by the lab benchmarks: a private lab (own state dir, name prefix, port range)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
XYZ = ROOT / "examples" / "lab" / "xyz.yaml"  # 3 namespaces x 3 pods, ports 80/81 TCP+UDP


def lab_env() -> dict[str, str]:
    slot = os.environ.get("STOCKADE_TEST_SLOT", "")  # concurrent runs: distinct namespace names
    return {
        **os.environ,
        "STOCKADE_LAB_DIR": tempfile.mkdtemp(prefix="st-lab-bench-"),
        "STOCKADE_LAB_PREFIX": f"st{slot}-lab-b-",
        "STOCKADE_LAB_PORTS": "24900-24999",
    }


def lab(env: dict[str, str], *args: str) -> tuple[float, str]:
    """Run `stockade lab ARGS`; return its wall time in seconds and its output."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "stockade.cli.commands.lab", *args], env=env, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"lab {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return took, res.stdout


def report(name: str, seconds: float, target: float) -> None:
    print(f"{name}: {seconds * 1000:.0f} ms (target {target * 1000:.0f} ms, ratio {seconds / target:.2f})")
