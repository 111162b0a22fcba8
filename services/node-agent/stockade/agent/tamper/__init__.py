"""Tampering repaired at once: nf_tables change notifications trigger the check-and-repair.

`loop.tamper_watch_loop` is the agent's task; `notify` reads the notifications, `watch` tells
foreign changes to what we own from ours, `overrides` finds foreign iptables rules that can
accept pod traffic before our rules see it.
"""

from stockade.agent.tamper.loop import tamper_watch_loop

__all__ = ["tamper_watch_loop"]
