"""Echo servers for the pods: every declared container port of every pod, from one process.

Each pod's sockets are created inside the pod's network namespace (see `nsenter`) and then
served by one asyncio loop, so a lab of many pods costs one process, not one per pod or port.
TCP and (where the kernel has it) SCTP echo what they receive; UDP echoes each datagram. Each
port is served in every family the pod has an address in, by one socket per family.

A host-network pod's sockets are in its node's namespace (its plan's netns). There its UDP ones
are bound to the node's addresses, not the wildcard: an echo from a wildcard socket leaves with
the source address the route back picks, and back to a pod of the same node that is the gateway
facing the pods (on its veth, or the pod bridge), not the address the pod sent to: its client
would drop the reply. TCP replies go from the connection's own address: its sockets stay wildcard.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

from stockade.lab import nsenter
from stockade.lab.topology import PodPlan, family_of

log = logging.getLogger(__name__)


def sctp_supported() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
        return True
    except OSError:
        return False


class _StreamEcho(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


class _DatagramEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


@dataclass
class PodServers:
    pod: str
    closers: list[asyncio.BaseTransport | asyncio.AbstractServer] = field(default_factory=list)

    def close(self) -> None:
        for c in self.closers:
            c.close()


def _listening_socket(netns: str, family: str, protocol: str, port: int, address: str | None = None) -> socket.socket:
    """Bound to `address`, or to every address of the family."""
    kind, proto = {
        "TCP": (socket.SOCK_STREAM, 0),
        "UDP": (socket.SOCK_DGRAM, 0),
        "SCTP": (socket.SOCK_STREAM, socket.IPPROTO_SCTP),
    }[protocol]
    af = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
    s = nsenter.socket_in(netns, af, kind, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if af == socket.AF_INET6:  # one socket per family: an IPv6 one never answers for IPv4
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((address or ("::" if af == socket.AF_INET6 else "0.0.0.0"), port))
    if kind == socket.SOCK_STREAM:
        s.listen(128)
    s.setblocking(False)
    return s


async def serve_pod(pod: PodPlan, sctp: bool) -> PodServers:
    loop = asyncio.get_running_loop()
    out = PodServers(pod.key)
    for ip in pod.ips:  # every family the pod has an address in
        family = family_of(ip)
        for protocol, port in pod.ports:
            if protocol == "SCTP" and not sctp:
                continue
            address = ip if pod.host_network and protocol == "UDP" else None  # see the module's docstring
            try:
                sock = _listening_socket(pod.netns, family, protocol, port, address)
                if protocol == "UDP":
                    transport, _ = await loop.create_datagram_endpoint(_DatagramEcho, sock=sock)
                    out.closers.append(transport)
                else:
                    out.closers.append(await loop.create_server(_StreamEcho, sock=sock))
            except OSError as e:
                log.error("pod %s: cannot serve %s/%d over %s: %s", pod.key, protocol, port, family, e)
    return out
