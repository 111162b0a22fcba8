"""End established connections that a new rule model forbids (conntrack entries, via netlink).

The nftables/iptables rules accept ``ct state established,related`` first, so tightening a
policy alone would leave running connections untouched. After an apply that can forbid
something (`may_forbid`), the agent lists the node's conntrack table and deletes the entries
whose flow the new model denies (through every tier: Admin, NetworkPolicy, Baseline); the next
packet of such a connection is then judged as new by the pod chains and dropped.

A flow between a pod and an address of the node itself (the host, host-network pods, the
kubelet) is judged as the dataplane's input path judges it: a pod's connection to its node
goes through the ClusterNetworkPolicy tiers but no NetworkPolicy (`decide`'s ``own_node``), and
the node's connections to its pods are never filtered. So clean-up reads the node's local
addresses too, in the same namespace, each time.

`flows_to_end` is the pure decision. The I/O speaks ctnetlink directly (dump, then batched
deletes) in the node's network namespace: pyroute2's NFCTSocket decodes ~400 entries/s here, so
a 10,000-flow table took 25 s to judge; this walks it in well under a second.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from stockade.model.evaluate import decide
from stockade.model.rules import CNP_TIERS, Action, Direction, NodeDelta, NodeModel, Protocol, Tier

log = logging.getLogger(__name__)

_PROTOCOLS = {socket.IPPROTO_TCP: Protocol.TCP, socket.IPPROTO_UDP: Protocol.UDP, 132: Protocol.SCTP}


class EntryKey(NamedTuple):
    """What names one conntrack entry to the kernel: its original tuple, zone and id."""

    src: str
    dst: str
    sport: int
    dport: int
    zone: int | None = None
    ct_id: int | None = None  # with it, a delete cannot hit a newer entry that reused the tuple


@dataclass(frozen=True, slots=True)
class TrackedFlow:
    """A conntrack entry as the pod chains see it.

    The filter runs after DNAT, so the destination is where the connection really goes: the
    reply tuple's source (a Service VIP in the original tuple becomes the backend pod). Source
    NAT happens after the filter, so the source is the original one.
    """

    family: int
    protocol: int  # IP protocol number
    src: str
    sport: int
    dst: str
    dport: int
    entry: EntryKey = field(compare=False)


# -- the decision (pure) -----------------------------------------------------------------------


def flow_verdict(
    model: NodeModel, local_pods: Collection[str], flow: TrackedFlow, local_addrs: Collection[str] = ()
) -> str | None:
    """The chain that now denies ``flow`` (``None``: allowed, or not ours to judge).

    Ingress is judged on the destination pod if it is local, egress on the source pod if it is
    local (through every tier: `evaluate.decide`); a flow touching no local pod that some chain
    judges is left alone, as are protocols the model has no rules for (ICMP and the like).
    ``local_addrs``: the node's own addresses (canonical). A flow from one of them to a pod is
    never filtered; a pod's flow to one is egress to its own node (``own_node``).
    """
    protocol = _PROTOCOLS.get(flow.protocol)
    if protocol is None:
        return None
    if flow.dst in local_pods and flow.src not in local_addrs:
        v = decide(model, Direction.INGRESS, flow.dst, flow.src, protocol, flow.dport)
        if not v.allowed:
            return v.chain
    if flow.src in local_pods:
        v = decide(model, Direction.EGRESS, flow.src, flow.dst, protocol, flow.dport, flow.dst in local_addrs)
        if not v.allowed:
            return v.chain
    return None


def flows_to_end(
    model: NodeModel, local_pods: Collection[str], flows: Iterable[TrackedFlow], local_addrs: Collection[str] = ()
) -> list[TrackedFlow]:
    """The flows ``model`` forbids, among those touching the node's pods (``local_pods``: IPs;
    ``local_addrs``: the node's own addresses, see `flow_verdict`)."""
    pods = _canonical(local_pods)
    addrs = _canonical_addresses(local_addrs)
    verdicts: dict[tuple[str, str, int, int], bool] = {}  # many connections share a client and port
    out = []
    for f in flows:
        key = (f.src, f.dst, f.protocol, f.dport)
        deny = verdicts.get(key)
        if deny is None:
            deny = verdicts[key] = flow_verdict(model, pods, f, addrs) is not None
        if deny:
            out.append(f)
    return out


