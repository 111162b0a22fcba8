"""Connecting the CLI to a brain's admin API: flags, environment, or the running lab.

Order of precedence for each setting: the flag, then the environment variable, then the lab's
``admin.json`` (written by `stockade lab up` in its state directory), so that inside the lab
every command finds the brain on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from stockade.cli import exits
from stockade.dial import TargetError, parse_targets
from stockade.v1 import admin_pb2_grpc

LAB_DIR_DEFAULT = "/run/stockade-lab"


def add_connection_args(p: argparse.ArgumentParser, output: Sequence[str] = ("table", "json", "yaml")) -> None:
    g = p.add_argument_group("connection (flags, then STOCKADE_* variables, then the running lab)")
    g.add_argument(
        "--brain",
        help="admin API address host:port, or several (h:p,h:p): the first that answers (env STOCKADE_BRAIN)",
    )
    g.add_argument("--token", help="bearer token (env STOCKADE_TOKEN)")
    g.add_argument("--ca", help="CA certificate to verify the brain (env STOCKADE_CA)")
    g.add_argument("--cert", help="client certificate, instead of a token (env STOCKADE_CERT)")
    g.add_argument("--key", help="client key for --cert (env STOCKADE_KEY)")
    g.add_argument("--server-name", help="name to expect in the brain's certificate (env STOCKADE_SERVER_NAME)")
    g.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain text without --ca, credentials included: tests only (env STOCKADE_INSECURE=1)",
    )
    g.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer (default 30)")
    p.add_argument("-o", "--output", choices=list(output), default=output[0], help="output format")


@dataclass
class Connection:
    address: str
    token: str | None
    ca: str | None
    cert: str | None
    key: str | None
    server_name: str | None
    timeout: float
    insecure: bool = False


class ConnectionError(exits.CliError):
    """No channel to the brain: none named (unreachable), or settings that cannot work (usage)."""

    def __init__(self, message: str, code: int = exits.UNREACHABLE) -> None:
        super().__init__(message, code)


def _lab_settings() -> dict[str, Any]:
    path = Path(os.environ.get("STOCKADE_LAB_DIR") or LAB_DIR_DEFAULT) / "admin.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve(args: argparse.Namespace) -> Connection:
    lab = _lab_settings()

    def pick(flag: str, env: str, key: str) -> str | None:
        v = getattr(args, flag, None) or os.environ.get(env) or lab.get(key)
        return str(v) if v else None

    cert = pick("cert", "STOCKADE_CERT", "cert")
    address = pick("brain", "STOCKADE_BRAIN", "brain")
    from_lab = not (getattr(args, "brain", None) or os.environ.get("STOCKADE_BRAIN"))
    if from_lab and isinstance(lab.get("brains"), list) and lab["brains"]:
        address = ",".join(map(str, lab["brains"]))  # every lab brain: the first that answers serves
    if cert and from_lab and lab.get("mtls_brain"):
        # the lab's ports that verify client certificates
        mtls = lab.get("mtls_brains")
        address = ",".join(map(str, mtls)) if isinstance(mtls, list) and mtls else str(lab["mtls_brain"])
    if not address:
        raise ConnectionError(
            "no brain to talk to: pass --brain HOST:PORT (or set STOCKADE_BRAIN), or start a lab with `stockade lab up`"
        )
    return Connection(
        address=address,
        token=pick("token", "STOCKADE_TOKEN", "token"),
        ca=pick("ca", "STOCKADE_CA", "ca"),
        cert=cert,
        key=pick("key", "STOCKADE_KEY", "key"),
        server_name=pick("server_name", "STOCKADE_SERVER_NAME", "server_name"),
        timeout=float(getattr(args, "timeout", 30.0) or 30.0),
        insecure=bool(getattr(args, "insecure", False)) or os.environ.get("STOCKADE_INSECURE") == "1",
    )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConnectionError(f"cannot read {what} {path}: {e.strerror}", exits.USAGE) from None


def grpc_target(address: str) -> str:
    """``--brain`` as a gRPC target. A list of addresses (``H:P,H:P``, one family) becomes one
    target that gRPC tries in order, so the CLI reaches whichever brain is up; a name (a
    Service) stays a name, which gRPC resolves to every brain it has."""
    if "," not in address:
        return address
    try:
        targets = parse_targets(address)
    except TargetError as e:
        raise ConnectionError(str(e), exits.USAGE) from None
    if len(targets) == 1:
        return str(targets[0])
    if any(t.is_name for t in targets):
        raise ConnectionError(
            f"--brain {address}: list IP addresses only (one family), or give one name that resolves to every brain",
            exits.USAGE,
        )
    families = {":" in t.host for t in targets}
    if len(families) > 1:
        raise ConnectionError(f"--brain {address}: IPv4 and IPv6 addresses cannot be mixed in one list", exits.USAGE)
    return ("ipv6:" if families == {True} else "ipv4:") + ",".join(str(t) for t in targets)


def channel(conn: Connection) -> grpc.aio.Channel:
    target = grpc_target(conn.address)
    options: list[tuple[str, Any]] = []
    if conn.server_name:
        options.append(("grpc.ssl_target_name_override", conn.server_name))
    if bool(conn.cert) != bool(conn.key):
        raise ConnectionError("--cert and --key go together: pass both (or neither, and a --token)", exits.USAGE)
    if conn.ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(conn.ca, "CA certificate"),
            private_key=_read(conn.key, "client key") if conn.cert and conn.key else None,
            certificate_chain=_read(conn.cert, "client certificate") if conn.cert and conn.key else None,
        )
        return grpc.aio.secure_channel(target, creds, options=options)
    if conn.cert:
        raise ConnectionError(
            "a client certificate needs TLS: pass --ca with the CA that signed the brain's cert", exits.USAGE
        )
    if conn.token and not conn.insecure:
        # A bearer token in plain text is a token anyone on the path can reuse.
        raise ConnectionError(
            f"refusing to send the token to {conn.address} in plain text: pass --ca CA.crt (env STOCKADE_CA, the CA "
            "that signed the brain's certificate), or --insecure if this brain really runs without TLS (tests only)",
            exits.USAGE,
        )
    return grpc.aio.insecure_channel(target, options=options)


def metadata(conn: Connection) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {conn.token}")] if conn.token else []


def stub(conn: Connection) -> tuple[grpc.aio.Channel, admin_pb2_grpc.AdminStub]:
    ch = channel(conn)
    return ch, admin_pb2_grpc.AdminStub(ch)


def rpc_error_exit(e: grpc.aio.AioRpcError, conn: Connection) -> int:
    """Print an RpcError as an operator-facing message; return its exit code (`exits.GRPC`)."""
    code = e.code()
    details = e.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and details.startswith("the brain "):
        print(f"stockade: {details}", file=sys.stderr)  # reached, but it cannot answer now (try again)
    elif code == grpc.StatusCode.UNAVAILABLE:
        print(f"stockade: cannot reach the brain at {conn.address}: {details}", file=sys.stderr)
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        print(f"stockade: not authenticated: {details}", file=sys.stderr)
    elif code == grpc.StatusCode.PERMISSION_DENIED:
        print(f"stockade: permission denied: {details}", file=sys.stderr)
    elif code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
        print(f"stockade: {details}", file=sys.stderr)
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        print(f"stockade: the brain at {conn.address} did not answer within {conn.timeout:g} s", file=sys.stderr)
    else:
        print(f"stockade: {code.name}: {details}", file=sys.stderr)
    return exits.for_status(code)


Call = Callable[[admin_pb2_grpc.AdminStub, list[tuple[str, str]], float, argparse.Namespace], Awaitable[int]]


def runner(call: Call) -> Callable[[argparse.Namespace], int]:
    """A command's handler: ``call`` with a stub of the brain the settings name, its failures
    turned into their exit codes."""

    def run(args: argparse.Namespace) -> int:
        try:
            conn = resolve(args)
        except exits.CliError as e:
            print(f"stockade: {e}", file=sys.stderr)
            return e.code

        async def go() -> int:
            ch, s = stub(conn)
            try:
                return await call(s, metadata(conn), conn.timeout, args)
            except grpc.aio.AioRpcError as e:
                return rpc_error_exit(e, conn)
            finally:
                await ch.close(None)

        try:
            return asyncio.run(go())
        except exits.CliError as e:  # a bad setting or input file: said in one line
            print(f"stockade: {e}", file=sys.stderr)
            return e.code

    return run
