"""Human-readable output: the probe matrix and the lab summary."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from stockade.lab.probe import Result
from stockade.lab.topology import POD_BRIDGE, Plan

YES, NO = "✓", "✗"
FAMILY_NAMES = {"ipv4": "IPv4", "ipv6": "IPv6"}
TOPOLOGY_NOTES = {
    "routed": "each pod on its own veth, routed by its node",
    "bridge": f"each node's pods on one Linux bridge ({POD_BRIDGE}): same-node traffic is bridged, "
    "and the rules see it only through br_netfilter",
}


def matrix(results: list[Result], width: int = 120) -> str:
    """One matrix per (protocol, port, IP family): rows are sources, columns destinations.

    ``✓`` connected, ``✗`` blocked, ``.`` not probed (the destination does not declare that port).
    Long names become numbered columns with a legend, so the matrix stays readable."""
    if not results:
        return "nothing to probe (no pods, or no declared ports match)"
    groups: dict[tuple[str, int, str], dict[tuple[str, str], bool]] = defaultdict(dict)
    srcs: list[str] = []
    dsts: list[str] = []
    for r in results:
        groups[r.protocol, r.port, r.family][r.src, r.dst] = r.connected
        if r.src not in srcs:
            srcs.append(r.src)
        if r.dst not in dsts:
            dsts.append(r.dst)
    out = []
    for (proto, port, family), cells in sorted(groups.items()):
        cols = [d for d in dsts if any((s, d) in cells for s in srcs)]
        rows = [s for s in srcs if any((s, d) in cells for d in cols)]
        left = max(len(s) for s in rows)
        named = left + 2 + sum(len(c) + 1 for c in cols) <= width
        heads = cols if named else [str(i + 1) for i in range(len(cols))]
        ok = sum(cells.values())
        out.append(f"{proto}/{port} over {FAMILY_NAMES.get(family, family)}: {ok} of {len(cells)} connected")
        out.append(" " * (left + 2) + " ".join(heads))
        for s in rows:
            line = [(YES if cells[s, d] else NO) if (s, d) in cells else "." for d in cols]
            out.append(s.ljust(left + 2) + " ".join(c.center(len(h)) for c, h in zip(line, heads, strict=True)))
        if not named:
            out.append("  " + "  ".join(f"{i + 1}={c}" for i, c in enumerate(cols)))
        out.append("")
    total, ok = len(results), sum(r.connected for r in results)
    out.append(f"{ok} of {total} connections succeeded, {total - ok} blocked")
    return "\n".join(out)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["".join(c.ljust(w + 2) for c, w in zip(r, widths, strict=False)) + r[-1] for r in rows]


def describe(plan: Plan) -> str:
    """The lab's IP families and topology, in one line."""
    families = ", ".join(FAMILY_NAMES[f] for f in plan.families)
    topology = f"{plan.topology} ({TOPOLOGY_NOTES[plan.topology]})"
    return f"IP families: {families} (--ip-family {plan.ip_family}); topology: {topology}"


def summary(plan: Plan) -> str:
    lines = [describe(plan), ""]
    rows = [["NODE", "IP", "POD RANGE", "PODS"]]
    for n in plan.nodes:
        pods = [p for p in plan.pods if p.node == n.name]
        rows.append([n.name, ",".join(n.ips), ",".join(n.pod_cidrs), str(len(pods))])
    lines += _table(rows)
    lines.append("")
    if plan.pods:
        rows = [["POD", "IP", "NODE", "PORTS"]]
        for p in plan.pods:
            rows.append([p.key, ",".join(p.ips), p.node, ",".join(f"{pr}/{n}" for pr, n in p.ports) or "-"])
        lines += _table(rows)
        lines.append("")
    ext = plan.external
    lines.append(f"external host {','.join(ext.ips)} (netns {ext.netns}), routed via {ext.via_node}")
    return "\n".join(lines)


def _ago(at: float | None) -> str:
    if not at:
        return "-"
    secs = max(0.0, time.time() - at)
    return f"{secs:.0f}s ago" if secs < 120 else f"{secs / 60:.0f}m ago"


def processes(rows: list[dict[str, Any]]) -> str:
    """The processes table of `lab status`: what runs, and what was restarted, when and why."""
    w = max([len(r["name"]) for r in rows] + [7]) + 2
    lines = [f"{'PROCESS':<{w}}{'PID':<9}{'STATE':<10}{'RESTARTS':<10}LAST EXIT"]
    for r in rows:
        last = r.get("last_exit") or {}
        exit_text = f"{last['reason']}, {_ago(last.get('at'))}" if last else "-"
        state = r["state"] + (f" ({r['restart_in']:.1f}s)" if r.get("restart_in") is not None else "")
        lines.append(f"{r['name']:<{w}}{r['pid'] or '-'!s:<9}{state:<10}{r['restarts']:<10}{exit_text}")
    return "\n".join(lines)
