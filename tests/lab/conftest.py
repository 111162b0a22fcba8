from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .labenv import Lab


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    prefix = f"st-lab-{abs(hash(request.node.name)) % 10_000}-"
    env = Lab(tmp_path, prefix)
    yield env
    env.run("down", check=False)  # whatever a failed test left
