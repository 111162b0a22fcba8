"""Running `stockade lab` in tests: a private state dir, name prefix and port range per test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from stockade.lab import nsenter


class Lab:
    def __init__(self, tmp: Path, prefix: str) -> None:
        self.dir = tmp / "lab"
        # Concurrent runs on one machine pick distinct slots (STOCKADE_TEST_SLOT): their own
        # namespace names, and (slots 0-9) their own hundred loopback ports.
        slot = os.environ.get("STOCKADE_TEST_SLOT", "")
        prefix = prefix.replace("st-", f"st{slot}-", 1)
        ports = (
            f"{24000 + 100 * int(slot)}-{24099 + 100 * int(slot)}"
            if slot.isdigit() and int(slot) < 10
            else "24000-24999"
        )
        self.prefix = prefix
        self.env = {
            **os.environ,
            "STOCKADE_LAB_DIR": str(self.dir),
            "STOCKADE_LAB_PREFIX": prefix,
            "STOCKADE_LAB_PORTS": ports,
        }

    # A bound for a hung command, not a measure: a lab's `up`, `down` or `apply --wait` on a busy
    # 2-core machine can take well over a minute.
    def run(self, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [sys.executable, "-m", "stockade.cli.commands.lab", *args],
            env=self.env,
            text=True,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"lab {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def namespaces(self) -> list[str]:
        return [n for n in nsenter.list_netns() if n.startswith(self.prefix)]

    def write(self, name: str, text: str) -> str:
        path = self.dir.parent / name
        path.write_text(text)
        return str(path)
