"""NFLOG capture end to end (root): a flood of denied TCP attempts, all of them captured?

client -- node -- server network namespaces; the node logs (and drops) every new flow to the
server's port 9000, folding SYN retransmits in a dynamic set as the backends do. A child process
in the client namespace opens N connections (distinct source ports) as fast as it can, while
this process reads the NFLOG group. Prints the attempt rate, the capture rate, what was lost,
and the ratio captured / attempted (target 1.00: nothing lost at the rate one client reaches).
"""

from __future__ import annotations

import select
import subprocess
import sys
import time

sys.path[:0] = ["services/common", "services/node-agent"]

from stockade.agent.nflog import NflogReader  # noqa: E402

CLIENT, NODE, SERVER = "st-nl-bc", "st-nl-bn", "st-nl-bs"
GROUP = 100
FLOW = "ip saddr . ip daddr . meta l4proto . th sport . th dport"
RULES = f"""
table inet nlbench {{
  set seen {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service;
    flags dynamic,timeout; timeout 60s; size 262144; }}
  chain in_bench01 {{
    {FLOW} @seen drop
    add @seen {{ {FLOW} }} counter log group {GROUP} prefix "in_bench01" drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ip daddr 10.80.2.2 tcp dport 9000 jump in_bench01
  }}
}}
"""
FLOOD = """
import socket, sys, time
n = int(sys.argv[1]); held = []
start = time.perf_counter()
for _ in range(n):
    s = socket.socket(); s.setblocking(False); s.connect_ex(("10.80.2.2", 9000)); held.append(s)
print(time.perf_counter() - start)
"""


def sh(*cmd: str, stdin: str | None = None) -> None:
    subprocess.run(cmd, input=stdin, check=True, capture_output=True, text=True)


def setup() -> None:
    teardown()
    for ns in (CLIENT, NODE, SERVER):
        sh("ip", "netns", "add", ns)
    for ns, idx in ((CLIENT, 1), (SERVER, 2)):
        sh("ip", "link", "add", f"st-nl-k{idx}", "netns", ns, "type", "veth", "peer", "name", f"st-nl-j{idx}",
           "netns", NODE)  # fmt: skip
        sh("ip", "-n", ns, "addr", "add", f"10.80.{idx}.2/24", "dev", f"st-nl-k{idx}")
        sh("ip", "-n", NODE, "addr", "add", f"10.80.{idx}.1/24", "dev", f"st-nl-j{idx}")
        sh("ip", "-n", ns, "link", "set", f"st-nl-k{idx}", "up")
        sh("ip", "-n", NODE, "link", "set", f"st-nl-j{idx}", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", f"10.80.{idx}.1")
    sh("ip", "netns", "exec", NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "netns", "exec", NODE, "nft", "-f", "-", stdin=RULES)


def teardown() -> None:
    for ns in (CLIENT, NODE, SERVER):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main(n: int = 10_000) -> None:
    setup()
    try:
        with NflogReader("bench", GROUP, netns=NODE) as reader:
            flood = subprocess.Popen(
                ["ip", "netns", "exec", CLIENT, sys.executable, "-c", FLOOD, str(n)],
                stdout=subprocess.PIPE,
                text=True,
            )
            start = time.perf_counter()
            got = 0
            last = start
            while got + reader.stats.lost < n and time.perf_counter() - last < 3:
                if select.select([reader.fileno()], [], [], 0.2)[0]:
                    batch = reader.read_batch()
                    if batch:
                        got += len(batch)
                        last = time.perf_counter()
            captured_in = last - start
            out, _ = flood.communicate()
            sent_in = float(out.strip())
    finally:
        teardown()
    print(f"sent {n:,} attempts in {sent_in:.2f} s ({n / sent_in:,.0f}/s)")
    print(
        f"captured {got:,} events in {captured_in:.2f} s ({got / captured_in:,.0f}/s), "
        f"lost {reader.stats.lost}, overruns {reader.stats.overruns}"
    )
    print(f"target 1.00 captured/attempted: ratio {got / n:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
