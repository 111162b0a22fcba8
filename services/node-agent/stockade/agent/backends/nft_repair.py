"""The one transaction that turns what the kernel holds into a model (pure: view in, script out).

Used on start-up (so a restarted agent changes nothing when the kernel already holds the
desired state: no flap, counters and seen-sets kept) and to repair drift. When our fixed
objects are damaged, the whole table is replaced instead, still in one transaction.
"""

from __future__ import annotations

from stockade.agent.backends import elements, names
from stockade.agent.backends.nft_readback import KernelView, desired, kind_problems, same_coverage, structure_problems
from stockade.agent.backends.nft_render import (
    FAMILIES,
    TABLE,
    NftConfig,
    add_chain_cmds,
    add_port_chain_cmds,
    dispatch_map,
    layout,
    render_snapshot,
    set_decl,
)
from stockade.model import Direction, NodeModel


def _elem_cmd(verb: str, name: str, items: list[str], interval: bool = True) -> list[str]:
    """``interval`` False: a hash set, whose elements are bare addresses (`set_decl`)."""
    text = sorted(items) if interval else sorted(e.partition("/")[0] for e in items)
    return [f"{verb} element {TABLE} {name} {{ {', '.join(text)} }}"] if text else []


def render_reconcile(view: KernelView | None, model: NodeModel, cfg: NftConfig) -> str:
    """A script making the kernel hold ``model`` ("" when it already does).

    A kernel in the other layout (`nft_render.layout`) is moved over in the same transaction:
    the twins it lacks are added first, the chains rewritten, the twins it no longer needs
    deleted last."""
    if view is None or structure_problems(view):
        return render_snapshot(model, cfg)
    want = desired(model, cfg)
    if kind_problems(view, want):
        # A set of the wrong kind must be re-created, and every rule naming it with it: the
        # whole table is replaced (rare: drift, or a table written before hash sets).
        return render_snapshot(model, cfg)
    families = layout(model)
    out: list[str] = []
    for name, elems in want.sets.items():
        have = view.sets.get(name)
        if have is None:
            kind = name in want.interval
            out.append(f"add {set_decl(name, want.families[name], qualified=True, interval=kind)}")
            out += _elem_cmd("add", name, list(elems), kind)
        elif not same_coverage(have, elems):
            kind = name in want.interval
            out += _elem_cmd("delete", name, list(have - elems), kind)
            out += _elem_cmd("add", name, list(elems - have), kind)
    for name, lines in want.ports.items():
        if view.ports.get(name) != len(lines):
            out += add_port_chain_cmds(name, lines)
    for cid, chain in model.chains.items():
        name = names.nft_chain(cid)
        if view.chains.get(name) != want.chains[name] or view.settings.get(name) != want.comment:
            out += add_chain_cmds(cid, chain, cfg, families)
    for direction in Direction:
        have_map = view.dispatch(direction)
        wanted = want.ingress if direction is Direction.INGRESS else want.egress
        stale = [ip for ip, c in have_map.items() if wanted.get(ip) != c]
        fresh = [ip for ip, c in wanted.items() if have_map.get(ip) != c]
        for version in FAMILIES:
            vmap = dispatch_map(direction, version)
            out += _elem_cmd("delete", vmap, [ip for ip in stale if elements.ip_family(ip) == version])
            add = [f"{ip} : jump {wanted[ip]}" for ip in fresh if elements.ip_family(ip) == version]
            out += _elem_cmd("add", vmap, add)
    for name in view.chains.keys() - want.chains.keys():
        out += [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]
    for name in view.ports.keys() - want.ports.keys():  # after the pod chains that jumped to them
        out += [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]
    for name in view.sets.keys() - want.sets.keys():
        out.append(f"delete set {TABLE} {name}")
    return "\n".join(out) + ("\n" if out else "")
