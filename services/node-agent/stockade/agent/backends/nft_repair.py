"""The one transaction that turns what the kernel holds into a model (pure: view in, script out).

Used on start-up (so a restarted agent changes nothing when the kernel already holds the
desired state: no flap, counters and seen-sets kept) and to repair drift. When our fixed
objects are damaged, the whole table is replaced instead, still in one transaction.
"""

from __future__ import annotations

from stockade.agent.backends import elements, names
from stockade.agent.backends.nft_readback import (
    KernelView,
    Reference,
    chain_outdated,
    desired,
    kind_problems,
    port_chain_outdated,
    same_coverage,
    structure_problems,
)
from stockade.agent.backends.nft_render import (
    FAMILIES,
    HOSTS,
    TABLE,
    NftConfig,
    add_chain_cmds,
    add_port_chain_cmds,
    dispatch_map,
    is_tiered,
    layout,
    render_snapshot,
    set_decl,
    tagged,
)
from stockade.model import CNP_TIERS, Direction, NodeModel


def _elem_cmd(verb: str, name: str, items: list[str]) -> list[str]:
    return [f"{verb} element {TABLE} {name} {{ {', '.join(sorted(items))} }}"] if items else []


def render_reconcile(view: KernelView | None, model: NodeModel, cfg: NftConfig, fixed: Reference | None = None) -> str:
    """A script making the kernel hold ``model`` ("" when it already does); ``fixed``: the fixed
    chains' rules as they should read (`nft_readback.Reference`; None: compared by count).

    A kernel in the other layout (`nft_render.layout`) is moved over in the same transaction:
    the twins it lacks are added first, the chains rewritten, the twins it no longer needs
    deleted last. Likewise a set that moved between the hosts set and a set of its own (its own
    set created first, the chains naming it rewritten, its old form removed)."""
    if view is None or structure_problems(view, fixed, is_tiered(model)):
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
            out.append(f"add {set_decl(name, want.families[name], qualified=True)}")
            out += _elem_cmd("add", name, list(elems))
        elif not same_coverage(have, elems):
            out += _elem_cmd("delete", name, list(have - elems))
            out += _elem_cmd("add", name, list(elems - have))
    for key in want.tagged.keys() | view.tagged.keys():
        (version, tag), have = key, view.tagged.get(key, frozenset())
        elems = want.tagged.get(key, frozenset())
        if not same_coverage(have, elems):
            out += _elem_cmd("delete", HOSTS[version], tagged(have - elems, tag))
            out += _elem_cmd("add", HOSTS[version], tagged(elems - have, tag))
    # Sets whose own set comes or goes: the rules naming them name the other form.
    moved = {want.set_ids[n] for n in view.sets.keys() ^ want.sets.keys() if n in want.set_ids}
    for name, lines in want.ports.items():
        if port_chain_outdated(view, want, name):
            out += add_port_chain_cmds(name, lines)
    for cid, chain in model.chains.items():
        name = names.nft_chain(cid)
        outdated = chain_outdated(view, want, name)
        if outdated or (moved and any(rule.peer in moved for rule in chain.rules)):
            out += add_chain_cmds(cid, chain, cfg, families, model.sets)
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
    for tier in CNP_TIERS:  # their entries read "jump <chain>" / "goto <chain>" (`desired`)
        for direction in Direction:
            have_map, wanted = view.dispatch(direction, tier), want.dispatch(direction, tier)
            stale = [ip for ip, c in have_map.items() if wanted.get(ip) != c]
            fresh = [ip for ip, c in wanted.items() if have_map.get(ip) != c]
            for version in FAMILIES:
                vmap = dispatch_map(direction, version, tier)
                out += _elem_cmd("delete", vmap, [ip for ip in stale if elements.ip_family(ip) == version])
                add = [f"{ip} : {wanted[ip]}" for ip in fresh if elements.ip_family(ip) == version]
                out += _elem_cmd("add", vmap, add)
    for name in view.chains.keys() - want.chains.keys():
        out += [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]
    for name in view.ports.keys() - want.ports.keys():  # after the pod chains that jumped to them
        out += [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]
    for name in view.sets.keys() - want.sets.keys():
        out.append(f"delete set {TABLE} {name}")
    return "\n".join(out) + ("\n" if out else "")
