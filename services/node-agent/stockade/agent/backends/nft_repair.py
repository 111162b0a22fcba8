"""The one transaction that turns what the kernel holds into a model (pure: view in, script out).

Used on start-up (so a restarted agent changes nothing when the kernel already holds the
desired state: no flap, counters and seen-sets kept) and to repair drift. When our fixed
objects are damaged, the whole table is replaced instead, still in one transaction.
"""

from __future__ import annotations

from stockade.agent.backends import elements, names
from stockade.agent.backends.nft_readback import KernelView, desired, structure_problems
from stockade.agent.backends.nft_render import (
    DISPATCH,
    TABLE,
    NftConfig,
    add_chain_cmds,
    render_snapshot,
)
from stockade.model import Direction, NodeModel


def _elem_cmd(verb: str, name: str, items: list[str]) -> list[str]:
    return [f"{verb} element {TABLE} {name} {{ {', '.join(sorted(items))} }}"] if items else []


def render_reconcile(view: KernelView | None, model: NodeModel, cfg: NftConfig) -> str:
    """A script making the kernel hold ``model`` ("" when it already does)."""
    if view is None or structure_problems(view):
        return render_snapshot(model, cfg)
    want = desired(model, cfg)
    out: list[str] = []
    for name, elems in want.sets.items():
        have = view.sets.get(name)
        if have is None:
            out.append(f"add set {TABLE} {name} {{ type ipv4_addr; flags interval; }}")
            out += _elem_cmd("add", name, list(elems))
        elif have != elems and elements.coverage(have) != elements.coverage(elems):
            out += _elem_cmd("delete", name, list(have - elems))
            out += _elem_cmd("add", name, list(elems - have))
    for cid, chain in model.chains.items():
        name = names.nft_chain(cid)
        if view.chains.get(name) != want.chains[name] or view.settings.get(name) != want.comment:
            out += add_chain_cmds(cid, chain, cfg)
    for direction in Direction:
        vmap = DISPATCH[direction]
        have_map = view.dispatch(direction)
        wanted = want.ingress if direction is Direction.INGRESS else want.egress
        stale = [ip for ip, c in have_map.items() if wanted.get(ip) != c]
        out += _elem_cmd("delete", vmap, stale)
        fresh = [f"{ip} : jump {c}" for ip, c in wanted.items() if have_map.get(ip) != c]
        out += _elem_cmd("add", vmap, fresh)
    for name in view.chains.keys() - want.chains.keys():
        out += [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]
    for name in view.sets.keys() - want.sets.keys():
        out.append(f"delete set {TABLE} {name}")
    return "\n".join(out) + ("\n" if out else "")