def may_forbid(delta: NodeDelta, model: NodeModel | None = None) -> bool:
    """Can ``delta`` deny a flow its predecessor allowed? (``model``: the model it produced.)

    Elements leaving a set and sets going can (an Accept matches less). So can any pod put in a
    dispatch of the NetworkPolicy tier (newly isolated, or another chain), of the Admin tier (a
    new Deny, or Accepts that no longer cover a NetworkPolicy deny), of the Baseline tier (a new
    Deny), and a pod taken out of an Admin dispatch (its Accepts go: a NetworkPolicy or Baseline
    deny it covered now decides). A pod taken out of a NetworkPolicy or Baseline dispatch only
    allows more (the invariant keeps a pod out of both in one direction, so a pod leaving the
    NetworkPolicy dispatch for the Baseline one is in the Baseline upserts).

    Elements joining a set allow more, except through a tier rule that then matches more: a
    Deny, or an Admin Pass (it hands the flow to the tiers below, past the Admin Accepts after
    it). Those rules are in ``model``; without it, joining elements are taken to allow more, as
    before tiers (right for a model without tier chains)."""
    if any(delta.set_removed.values()) or delta.removed_sets:
        return True
    for direction in Direction:
        if delta.dispatch_set(direction) or delta.dispatch_removed(direction, Tier.ADMIN):
            return True
        if any(delta.dispatch_set(direction, tier) for tier in CNP_TIERS):
            return True
    joined = {sid for sid, elems in delta.set_added.items() if elems}
    return bool(joined and model is not None and joined & _sets_that_can_forbid(model))


def _sets_that_can_forbid(model: NodeModel) -> set[str]:
    """The sets whose new elements can forbid a flow: peers of tier rules that deny, or pass in
    the Admin tier."""
    out: set[str] = set()
    for chain in model.chains.values():
        if chain.tier is Tier.NETPOL:
            continue
        for rule in chain.rules:
            forbids = rule.action is Action.DENY or (rule.action is Action.PASS and chain.tier is Tier.ADMIN)
            if forbids and rule.peer is not None:
                out.add(rule.peer)
    return out


def _canonical(ips: Collection[str]) -> frozenset[str]:
    # the kernel's addresses come out in canonical form; normalise ours so IPv6 spellings compare
    out = set()
    for ip in ips:
        try:
            out.add(str(ipaddress.ip_address(ip.split("/")[0])))
        except ValueError:
            # a pod we cannot place in a family would have its flows never examined: refuse
            raise ConntrackError(f"local pod address {ip[:80]!r} is neither IPv4 nor IPv6") from None
    return frozenset(out)


def _canonical_addresses(ips: Collection[str]) -> frozenset[str]:
    # the node's own addresses: one that is no address matches no flow, so it is skipped
    out = set()
    for ip in ips:
        try:
            out.add(str(ipaddress.ip_address(ip.split("/")[0].split("%")[0])))
        except ValueError:
            continue
    return frozenset(out)


# -- ctnetlink on the wire ---------------------------------------------------------------------

_NETLINK_NETFILTER = 12
_SUBSYS_CTNETLINK = 1
_MSG_CT_NEW, _MSG_CT_GET, _MSG_CT_DELETE = 0, 1, 2
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_DUMP = 0x1, 0x4, 0x300
_NLA_F_NESTED = 0x8000
_NLA_TYPE_MASK = 0x3FFF
# attribute types (linux/netfilter/nfnetlink_conntrack.h)
_CTA_TUPLE_ORIG, _CTA_TUPLE_REPLY, _CTA_ID, _CTA_ZONE = 1, 2, 12, 18
_CTA_TUPLE_IP, _CTA_TUPLE_PROTO = 1, 2
_CTA_IP_V4_SRC, _CTA_IP_V4_DST, _CTA_IP_V6_SRC, _CTA_IP_V6_DST = 1, 2, 3, 4
_CTA_PROTO_NUM, _CTA_PROTO_SRC_PORT, _CTA_PROTO_DST_PORT = 1, 2, 3

