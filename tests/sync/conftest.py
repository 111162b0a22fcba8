from __future__ import annotations

from pathlib import Path

import pytest

from stockade.tls import ClientTLS, ServerTLS, write_bundle

NODES = [f"node-{i}" for i in range(60)]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    write_bundle(out, NODES, ["localhost", "127.0.0.1"])
    return out


@pytest.fixture(scope="session")
def server_tls(certs: Path) -> ServerTLS:
    return ServerTLS.from_dir(certs)


@pytest.fixture(scope="session")
def client_tls(certs: Path):  # type: ignore[no-untyped-def]
    return lambda node: ClientTLS.from_dir(certs, node)
