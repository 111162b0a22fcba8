"""Human-readable output: the probe matrix and the lab summary."""

from __future__ import annotations

from collections import defaultdict

from stockade.lab.probe import Result
from stockade.lab.topology import Plan

YES, NO = "✓", "✗"


def matrix(results: list[Result], width: int = 120) -> str:
    """One matrix per (protocol, port): rows are sources, columns destinations.

    ``✓`` connected, ``✗`` blocked, ``.`` not probed (the destination does not declare that port).
    Long names become numbered columns with a legend, so the matrix stays readable."""
    if not results:
        return "nothing to probe (no pods, or no declared ports match)"
    groups: dict[tuple[str, int], dict[tuple[str, str], bool]] = defaultdict(dict)
    srcs: list[str] = []
    dsts: list[str] = []
    for r in results:
        groups[r.protocol, r.port][r.src, r.dst] = r.connected
        if r.src not in srcs:
            srcs.append(r.src)
        if r.dst not in dsts:
            dsts.append(r.dst)
    out = []
    for (proto, port), cells in sorted(groups.items()):
        cols = [d for d in dsts if any((s, d) in cells for s in srcs)]
        rows = [s for s in srcs if any((s, d) in cells for d in cols)]
        left = max(len(s) for s in rows)
        named = left + 2 + sum(len(c) + 1 for c in cols) <= width
        heads = cols if named else [str(i + 1) for i in range(len(cols))]
        ok = sum(cells.values())
        out.append(f"{proto}/{port}: {ok} of {len(cells)} connected")
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


def summary(plan: Plan) -> str:
    lines = ["NODE      IP            POD RANGE       PODS"]
    for n in plan.nodes:
        pods = [p for p in plan.pods if p.node == n.name]
        lines.append(f"{n.name:<9} {n.ip:<13} {n.pod_cidr:<15} {len(pods)}")
    lines.append("")
    if plan.pods:
        w = max(len(p.key) for p in plan.pods) + 2
        lines.append("POD".ljust(w) + "IP            NODE      PORTS")
        for p in plan.pods:
            ports = ",".join(f"{pr}/{n}" for pr, n in p.ports) or "-"
            lines.append(f"{p.key:<{w}}{p.ip:<14}{p.node:<10}{ports}")
        lines.append("")
    lines.append(f"external host {plan.external.ip} (netns {plan.external.netns}), routed via {plan.external.via_node}")
    return "\n".join(lines)
