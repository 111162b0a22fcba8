"""The brain the CLI's tests run against (cli_brain.py), one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_brain import Lab, running_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with running_lab(tmp_path_factory.mktemp("cli-brain")) as found:
        yield found