_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("!BBH")
_NLA = struct.Struct("=HH")
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_ERRNO = struct.Struct("=i")
_SO_RCVBUFFORCE = 33


class Tuple(NamedTuple):
    src: str
    dst: str
    proto: int
    sport: int
    dport: int


def _attrs(data: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, start, stop) of each attribute in data[off:end]."""
    while off + 4 <= end:
        length, kind = _NLA.unpack_from(data, off)
        if length < 4 or off + length > end:
            return
        yield kind & _NLA_TYPE_MASK, off + 4, off + length
        off += (length + 3) & ~3


# The layouts the kernel writes for a TCP/UDP/SCTP tuple of either family: IP nest {src, dst},
# proto nest {number, sport, dport}. Read in one unpack when the headers match; anything else
# (ICMP, a zone) takes the general walk.
_V4_TUPLE = struct.Struct("=HHHH4sHH4sHHHHB3xHHH2xHHH2x")
_V4_HEADERS = (20, _CTA_TUPLE_IP, 8, _CTA_IP_V4_SRC, 8, _CTA_IP_V4_DST, 28, _CTA_TUPLE_PROTO, 5, 1, 6, 2, 6, 3)
_V6_TUPLE = struct.Struct("=HHHH16sHH16sHHHHB3xHHH2xHHH2x")
_V6_HEADERS = (44, _CTA_TUPLE_IP, 20, _CTA_IP_V6_SRC, 20, _CTA_IP_V6_DST, 28, _CTA_TUPLE_PROTO, 5, 1, 6, 2, 6, 3)
_FAST = {
    _V4_TUPLE.size: (_V4_TUPLE, _V4_HEADERS, socket.AF_INET),
    _V6_TUPLE.size: (_V6_TUPLE, _V6_HEADERS, socket.AF_INET6),
}


def _tuple(data: bytes, off: int, end: int) -> Tuple | None:
    fast = _FAST.get(end - off)
    if fast is not None:
        layout, expected, fam = fast
        f = layout.unpack_from(data, off)
        headers = (f[0], f[1] & _NLA_TYPE_MASK, *f[2:4], *f[5:7], f[8], f[9] & _NLA_TYPE_MASK, *f[10:12], *f[13:15])
        if (*headers, *f[16:18]) == expected:
            return Tuple(
                socket.inet_ntop(fam, f[4]),
                socket.inet_ntop(fam, f[7]),
                f[12],
                socket.ntohs(f[15]),
                socket.ntohs(f[18]),
            )
    src = dst = None
    proto = sport = dport = 0
    for kind, a, b in _attrs(data, off, end):
        if kind == _CTA_TUPLE_IP:
            for ik, ia, ib in _attrs(data, a, b):
                fam = socket.AF_INET if ik in (_CTA_IP_V4_SRC, _CTA_IP_V4_DST) else socket.AF_INET6
                text = socket.inet_ntop(fam, data[ia:ib])
                if ik in (_CTA_IP_V4_SRC, _CTA_IP_V6_SRC):
                    src = text
                elif ik in (_CTA_IP_V4_DST, _CTA_IP_V6_DST):
                    dst = text
        elif kind == _CTA_TUPLE_PROTO:
            for pk, pa, _pb in _attrs(data, a, b):
                if pk == _CTA_PROTO_NUM:
                    proto = data[pa]
                elif pk == _CTA_PROTO_SRC_PORT:
                    (sport,) = _BE16.unpack_from(data, pa)
                elif pk == _CTA_PROTO_DST_PORT:
                    (dport,) = _BE16.unpack_from(data, pa)
    if src is None or dst is None:
        return None
    return Tuple(src, dst, proto, sport, dport)


def parse_entry(data: bytes, off: int, end: int, family: int) -> TrackedFlow | None:
    """One IPCTNL_MSG_CT_NEW body (nfgenmsg + attributes) as a flow."""
    orig = reply = None
    zone = ct_id = None
    for kind, a, b in _attrs(data, off + _NFGEN.size, end):
        if kind == _CTA_TUPLE_ORIG:
            orig = _tuple(data, a, b)
        elif kind == _CTA_TUPLE_REPLY:
            reply = _tuple(data, a, b)
        elif kind == _CTA_ID and b - a >= 4:
            (ct_id,) = _BE32.unpack_from(data, a)
        elif kind == _CTA_ZONE and b - a >= 2:
            (zone,) = _BE16.unpack_from(data, a)
    if orig is None or reply is None:
        return None
    key = EntryKey(orig.src, orig.dst, orig.sport, orig.dport, zone, ct_id)
    return TrackedFlow(family, orig.proto, orig.src, orig.sport, reply.src, reply.sport, key)


def _nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (((length + 3) & ~3) - length)


def delete_message(seq: int, flow: TrackedFlow) -> bytes:
    """IPCTNL_MSG_CT_DELETE naming ``flow``'s entry by original tuple (and zone, id)."""
    e = flow.entry
    v4 = flow.family == socket.AF_INET
    src_t, dst_t = (_CTA_IP_V4_SRC, _CTA_IP_V4_DST) if v4 else (_CTA_IP_V6_SRC, _CTA_IP_V6_DST)
    ip = _nla(src_t, socket.inet_pton(flow.family, e.src)) + _nla(dst_t, socket.inet_pton(flow.family, e.dst))
    proto = _nla(_CTA_PROTO_NUM, bytes([flow.protocol]))
    if flow.protocol in _PROTOCOLS:
        proto += _nla(_CTA_PROTO_SRC_PORT, _BE16.pack(e.sport)) + _nla(_CTA_PROTO_DST_PORT, _BE16.pack(e.dport))
    attrs = _nla(
        _CTA_TUPLE_ORIG | _NLA_F_NESTED,
        _nla(_CTA_TUPLE_IP | _NLA_F_NESTED, ip) + _nla(_CTA_TUPLE_PROTO | _NLA_F_NESTED, proto),
    )
    if e.ct_id is not None:
        attrs += _nla(_CTA_ID, _BE32.pack(e.ct_id))
    if e.zone is not None:
        attrs += _nla(_CTA_ZONE, _BE16.pack(e.zone))
    body = _NFGEN.pack(flow.family, 0, 0) + attrs
    kind = (_SUBSYS_CTNETLINK << 8) | _MSG_CT_DELETE
    return _NLMSG.pack(16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_ACK, seq, 0) + body


