"""`stockade version`: the CLI's release and sync protocol, and the brain's and every agent's.

The CLI's part is always answered; the brain's when it can be reached (one ListNodes call,
which carries the brain's release and protocol and each node's agent version and protocol).
An unreachable or refusing brain is said in the output, not in the exit code: 0 unless the
usage is bad, so that `stockade version` works where nothing else does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import grpc

from stockade.cli import exits, jsonout
from stockade.cli.client import add_connection_args, metadata, resolve, stub
from stockade.cli.printable import printable
from stockade.codec.version import MIN_PEER, PROTOCOL, release
from stockade.v1 import admin_pb2


def _client() -> dict[str, Any]:
    return {"version": release(), "protocol": PROTOCOL, "minProtocol": MIN_PEER}


def _unreachable(address: str, error: str) -> dict[str, Any]:
    """The brain's part when it cannot be asked: every field there, empty but ``error``."""
    return {
        "address": address, "reachable": False, "error": error, "version": "", "protocol": 0, "minProtocol": 0,
        "agents": [],
    }  # fmt: skip


async def _ask(args: argparse.Namespace) -> dict[str, Any]:
    """The brain's part: reachable or not, and why not."""
    try:
        conn = resolve(args)
    except exits.CliError as e:
        return _unreachable("", str(e))
    try:
        ch, s = stub(conn)
    except exits.CliError as e:
        return _unreachable(conn.address, str(e))
    try:
        resp = await s.ListNodes(admin_pb2.ListNodesRequest(), metadata=metadata(conn), timeout=conn.timeout)
    except grpc.aio.AioRpcError as e:
        return _unreachable(conn.address, f"{e.code().name}: {e.details() or ''}")
    finally:
        await ch.close(None)
    agents = [
        {"node": n.name, "connected": n.connected, "version": n.agent_version, "protocol": n.protocol}
        for n in resp.nodes
    ]
    return {
        "address": conn.address,
        "reachable": True,
        "error": "",
        # "" and 0: a brain older than these fields
        "version": resp.brain_version,
        "protocol": resp.brain_protocol,
        "minProtocol": resp.brain_min_protocol,
        "agents": agents,
    }


def _text(doc: dict[str, Any]) -> str:
    c = doc["client"]
    lines = [f"CLI:    stockade {c['version']} (sync protocol {c['protocol']})"]
    b = doc["brain"]
    if b is None:
        return lines[0]
    if not b["reachable"]:
        where = f" at {b['address']}" if b["address"] else ""
        lines.append(f"Brain:  not reachable{where}: {printable(b['error'])}")
        return "\n".join(lines)
    version = printable(b["version"]) or "unknown (a brain older than this field)"
    proto = f"sync protocol {b['protocol']}, accepts agents from {b['minProtocol']}" if b["protocol"] else "protocol ?"
    lines.append(f"Brain:  stockade {version} at {b['address']} ({proto})")
    if not b["agents"]:
        lines.append("Agents: none known")
    for a in b["agents"]:
        if not a["protocol"]:
            lines.append(f"Agent:  {printable(a['node'])}: no agent has connected")
            continue
        state = "" if a["connected"] else ", not connected now"
        lines.append(
            f"Agent:  {printable(a['node'])}: {printable(a['version']) or 'unknown'} "
            f"(sync protocol {a['protocol']}{state})"
        )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    # --client: the brain's part is null (not asked)
    doc: dict[str, Any] = {"client": _client(), "brain": None if args.client else asyncio.run(_ask(args))}
    print(
        jsonout.render(args.output, jsonout.envelope(jsonout.VERSION, doc))
        if jsonout.is_document(args.output)
        else _text(doc)
    )
    if not args.client and not doc["brain"]["reachable"]:
        print("stockade: the brain's and agents' versions are unknown (see above)", file=sys.stderr)
    return exits.OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "version",
        help="the CLI's, the brain's and every agent's version and sync protocol",
        description="Print the CLI's release and sync protocol, then the brain's and each node agent's when "
        "the brain can be reached. Exits 0 even when it cannot (that is said in the output).",
    )
    p.add_argument("--client", action="store_true", help="the CLI's version only: do not ask the brain")
    add_connection_args(p)
    p.set_defaults(handler=_run)
