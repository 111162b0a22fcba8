"""`stockade agent --token-file`: what it needs (a CA bundle, TLS), what it refuses, and that the
token is read again from the file for every call (the kubelet rotates it in place)."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import pytest

from stockade.agent.sync.token import TokenChannelTLS, TokenPlugin, TokenTLSSource
from stockade.cli.commands import agent as agent_cmd
from stockade.tls import write_bundle


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    agent_cmd.register(parser.add_subparsers())
    return parser.parse_args(["agent", "--node", "n1", "--brain", "b:1", *argv])


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    write_bundle(tmp_path, ["n1"], ["localhost"])
    (tmp_path / "token").write_text("header.payload.signature\n")
    return tmp_path


def test_a_token_and_the_ca_are_enough(bundle: Path) -> None:
    cfg = agent_cmd.build_config(parse("--token-file", str(bundle / "token"), "--tls-ca", str(bundle / "ca.crt")))
    assert isinstance(cfg.tls, TokenTLSSource) and cfg.tls.certs is None
    creds = cfg.tls.current()
    assert isinstance(creds, TokenChannelTLS) and creds.cert == b"" and creds.key == b""
    assert creds.ca == (bundle / "ca.crt").read_bytes()
    assert isinstance(creds.credentials(), grpc.ChannelCredentials)
    # with a client certificate too (the brain's --agent-auth both)
    both = agent_cmd.build_config(parse("--token-file", str(bundle / "token"), "--tls-dir", str(bundle)))
    assert (
        isinstance(both.tls, TokenTLSSource) and both.tls.current().cert == (bundle / "nodes" / "n1.crt").read_bytes()
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "needs --tls-ca"),
        (["--tls-ca", "CA", "--insecure"], "never sent in plain text"),
        (["--tls-ca", "KEY"], "holds a private key"),
        (["--tls-ca", "MISSING"], "cannot read TLS file"),
    ],
)
def test_what_it_refuses(bundle: Path, extra: list[str], message: str) -> None:
    files = {"CA": bundle / "ca.crt", "KEY": bundle / "ca-and-key.pem", "MISSING": bundle / "nope.crt"}
    files["KEY"].write_bytes((bundle / "ca.crt").read_bytes() + (bundle / "ca.key").read_bytes())
    argv = [str(files[a]) if a in files else a for a in extra]
    with pytest.raises(agent_cmd.UsageError, match=message):
        agent_cmd.build_config(parse("--token-file", str(bundle / "token"), *argv))


def test_an_empty_or_missing_token_file_is_refused_at_start(bundle: Path) -> None:
    (bundle / "empty").write_text("\n")
    for path, message in ((bundle / "empty", "holds no token"), (bundle / "gone", "cannot read the token file")):
        with pytest.raises(agent_cmd.UsageError, match=message):
            agent_cmd.build_config(parse("--token-file", str(path), "--tls-ca", str(bundle / "ca.crt")))


def test_the_plugin_reads_the_file_at_every_call(bundle: Path) -> None:
    plugin = TokenPlugin(bundle / "token")
    seen: list[tuple[object, object]] = []
    plugin(None, lambda md, err: seen.append((md, err)))  # type: ignore[arg-type]
    (bundle / "token").write_text("rotated.by.kubelet")
    plugin(None, lambda md, err: seen.append((md, err)))  # type: ignore[arg-type]
    (bundle / "token").unlink()
    plugin(None, lambda md, err: seen.append((md, err)))  # type: ignore[arg-type]
    assert seen[0] == ((("authorization", "Bearer header.payload.signature"),), None)
    assert seen[1] == ((("authorization", "Bearer rotated.by.kubelet"),), None)
    assert seen[2][1] is not None  # an error: the call is not made without a token


def test_a_renewed_ca_bundle_is_picked_up_and_a_broken_one_is_not(bundle: Path) -> None:
    import os

    from stockade.tls import make_ca

    src = TokenTLSSource(bundle / "token", bundle / "ca.crt")
    assert (src.version, src.refresh()) == (0, False)
    new_ca = make_ca("stockade-ca-2", days=30).cert
    both = (bundle / "ca.crt").read_bytes() + new_ca
    for data, adopted in ((both, True), (b"not a pem", False), (b"", False)):
        tmp = bundle / "ca.new"
        tmp.write_bytes(data)
        os.replace(tmp, bundle / "ca.crt")  # as a ConfigMap volume swaps its files
        assert src.refresh() is adopted
    assert src.version == 1 and src.current().ca == both  # the last whole bundle stays in use