class ConntrackError(Exception):
    """The kernel refused to list or delete conntrack entries."""


class CtSocket:
    """A ctnetlink socket in one network namespace: dump a family's table, delete entries."""

    def __init__(self, netns: str | None = None) -> None:
        if netns is not None:
            pr_netns.pushns(netns)  # the socket keeps the namespace it was created in
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        finally:
            if netns is not None:
                pr_netns.popns()
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 4 << 20)
        except PermissionError:
            pass
        self.sock.bind((0, 0))
        self.sock.settimeout(10)
        self.seq = 0
        self._buf = bytearray(1 << 17)

    def close(self) -> None:
        self.sock.close()

    def dump(self, family: int) -> list[TrackedFlow]:
        self.seq += 1
        body = _NFGEN.pack(family, 0, 0)
        kind = (_SUBSYS_CTNETLINK << 8) | _MSG_CT_GET
        self.sock.send(_NLMSG.pack(16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_DUMP, self.seq, 0) + body)
        flows: list[TrackedFlow] = []
        while True:
            n = self.sock.recv_into(self._buf)
            data = bytes(self._buf[:n])
            off = 0
            while off + 16 <= n:
                length, kind, _flags, seq, _pid = _NLMSG.unpack_from(data, off)
                if length < 16 or off + length > n:
                    break
                if kind == _NLMSG_DONE:
                    return flows
                if kind == _NLMSG_ERROR:
                    (err,) = _ERRNO.unpack_from(data, off + 16)
                    if err:
                        raise ConntrackError(f"listing conntrack entries failed: {os.strerror(-err)}")
                elif kind & 0xFF == _MSG_CT_NEW and seq == self.seq:
                    flow = parse_entry(data, off + 16, off + length, family)
                    if flow is not None:
                        flows.append(flow)
                off += (length + 3) & ~3

    def delete(self, flows: list[TrackedFlow], batch: int = 256) -> tuple[list[TrackedFlow], int]:
        """Delete ``flows``' entries; returns those deleted and how many were already gone."""
        deleted: list[TrackedFlow] = []
        gone = 0
        for i in range(0, len(flows), batch):
            chunk = flows[i : i + batch]
            first = self.seq + 1
            self.sock.send(b"".join(delete_message(first + k, f) for k, f in enumerate(chunk)))
            self.seq += len(chunk)
            answers: dict[int, int] = {}
            while len(answers) < len(chunk):
                n = self.sock.recv_into(self._buf)
                data = bytes(self._buf[:n])
                off = 0
                while off + 16 <= n:
                    length, kind, _flags, seq, _pid = _NLMSG.unpack_from(data, off)
                    if length < 16 or off + length > n:
                        break
                    if kind == _NLMSG_ERROR and first <= seq <= self.seq:
                        answers[seq] = -_ERRNO.unpack_from(data, off + 16)[0]
                    off += (length + 3) & ~3
            for k, flow in enumerate(chunk):
                code = answers[first + k]
                if code == 0:
                    deleted.append(flow)
                elif code == errno.ENOENT:
                    gone += 1  # ended (or replaced: the id differs) since the dump
                else:
                    raise ConntrackError(f"deleting a conntrack entry failed: {os.strerror(code)}")
        return deleted, gone


