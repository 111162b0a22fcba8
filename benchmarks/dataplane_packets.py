"""Per-packet cost: new-connection rate through a loaded node versus the same node with no table.

Targets: with 2,000 policies and 10,000 dual-stack pods loaded (20,000 pod IPs), the nftables
backend keeps ≥ 90% of the rate measured with no table at all, in the same run; and IPv6 new
connections through the same loaded node reach ≥ 90% of the IPv4 rate. The iptables backend's
ratio is printed beside it (informational: IPv4, its dispatch is a set test per chain bucket).

Topology (namespaces st-dp-b*, with STOCKADE_TEST_SLOT): client 10.220.1.2 / fd00:220:1::2 ->
node -> server 10.220.2.2 / fd00:220:2::2. The server pod is one of the dispatched pods under
both addresses; its ingress chain allows the client by address set (each family its own set),
the client's egress chain allows the server: each SYN walks conntrack, both verdict maps of its
family and two pod chains. Workers open and reset TCP connections as fast as they can;
configurations and families alternate round by round so machine noise hits them alike.
Run as root: `.venv/bin/python benchmarks/dataplane_packets.py`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from dataplane_models import pod_cidrs, ratio_line, slotted, synthetic

from stockade.agent import netns as ns
from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.backends.nft_render import FORWARD, FORWARD_RULES
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import Chain, Direction, NodeModel, PortMatch, Protocol, Rule

CLIENT, NODE, SERVER = slotted("st-dp-bc"), slotted("st-dp-bn"), slotted("st-dp-bs")
CLIENT_IP, SERVER_IP, PORT = "10.220.1.2", "10.220.2.2", 20080
CLIENT_IP6, SERVER_IP6 = "fd00:220:1::2", "fd00:220:2::2"
SERVERS = {"ipv4": SERVER_IP, "ipv6": SERVER_IP6}
TARGET = 0.90

SERVER_CODE = r"""
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""

WORKER_CODE = r"""
import socket, struct, sys, time
dst = (sys.argv[1], int(sys.argv[2]))
af = socket.AF_INET6 if ":" in dst[0] else socket.AF_INET
linger = struct.pack("ii", 1, 0)
print("ready", flush=True)
for line in sys.stdin:
    end = time.monotonic() + float(line)
    n = fail = 0
    cpu = time.process_time()
    while time.monotonic() < end:
        s = socket.socket(af); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger); s.settimeout(1.0)
        try:
            s.connect(dst); n += 1
        except OSError:
            fail += 1
        s.close()
    print(n, fail, time.process_time() - cpu, flush=True)
"""


def sh(netns: str | None, *argv: str) -> None:
    ns.run(list(argv), netns, check=True)


