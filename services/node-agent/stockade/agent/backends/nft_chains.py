"""Rewrite named chains of our table from the model, in one transaction (pure: model in, script out).

The tamper path (`stockade.agent.tamper`) knows from the change notifications which of our
chains another process changed rules in; rewriting just those (``add``, ``flush``, the model's
rules: atomic, never empty in between) costs milliseconds, where verifying first means listing
the whole table. It also undoes a foreign rule that replaced one of ours one for one, which a
verify by rule counts would not see.
"""

from __future__ import annotations

from collections.abc import Collection

from stockade.agent.backends import names
from stockade.agent.backends.nft_render import (
    FORWARD,
    ONCE,
    TABLE,
    TIER_CHAINS,
    NftConfig,
    add_chain_cmds,
    add_port_chain_cmds,
    chain_head,
    forward_rules,
    is_tiered,
    layout,
    once_lines,
    port_chains,
)
from stockade.model import NodeModel


def _fixed(name: str, spec: str, lines: list[str]) -> list[str]:
    return [f"add chain {TABLE} {name}{spec}", f"flush chain {TABLE} {name}"] + [
        f"add rule {TABLE} {name} {line}" for line in lines
    ]


def rewrite_chains(model: NodeModel, cfg: NftConfig, chains: Collection[str]) -> str | None:
    """The script rewriting ``chains`` (kernel names) as ``model`` has them; None when one of them
    is not a chain of the model (a foreign chain in our table: only a full repair knows what to do)."""
    pods = {names.nft_chain(cid): cid for cid in model.chains}
    once = {name: direction for direction, name in ONCE.items()}
    ports: dict[str, tuple[str, ...]] | None = None
    families = layout(model)
    tiered = is_tiered(model)
    out: list[str] = []
    for name in sorted(chains):
        if name in pods:
            out += add_chain_cmds(pods[name], model.chains[pods[name]], cfg, families, model.sets)
        elif name == FORWARD:
            out += _fixed(FORWARD, chain_head(FORWARD), forward_rules(tiered))
        elif name in TIER_CHAINS:
            if not tiered:
                return None  # left over from a table with tiers: a full repair replaces the table
            out += _fixed(name, chain_head(name), TIER_CHAINS[name])
        elif name in once:
            out += _fixed(name, "", once_lines(once[name], cfg))
        else:
            if ports is None:
                ports = port_chains(model.chains.values())
            if name not in ports:
                return None
            out += add_port_chain_cmds(name, ports[name])
    return "\n".join(out) + ("\n" if out else "")
