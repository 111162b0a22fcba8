"""What the node needs so that every pod packet reaches the rules, checked before the agent
says it is ready.

The checks are pure functions of `NodeFacts`; reading the facts and fixing what the agent may
fix (a sysctl, a kernel module) are the edges (`read_facts`, `apply_fix`), and `NodeCheck`
strings them together for the agent. Each backend adds its own needs through its ``preflight``
hook (`stockade.agent.backends.base.Backend`); these are the needs every backend shares:

- Pods on a Linux bridge (weave, flannel, the bridge CNI plugin): frames between two ports of a
  bridge never reach the inet forward hook, and so never the rules, unless br_netfilter is loaded
  and ``net.bridge.bridge-nf-call-iptables`` / ``-ip6tables`` are 1 (per network namespace
  since Linux 5.3).
- IPv6: on a node that has it, a dataplane that filters IPv4 only lets IPv6 pass untouched; and
  a model naming IPv6 pod addresses cannot be enforced on a node without IPv6 (`model_needs`:
  the agent refuses such a generation rather than skipping its addresses).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from stockade.agent import netns as ns
from stockade.model import NodeModel

log = logging.getLogger(__name__)

BRIDGE_SYSCTLS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")
DATAPLANE_TOOLS = ("nft", "iptables-restore", "ip6tables-restore", "ipset")
IPV4, IPV6 = "ipv4", "ipv6"

# Problem codes, also the reason buckets of the agent's readiness metric.
BR_NETFILTER = "br_netfilter"
BRIDGE_SYSCTL = "bridge_sysctl"
IPV6_UNENFORCED = "ipv6_unenforced"
IPV6_UNSUPPORTED = "ipv6_unsupported"
CHECK_FAILED = "check_failed"


# -- what is read ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bridge:
    name: str
    ports: tuple[str, ...]


@dataclass(frozen=True)
class NodeFacts:
    """What the checks look at, read from the node's network namespace."""

    bridges: tuple[Bridge, ...] = ()
    br_netfilter: bool = False  # /proc/sys/net/bridge exists: the module is loaded (or built in)
    sysctls: Mapping[str, str] = field(default_factory=dict)  # the BRIDGE_SYSCTLS that exist
    ipv6: str = "enabled"  # "enabled", "disabled" (disable_ipv6=1) or "absent" (no /proc/sys/net/ipv6)
    tools: frozenset[str] = frozenset()  # the DATAPLANE_TOOLS on PATH

    @property
    def has_ipv6(self) -> bool:
        return self.ipv6 == "enabled"

    def bridges_with_ports(self) -> list[Bridge]:
        return [b for b in self.bridges if b.ports]


# -- what is wrong, and what would fix it ---------------------------------------------------------


@dataclass(frozen=True)
class SetSysctl:
    key: str
    value: str

    def command(self) -> str:
        return f"sysctl -w {self.key}={self.value}"


@dataclass(frozen=True)
class LoadModule:
    name: str

    def command(self) -> str:
        return f"modprobe {self.name}"


Fix = SetSysctl | LoadModule


@dataclass(frozen=True)
class Problem:
    """Something that lets pod traffic bypass the rules (or keeps them out of the kernel)."""

    code: str  # one of the codes above (a backend may add its own)
    message: str  # for the operator: what is wrong and exactly what to enable
    fixes: tuple[Fix, ...] = ()  # what the agent may do itself, in order

    def noting(self, text: str) -> Problem:
        return Problem(self.code, f"{self.message} ({text})", self.fixes)


def _ports(bridges: Sequence[Bridge]) -> str:
    parts = []
    for b in bridges[:3]:
        shown = ", ".join(b.ports[:3]) + (f" and {len(b.ports) - 3} more" if len(b.ports) > 3 else "")
        parts.append(f"{b.name} (ports {shown})")
    return ", ".join(parts) + (f" and {len(bridges) - 3} more bridges" if len(bridges) > 3 else "")


