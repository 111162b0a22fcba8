"""Where a lab keeps its state and what it names things: one place, overridable by environment.

Tests set ``STOCKADE_LAB_DIR``, ``STOCKADE_LAB_PREFIX`` and ``STOCKADE_LAB_PORTS`` so they never
meet a user's lab.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = "/run/stockade-lab"
DEFAULT_PREFIX = "stockade-"


@dataclass(frozen=True)
class LabConfig:
    state_dir: Path
    prefix: str
    port_range: tuple[int, int] | None  # loopback ports the lab may use; None: any free port

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"


def parse_port_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    low, high = int(lo), int(hi or lo)
    if not 0 < low <= high < 65536:
        raise ValueError(f"bad port range {text!r}: expected LOW-HIGH, e.g. 24000-24999")
    return low, high


def from_env(prefix: str | None = None, state_dir: str | None = None) -> LabConfig:
    ports = os.environ.get("STOCKADE_LAB_PORTS")
    return LabConfig(
        state_dir=Path(state_dir or os.environ.get("STOCKADE_LAB_DIR") or DEFAULT_DIR),
        prefix=prefix or os.environ.get("STOCKADE_LAB_PREFIX") or DEFAULT_PREFIX,
        port_range=parse_port_range(ports) if ports else None,
    )
