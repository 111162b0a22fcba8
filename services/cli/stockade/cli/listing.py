"""kubectl's conventions for the commands that list (`nodes`, `policies`, `drops top`):
``-n/-A``, ``-l`` label selectors, ``-o table|wide|json|yaml|name``, ``--no-headers``, ``--watch``.

Selectors are kubectl's: equality (``k=v``, ``k==v``, ``k!=v``) and sets (``k in (a,b)``,
``k notin (a,b)``, ``k``, ``!k``), comma-separated, all of which must hold.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from stockade.cli import exits

LIST_OUTPUT = ("table", "wide", "json", "yaml", "name")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def holds(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and labels[self.key] in self.values
        return not has or labels[self.key] not in self.values  # != and notin: kubectl's meaning


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQ = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_HAS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split(selector: str) -> list[str]:
    """Split on the commas outside parentheses (``a in (x,y),b`` is two requirements)."""
    parts, depth, cur = [], 0, ""
    for ch in selector:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur]


def parse_selector(selector: str) -> list[Requirement]:
    """``-l`` as requirements; a malformed selector is bad usage (exit 2)."""
    out = []
    for part in _split(selector):
        if m := _SET.match(part):
            values = frozenset(v.strip() for v in m.group(4).split(",") if v.strip())
            out.append(Requirement(m.group(1), m.group(3), values))
        elif m := _EQ.match(part):
            out.append(Requirement(m.group(1), "!=" if m.group(3) == "!=" else "=", frozenset({m.group(4)})))
        elif m := _HAS.match(part):
            out.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise exits.CliError(f"-l {selector}: cannot read {part.strip()!r} as a label requirement", exits.USAGE)
    return out


def selected(reqs: list[Requirement], labels: Mapping[str, str]) -> bool:
    return all(r.holds(labels) for r in reqs)


def add_list_args(p: argparse.ArgumentParser, namespaced: bool, labels: bool = True) -> None:
    """The list flags; -o is added by add_connection_args with LIST_OUTPUT."""
    g = p.add_argument_group("listing (as kubectl get)")
    if namespaced:
        g.add_argument("-n", "--namespace", help="only this namespace")
        g.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace (the default)")
    if labels:
        g.add_argument("-l", "--selector", help="label selector, as kubectl's: app=web,tier!=db,env in (a,b),!legacy")
    g.add_argument("--no-headers", action="store_true", help="table rows only: no header, title or notes")
    g.add_argument("-w", "--watch", action="store_true", help="list again whenever the answer changes")
    g.add_argument(
        "--watch-interval", type=float, default=2.0, metavar="S", help="with --watch: seconds between looks (2)"
    )


def check_list_args(args: argparse.Namespace) -> list[Requirement]:
    """Flags that cannot go together, and the selector's requirements."""
    if getattr(args, "all_namespaces", False) and getattr(args, "namespace", None):
        raise exits.CliError("-n and -A cannot go together", exits.USAGE)
    if getattr(args, "watch", False) and not args.watch_interval > 0:
        raise exits.CliError("--watch-interval: must be more than 0", exits.USAGE)
    sel = getattr(args, "selector", None)
    return parse_selector(sel) if sel else []


def headless(table: str) -> str:
    """A table without its header line (``--no-headers``)."""
    return "\n".join(table.split("\n")[1:])


async def watch(args: argparse.Namespace, render: Callable[[], Awaitable[tuple[bytes, str]]]) -> int:
    """Print what ``render()`` gives, (the answer's bytes, its text); with --watch, again each time
    the answer changes (not its text alone: "5s ago" ticking is no change), until interrupted."""
    last = None
    while True:
        answer, text = await render()
        if answer != last:
            if text:
                print(text, flush=True)
            last = answer
        if not getattr(args, "watch", False):
            return exits.OK
        await asyncio.sleep(args.watch_interval)


def no_headers(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "no_headers", False))  # callers that build args by hand may leave it out
