"""A route for the Service CIDRs on every node, so that the node's own connections to a ClusterIP
and forwarded ones to a Service without endpoints get as far as the netfilter hooks (where the
first are DNATed and the second rejected). Real nodes have a default route that does this; the
lab's nodes route only the pod ranges."""

from __future__ import annotations

import subprocess

from stockade.lab.control import SERVICE_CIDRS

DEVICE = "eth0"  # the node's link to the fabric


def ensure(netns: str) -> None:
    for cidr in SERVICE_CIDRS.values():
        fam = "-6" if ":" in cidr else "-4"
        res = subprocess.run(
            ["ip", fam, "-n", netns, "route", "replace", cidr, "dev", DEVICE],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0 and fam == "-4":  # IPv6 may be off in an IPv4 lab; IPv4 must work
            raise RuntimeError(f"{netns}: ip route replace {cidr} dev {DEVICE}: {res.stderr.strip()}")