def build() -> None:
    teardown()
    for name in (CLIENT, NODE, SERVER):
        subprocess.run(["ip", "netns", "add", name], check=True)
        sh(name, "ip", "link", "set", "lo", "up")
    sh(NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh(NODE, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    for pod, addr, addr6 in ((CLIENT, CLIENT_IP, CLIENT_IP6), (SERVER, SERVER_IP, SERVER_IP6)):
        gw, gw6 = addr.rsplit(".", 1)[0] + ".1", addr6.rsplit(":", 1)[0] + ":1"
        host_if = f"v-{pod[-2:]}"
        sh(None, "ip", "link", "add", host_if, "netns", NODE, "type", "veth", "peer", "name", "eth0", "netns", pod)
        sh(NODE, "ip", "addr", "add", f"{gw}/24", "dev", host_if)
        sh(NODE, "ip", "addr", "add", f"{gw6}/64", "dev", host_if, "nodad")
        sh(NODE, "ip", "link", "set", host_if, "up")
        sh(pod, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
        sh(pod, "ip", "addr", "add", f"{addr6}/64", "dev", "eth0", "nodad")
        sh(pod, "ip", "link", "set", "eth0", "up")
        sh(pod, "ip", "route", "add", "default", "via", gw)
        sh(pod, "ip", "-6", "route", "add", "default", "via", gw6)


def teardown() -> None:
    for name in (CLIENT, NODE, SERVER):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def loaded_model(dual: bool = True) -> NodeModel:
    """2,000 policies and 10,000 pods (both families when ``dual``), plus the server and the client."""
    m = synthetic(pods=10_000, policies=2_000, set_size=10, dual=dual)
    clients = {f"{CLIENT_IP}/32", *([f"{CLIENT_IP6}/128"] if dual else [])}
    m.sets["bench-clients"] = frozenset(clients | {e for i in range(20) for e in pod_cidrs(i, dual)})
    ingress = Chain.of(
        Direction.INGRESS,
        [
            Rule("ag00001", (PortMatch(Protocol.TCP, 80),)),
            Rule(None, (PortMatch(Protocol.UDP, 53),)),
            Rule("bench-clients", (PortMatch(Protocol.TCP, PORT),)),
        ],
    )
    egress = Chain.of(Direction.EGRESS, [Rule(None, (PortMatch(Protocol.UDP, 53),)), Rule(None, None)])
    m.chains[ingress.id] = ingress
    m.chains[egress.id] = egress
    for server, client in ((SERVER_IP, CLIENT_IP), (SERVER_IP6, CLIENT_IP6)) if dual else ((SERVER_IP, CLIENT_IP),):
        m.ingress[server] = ingress.id
        m.egress[client] = egress.id
    assert not m.check()
    return m


class Load:
    def __init__(self, workers: int) -> None:
        cmd = ["ip", "netns", "exec", SERVER, sys.executable, "-c", SERVER_CODE, str(PORT)]
        self.server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.server.stdout is not None and self.server.stdout.readline().strip() == "ready"
        self.workers: dict[str, list[subprocess.Popen[str]]] = {}
        for family, dst in SERVERS.items():
            for _ in range(workers):
                cmd = ["ip", "netns", "exec", CLIENT, sys.executable, "-c", WORKER_CODE, dst, str(PORT)]
                w = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                assert w.stdout is not None and w.stdout.readline().strip() == "ready"
                self.workers.setdefault(family, []).append(w)

    def rate(self, seconds: float, family: str = "ipv4") -> tuple[float, float]:
        """(connections per wall-clock second, connections per CPU-second of the client workers),
        the workers of ``family`` running.

        The SYN crosses the node's forward hook in the sending worker's context (veth transmit
        runs the receive path on the same CPU), so the per-CPU-second figure carries our
        per-packet cost while staying steady when other jobs share the machine."""
        workers = self.workers[family]
        for w in workers:
            assert w.stdin is not None
            w.stdin.write(f"{seconds}\n")
            w.stdin.flush()
        total = failed = 0
        cpu = 0.0
        for w in workers:
            assert w.stdout is not None
            n, f, c = w.stdout.readline().split()
            total, failed, cpu = total + int(n), failed + int(f), cpu + float(c)
        if failed:
            print(f"  warning: {failed} connections failed")
        return total / seconds, total / cpu

    def close(self) -> None:
        for p in [*(w for ws in self.workers.values() for w in ws), self.server]:
            p.kill()
            p.wait()


def alternate(
    load: Load,
    configs: dict[str, Callable[[], None]],
    rounds: int,
    seconds: float,
    families: tuple[str, ...] = ("ipv4",),
) -> tuple[dict[str, float], dict[str, float]]:
    """Medians per configuration and family ("<config> <family>" when there are several):
    (connections/s, connections per client CPU-second)."""
    keys = [name if len(families) == 1 else f"{name} {f}" for name in configs for f in families]
    wall: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for name, activate in configs.items():
            activate()
            time.sleep(0.1)
            for f in families:
                key = name if len(families) == 1 else f"{name} {f}"
                w, c = load.rate(seconds, f)
                wall[key].append(w)
                cpu[key].append(c)
        print(f"  round {r + 1}: " + ", ".join(f"{k} {wall[k][-1]:.0f}/s ({cpu[k][-1]:.0f}/cpu-s)" for k in keys))
    return {k: statistics.median(v) for k, v in wall.items()}, {k: statistics.median(v) for k, v in cpu.items()}


def warm_up(load: Load) -> None:
    """A few connections per family first: IPv6 neighbour discovery must not cost a round."""
    for f in SERVERS:
        load.rate(0.5, f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-iptables", action="store_true")
    args = ap.parse_args()
    model = loaded_model()
    entries = len(model.ingress) + len(model.egress)
    print(
        f"loaded dual-stack node: {entries} dispatch entries for 10,002 pods (20,004 IPs), {len(model.chains)} chains"
    )
    build()
    load = Load(args.workers)
    try:
        warm_up(load)
        nft = NftablesBackend(NODE)
        nft.apply_snapshot(model)
        assert nft.verify(model) == []
        # Without the base chain nothing of our table runs per packet (and conntrack is not even
        # loaded: "no table at all"); "conntrack" hooks a chain holding only the established
        # rule, to split conntrack's share from our lookups'; re-adding all rules restores the
        # loaded ruleset exactly.
        hook = "type filter hook forward priority filter; policy accept;"
        state = ["loaded"]

        def hooked(rules: list[str], name: str) -> Callable[[], None]:
            def activate() -> None:
                script = f"delete chain inet stockade {FORWARD}\n" if state[0] != "none" else ""
                if rules:
                    script += f"add chain inet stockade {FORWARD} {{ {hook} }}\n"
                    script += "".join(f"add rule inet stockade {FORWARD} {r}\n" for r in rules)
                nft.run_script(script)
                state[0] = name

            return activate

        configs = {
            "none": hooked([], "none"),
            "conntrack": hooked(FORWARD_RULES[:1], "conntrack"),
            "nftables": hooked(FORWARD_RULES, "loaded"),
        }
        print("nftables phase (no table / conntrack only / loaded table), IPv4 and IPv6 alternating:")
        med, per_cpu = alternate(load, configs, args.rounds, args.seconds, tuple(SERVERS))
        print(", ".join(f"{k} {v:.0f}" for k, v in med.items()) + " new connections/s (medians)")
        print(", ".join(f"{k} {v:.0f}" for k, v in per_cpu.items()) + " new connections per CPU-second (medians)")
        for f in SERVERS:
            print(
                ratio_line(
                    f"nftables {f} rate ratio, wall clock", med[f"nftables {f}"] / med[f"none {f}"], TARGET, False
                )
            )
            ratio = per_cpu[f"nftables {f}"] / per_cpu[f"none {f}"]
            print(ratio_line(f"nftables {f} rate ratio, per CPU-second", ratio, TARGET, False))
            vs_ct = per_cpu[f"nftables {f}"] / per_cpu[f"conntrack {f}"]
            print(f"  {f} loaded vs conntrack only (per CPU-second): {vs_ct:.3f}")
        v6_wall = med["nftables ipv6"] / med["nftables ipv4"]
        v6_cpu = per_cpu["nftables ipv6"] / per_cpu["nftables ipv4"]
        print(ratio_line("IPv6 / IPv4 new-connection rate through the loaded node, wall clock", v6_wall, TARGET, False))
        print(
            ratio_line("IPv6 / IPv4 new-connection rate through the loaded node, per CPU-second", v6_cpu, TARGET, False)
        )
        stack = per_cpu["none ipv6"] / per_cpu["none ipv4"]
        print(
            f"  IPv6 / IPv4 with no table (the kernel's own difference), per CPU-second: {stack:.3f}; "
            f"the table's share: {v6_cpu / stack:.3f}"
        )
        ns.run(["nft", "delete", "table", "inet", "stockade"], NODE)
        if not args.skip_iptables:
            ipt = IptablesBackend(NODE)
            start = time.perf_counter()
            ipt.apply_snapshot(loaded_model(dual=False))
            print(f"iptables phase, IPv4 (snapshot of the IPv4 model took {time.perf_counter() - start:.1f} s):")

            def ipt_off() -> None:
                while ns.run(["iptables", "-D", "FORWARD", "-j", "STOCKADE-FWD"], NODE).returncode == 0:
                    pass

            def ipt_on() -> None:
                ipt_off()
                ns.run(["iptables", "-I", "FORWARD", "1", "-j", "STOCKADE-FWD"], NODE, check=True)

            med2, cpu2 = alternate(load, {"none": ipt_off, "iptables": ipt_on}, args.rounds, args.seconds)
            ratio, ratio_cpu = med2["iptables"] / med2["none"], cpu2["iptables"] / cpu2["none"]
            print(f"median new connections/s: none {med2['none']:.0f}, iptables {med2['iptables']:.0f}")
            print(
                f"iptables rate ratio: wall clock {ratio:.3f}, per CPU-second {ratio_cpu:.3f} "
                f"({ratio_cpu / TARGET:.2f}x of the nftables target; informational)"
            )
            print("  ('none' here unhooks STOCKADE-FWD; iptables-nft's own FORWARD base chain stays registered)")
    finally:
        load.close()
        teardown()


if __name__ == "__main__":
    main()