def bridge_needs(facts: NodeFacts) -> list[Problem]:
    """Bridged pod traffic reaches the inet hooks only through br_netfilter with both sysctls at 1."""
    bridges = facts.bridges_with_ports()
    if not bridges:
        return []
    where = f"traffic between pods on bridge {_ports(bridges)} bypasses the rules"
    wanted = tuple(SetSysctl(k, "1") for k in BRIDGE_SYSCTLS)
    if not facts.br_netfilter:
        steps = "; ".join([LoadModule("br_netfilter").command(), *(f.command() for f in wanted)])
        fixes: tuple[Fix, ...] = (LoadModule("br_netfilter"), *wanted)
        return [Problem(BR_NETFILTER, f"{where}: br_netfilter is not loaded; enable it: {steps}", fixes)]
    off = [f for f in wanted if facts.sysctls.get(f.key, "").strip() != "1"]
    if not off:
        return []
    state = ", ".join(f"{f.key} is {facts.sysctls.get(f.key, 'missing')}" for f in off)
    steps = "; ".join(f.command() for f in off)
    return [Problem(BRIDGE_SYSCTL, f"{where}: {state}; enable it: {steps}", tuple(off))]


def ipv6_needs(facts: NodeFacts, families: Collection[str], backend: str) -> list[Problem]:
    """A node with IPv6 needs a dataplane that filters it: otherwise IPv6 passes untouched."""
    if not facts.has_ipv6 or IPV6 in families:
        return []
    return [
        Problem(
            IPV6_UNENFORCED,
            f"this node has IPv6 but the {backend} dataplane enforces {'/'.join(sorted(families)) or 'nothing'} only: "
            "IPv6 pod traffic would bypass the rules; use a dataplane that enforces IPv6, or disable IPv6 on "
            "the node: sysctl -w net.ipv6.conf.all.disable_ipv6=1",
        )
    ]


def shared_needs(facts: NodeFacts, families: Collection[str], backend: str) -> list[Problem]:
    """What every backend needs of the node (the default of the backends' ``preflight`` hook)."""
    return bridge_needs(facts) + ipv6_needs(facts, families, backend)


def missing_tool(facts: NodeFacts, tool: str, why: str, code: str = IPV6_UNENFORCED) -> list[Problem]:
    """For a backend's hook: a command it needs, e.g. ``missing_tool(facts, "ip6tables-restore",
    "IPv6 pod traffic would bypass the rules")`` on a node with IPv6."""
    if tool in facts.tools:
        return []
    return [Problem(code, f"{tool} is not installed: {why}")]


def ipv6_pods(model: NodeModel) -> list[str]:
    """The node's pod addresses of the IPv6 family (dispatch keys are canonical addresses)."""
    return sorted({ip for ip in (*model.ingress, *model.egress) if ":" in ip})


def model_needs(model: NodeModel, facts: NodeFacts, families: Collection[str], backend: str) -> str | None:
    """Why the agent must refuse to enforce ``model`` here, or None.

    Only the node's own pod addresses count: an IPv6 peer in a set matches nothing on a node
    without IPv6 (there are no such packets), but an IPv6 pod is traffic the rules must see.
    """
    pods = ipv6_pods(model)
    if not pods:
        return None
    shown = ", ".join(pods[:3]) + (f" and {len(pods) - 3} more" if len(pods) > 3 else "")
    if not facts.has_ipv6:
        kernel = (
            "has no IPv6 (/proc/sys/net/ipv6 is missing)"
            if facts.ipv6 == "absent"
            else "has IPv6 disabled (net.ipv6.conf.all.disable_ipv6=1)"
        )
        return (
            f"the model names IPv6 pod addresses ({shown}) but this node's kernel {kernel}: they cannot be "
            "enforced; enable IPv6 on the node or give its pods IPv4 addresses only"
        )
    if IPV6 not in families:
        return (
            f"the model names IPv6 pod addresses ({shown}) but the {backend} dataplane enforces "
            f"{'/'.join(sorted(families)) or 'nothing'} only"
        )
    return None


# -- the edges: reading the node, fixing it -------------------------------------------------------


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None  # "bridge", "veth", ... (None: a plain device)
    master: int | None  # the index of the device it is enslaved to


def bridges_of(links: Iterable[Link]) -> tuple[Bridge, ...]:
    """The bridges among ``links``, each with the names of its ports."""
    links = list(links)
    bridges = {link.index: link.name for link in links if link.kind == "bridge"}
    ports: dict[int, list[str]] = {i: [] for i in bridges}
    for link in links:
        if link.master in ports:
            ports[link.master].append(link.name)
    return tuple(Bridge(name, tuple(sorted(ports[i]))) for i, name in sorted(bridges.items(), key=lambda b: b[1]))


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def _read_links() -> list[Link]:
    # Netlink, not `ip` (the agent's image has no iproute2) and not /sys (which shows the
    # namespace it was mounted in): a socket speaks for the namespace of the thread that made it.
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [
            Link(int(m["index"]), str(m.get_attr("IFLA_IFNAME")), m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                 m.get_attr("IFLA_MASTER"))
            for m in ipr.get_links()
        ]  # fmt: skip