# -- clean-up ----------------------------------------------------------------------------------


@dataclass
class CleanupResult:
    examined: int = 0
    deleted: list[TrackedFlow] = field(default_factory=list)
    already_gone: int = 0  # ended between listing and deleting


def local_addresses(netns: str | None = None) -> set[str]:
    """The addresses of the interfaces of ``netns`` (None: the caller's namespace): the node's
    own, as its input path sees them."""
    if netns is not None:
        pr_netns.pushns(netns)  # the socket keeps the namespace it was created in
    try:
        ipr = IPRoute()
    finally:
        if netns is not None:
            pr_netns.popns()
    try:
        return {
            str(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS"))
            for a in ipr.get_addr()
            if a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
        }
    finally:
        ipr.close()


def _node_addresses(netns: str | None) -> set[str]:
    try:
        return local_addresses(netns)
    except Exception as e:  # the pods' flows can still be judged: only own-node flows are misread
        log.warning("conntrack clean-up: cannot read the node's addresses (own-node flows judged as any): %s", e)
        return set()


def cleanup(
    model: NodeModel,
    local_pods: Collection[str],
    netns: str | None = None,
    local_addrs: Collection[str] | None = None,
) -> CleanupResult:
    """Delete the conntrack entries of the node (in ``netns``) whose flow ``model`` forbids.
    ``local_addrs``: the node's own addresses (None: read from ``netns`` now)."""
    pods = _canonical(local_pods)
    result = CleanupResult()
    families = sorted({socket.AF_INET6 if ":" in ip else socket.AF_INET for ip in pods})
    if not families:
        return result
    addrs = _node_addresses(netns) if local_addrs is None else local_addrs
    ct = CtSocket(netns)
    try:
        for family in families:
            flows = ct.dump(family)
            result.examined += len(flows)
            deleted, gone = ct.delete(flows_to_end(model, pods, flows, addrs))
            result.deleted += deleted
            result.already_gone += gone
    finally:
        ct.close()
    return result


async def cleanup_async(model: NodeModel, local_pods: Collection[str], netns: str | None = None) -> CleanupResult:
    """`cleanup` from asyncio code: the table walk blocks, so it runs in a worker thread."""
    return await asyncio.to_thread(cleanup, model, local_pods, netns)
