"""Refusals: no certificate, another node's certificate, a foreign CA, malformed messages.
Each is refused with a clear status while a well-behaved agent keeps syncing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from sync_helpers import SyntheticCluster, eventually, start_agent, start_brain

from stockade.codec.version import PROTOCOL
from stockade.tls import ClientTLS, write_bundle
from stockade.v1 import sync_pb2

METHOD = "/stockade.v1.Sync/Sync"


async def _exchange(
    address: str,
    creds: grpc.ChannelCredentials | None,
    frames: Sequence[bytes],
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.StatusCode, str, list]:
    """Send raw frames on a Sync stream; return the final status, its details and what came back."""
    channel = (
        grpc.aio.secure_channel(address, creds, options=list(options)) if creds else grpc.aio.insecure_channel(address)
    )
    got: list = []
    async with channel:
        call: Any = channel.stream_stream(
            METHOD, request_serializer=None, response_deserializer=sync_pb2.BrainMessage.FromString
        )()
        try:
            for f in frames:
                await call.write(f)
            await call.done_writing()
            async for msg in call:
                got.append(msg)
            return await call.code(), await call.details(), got
        except grpc.aio.AioRpcError as e:
            return e.code(), e.details() or "", got


def _hello(node: str) -> bytes:
    return sync_pb2.AgentMessage(hello=sync_pb2.Hello(node=node, protocol=PROTOCOL)).SerializeToString()


@pytest.fixture
async def brain_and_watcher(server_tls, client_tls):  # type: ignore[no-untyped-def]
    nodes = ["node-1", "node-2"]
    cluster = SyntheticCluster(nodes, seed=11)
    brain = await start_brain(cluster.model_of, server_tls)
    good = start_agent("node-1", brain.address, client_tls("node-1"))
    await eventually(lambda: good.dataplane.model == cluster.models["node-1"])
    yield cluster, brain, good
    await good.shutdown()
    await brain.stop()


def _creds(tls: ClientTLS) -> grpc.ChannelCredentials:
    return tls.credentials()


async def _still_working(cluster, brain, good) -> None:  # type: ignore[no-untyped-def]
    brain.fanout.on_deltas(cluster.churn(["node-1"]))
    await eventually(lambda: good.dataplane.model == cluster.models["node-1"], what="good agent still in sync")
    assert good.status.connects == 1  # its stream was never disturbed


async def test_without_a_client_certificate(brain_and_watcher, certs: Path) -> None:  # type: ignore[no-untyped-def]
    cluster, brain, good = brain_and_watcher
    creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.crt").read_bytes())
    code, _, got = await _exchange(brain.address, creds, [_hello("node-2")])
    assert code == grpc.StatusCode.UNAVAILABLE and not got  # the TLS handshake fails
    # Plain text to the TLS port: nothing either.
    code, _, got = await _exchange(brain.address, None, [_hello("node-2")])
    assert code == grpc.StatusCode.UNAVAILABLE and not got
    assert "node-2" not in brain.fanout.sessions
    await _still_working(cluster, brain, good)


async def test_certificate_from_another_ca(brain_and_watcher, certs: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster, brain, good = brain_and_watcher
    write_bundle(tmp_path, ["node-2"])  # a different CA that also "names" node-2
    rogue = ClientTLS(
        (tmp_path / "nodes/node-2.crt").read_bytes(),
        (tmp_path / "nodes/node-2.key").read_bytes(),
        (certs / "ca.crt").read_bytes(),
    )
    code, _, got = await _exchange(brain.address, _creds(rogue), [_hello("node-2")])
    assert code == grpc.StatusCode.UNAVAILABLE and not got
    await _still_working(cluster, brain, good)


async def test_another_nodes_certificate(brain_and_watcher, client_tls) -> None:  # type: ignore[no-untyped-def]
    cluster, brain, good = brain_and_watcher
    code, details, got = await _exchange(brain.address, _creds(client_tls("node-3")), [_hello("node-2")])
    assert code == grpc.StatusCode.PERMISSION_DENIED and not got
    assert "node-3" in details and "node-2" in details
    # Not even by naming our own node's rules in a second hello on an authorized stream.
    code, details, got = await _exchange(
        brain.address, _creds(client_tls("node-2")), [_hello("node-2"), _hello("node-1")]
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "only acks" in details
    assert all(m.WhichOneof("kind") != "snapshot" or m.snapshot.model.node == "node-2" for m in got)
    await _still_working(cluster, brain, good)


@pytest.mark.parametrize(
    ("frames", "code", "text"),
    [
        ([b"\xff\xff\xff\xff garbage"], grpc.StatusCode.INVALID_ARGUMENT, "malformed AgentMessage"),
        (
            [sync_pb2.AgentMessage(ack=sync_pb2.Ack(generation=1)).SerializeToString()],
            grpc.StatusCode.INVALID_ARGUMENT,
            "first message must be a hello",
        ),
        ([_hello("Node_2")], grpc.StatusCode.INVALID_ARGUMENT, "not a valid node name"),
        (
            [sync_pb2.AgentMessage(hello=sync_pb2.Hello(node="node-2", digest="xyz")).SerializeToString()],
            grpc.StatusCode.INVALID_ARGUMENT,
            "hello.digest",
        ),
        (
            [_hello("node-2"), sync_pb2.AgentMessage(ack=sync_pb2.Ack(generation=99)).SerializeToString()],
            grpc.StatusCode.INVALID_ARGUMENT,
            "was never sent",
        ),
        ([_hello("node-2") + b"\x00" * 100_000], grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "closed before its hello"),
    ],
    ids=["garbage", "ack-first", "bad-node-name", "bad-digest", "unsent-ack", "oversized", "no-hello"],
)
async def test_malformed_messages_end_only_their_stream(  # type: ignore[no-untyped-def]
    brain_and_watcher, client_tls, frames, code, text
) -> None:
    cluster, brain, good = brain_and_watcher
    got_code, details, _ = await _exchange(brain.address, _creds(client_tls("node-2")), frames)
    assert got_code == code, details
    assert text in details
    await _still_working(cluster, brain, good)