def _read_node() -> tuple[tuple[Bridge, ...], bool, dict[str, str], str]:
    # /proc/sys/net and netlink are the calling thread's network namespace: call inside the node's.
    bridges = bridges_of(_read_links())
    br = os.path.isdir("/proc/sys/net/bridge")
    sysctls = {k: v for k in BRIDGE_SYSCTLS if (v := _read(_sysctl_path(k))) is not None}
    if not os.path.isdir("/proc/sys/net/ipv6"):
        ipv6 = "absent"
    else:
        ipv6 = "disabled" if _read("/proc/sys/net/ipv6/conf/all/disable_ipv6") == "1" else "enabled"
    return bridges, br, sysctls, ipv6


def read_facts(netns: str | None = None) -> NodeFacts:
    """The facts of ``netns`` (None: the namespace we run in). Blocking: run it in a thread."""
    if netns is None:
        bridges, br, sysctls, ipv6 = _read_node()
    else:
        with ns.entered(netns):
            bridges, br, sysctls, ipv6 = _read_node()
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    tools = frozenset(t for t in DATAPLANE_TOOLS if shutil.which(t, path=path) is not None)
    return NodeFacts(bridges, br, sysctls, ipv6, tools)


def apply_fix(fix: Fix, netns: str | None = None) -> str | None:
    """Do ``fix`` in ``netns``; None when done, else why it failed. Blocking."""
    if isinstance(fix, LoadModule):
        try:
            proc = subprocess.run(["modprobe", fix.name], capture_output=True, text=True, timeout=30)
        except OSError as e:
            return str(e)
        return None if proc.returncode == 0 else (proc.stderr.strip() or f"modprobe exited {proc.returncode}")

    def write() -> None:
        with open(_sysctl_path(fix.key), "w") as f:
            f.write(fix.value)

    try:
        if netns is None:
            write()
        else:
            with ns.entered(netns):
                write()
    except OSError as e:
        return e.strerror or str(e)
    return None


# -- the agent's view: check, fix where allowed, remember -----------------------------------------


class NodeCheck:
    """Runs the checks for the agent and remembers the outcome (not thread-safe: one caller).

    ``needs``: the backend's hook (shared needs plus its own); ``fix``: `apply_fix` bound to the
    namespace, or None when the agent may not change the node (``--no-fix-sysctls``).
    """

    def __init__(
        self,
        read: Callable[[], NodeFacts],
        needs: Callable[[NodeFacts], list[Problem]],
        fix: Callable[[Fix], str | None] | None,
    ) -> None:
        self.read = read
        self.needs = needs
        self.fix = fix
        self.facts: NodeFacts | None = None
        self.problems: list[Problem] = []
        self.fixed: list[str] = []  # commands the agent ran, newest last (for logs and tests)

    def run(self) -> list[Problem]:
        """Read, fix what may be fixed, read again; the problems left. Blocking."""
        try:
            facts = self.read()
            problems = self.needs(facts)
            failed: dict[Fix, str] = {}
            if problems and self.fix is not None:
                done = False
                for fix in _unique(f for p in problems for f in p.fixes):
                    error = self.fix(fix)
                    if error is None:
                        done = True
                        self.fixed.append(fix.command())
                        log.warning("node setting fixed so bridged pod traffic reaches the rules: %s", fix.command())
                    else:
                        failed[fix] = error
                if done:
                    facts = self.read()
                    problems = self.needs(facts)
            self.facts, self.problems = facts, [_noted(p, failed, self.fix is None) for p in problems]
        except Exception as e:  # fail closed: a node that cannot be checked is not ready
            self.problems = [Problem(CHECK_FAILED, f"cannot check the node: {e}")]
        return self.problems


def _unique(fixes: Iterable[Fix]) -> list[Fix]:
    return list(dict.fromkeys(fixes))


def _noted(problem: Problem, failed: Mapping[Fix, str], not_allowed: bool) -> Problem:
    if not problem.fixes:
        return problem
    if not_allowed:
        return problem.noting("the agent does not change node settings: --no-fix-sysctls")
    errors = [f"{f.command()}: {failed[f]}" for f in problem.fixes if f in failed]
    return problem.noting("the agent could not: " + "; ".join(errors)) if errors else problem
