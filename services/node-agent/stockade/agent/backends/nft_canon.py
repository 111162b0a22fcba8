"""A rule's canonical text, from the kernel's JSON (``nft -j list``) or from the renderer's line
(pure), so the read-back compares what each rule of a pod or port chain does, not just how many
rules a chain has: a rule replaced one-for-one (a port changed, a bare ``accept``, another set
named) is drift.

The kernel side is decompiled into the renderer's syntax for the expressions the renderer
writes; anything else is kept as its JSON, which no rendered line equals, so an unknown rule
always reads as drift (repaired), never as in sync. Counter values and handles are left out.
Both sides list an anonymous set's elements sorted (the kernel orders them its own way).
"""

from __future__ import annotations

import json
import re
from typing import Any

from stockade.model.weighed import weighed_lru

_VERDICTS = ("accept", "drop", "return", "continue")
_SET_BODY = re.compile(r"\{ ([^{}]*) \}")


def _value(v: Any) -> str:
    """A right-hand side or a set element."""
    if isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, (str, int)):
        return str(v)
    if isinstance(v, list):  # flags: established,related
        return ",".join(_value(x) for x in v)
    if isinstance(v, dict):
        if "range" in v:
            lo, hi = v["range"]
            return f"{_value(lo)}-{_value(hi)}"
        if "set" in v:
            items = v["set"] if isinstance(v["set"], list) else [v["set"]]
            return "{ " + ", ".join(sorted(_value(x) for x in items)) + " }"
        if "prefix" in v:
            return f"{v['prefix']['addr']}/{v['prefix']['len']}"
        return _expr(v)
    return json.dumps(v, sort_keys=True)


def _expr(e: Any) -> str:
    """A left-hand side: payload, meta, ct, numgen, a concatenation."""
    if not isinstance(e, dict) or len(e) != 1:
        return json.dumps(e, sort_keys=True)
    ((kind, body),) = e.items()
    if kind == "payload" and set(body) == {"protocol", "field"}:
        return f"{body['protocol']} {body['field']}"
    if kind == "meta" and set(body) == {"key"}:
        return f"meta {body['key']}"
    if kind == "ct" and set(body) == {"key"}:
        return f"ct {body['key']}"
    if kind == "concat":
        return " . ".join(_expr(x) for x in body)
    if kind == "numgen" and set(body) <= {"mode", "mod", "offset"}:
        # nft prints the offset as a signed 32-bit number; the renderer writes it unsigned
        return f"numgen {body['mode']} mod {body['mod']} offset {int(body.get('offset', 0)) & 0xFFFFFFFF}"
    return json.dumps(e, sort_keys=True)


def _statement(s: Any) -> str:
    if not isinstance(s, dict) or len(s) != 1:
        return json.dumps(s, sort_keys=True)
    ((kind, body),) = s.items()
    if kind in _VERDICTS and body is None:
        return kind
    if kind in ("jump", "goto") and isinstance(body, dict) and set(body) == {"target"}:
        return f"{kind} {body['target']}"
    if kind == "counter":
        return "counter"  # the values change with traffic
    if kind == "match" and isinstance(body, dict) and set(body) == {"op", "left", "right"}:
        op = "" if body["op"] in ("==", "in") else f"{body['op']} "
        return f"{_expr(body['left'])} {op}{_value(body['right'])}"
    if kind == "log" and isinstance(body, dict) and set(body) <= {"group", "prefix"}:
        out = "log"
        if "group" in body:
            out += f" group {body['group']}"
        if "prefix" in body:
            out += f" prefix {json.dumps(body['prefix'])}"
        return out
    if kind == "limit" and isinstance(body, dict) and set(body) <= {"rate", "per", "burst", "burst_unit"}:
        unit = body.get("burst_unit", "packets")
        return f"limit rate {body['rate']}/{body.get('per', 'second')} burst {body.get('burst', 5)} {unit}"
    return json.dumps(s, sort_keys=True)


def kernel_rule(rule: dict[str, Any]) -> str:
    """One ``{"rule": ...}`` body of ``nft -j list`` as canonical text."""
    text = " ".join(_statement(s) for s in rule.get("expr", []))
    if "comment" in rule:
        text += f" comment {json.dumps(rule['comment'])}"
    return text


# Pod chains share lines (deny tails, port bodies); weighed by length: a line may name 1,000 ports.
@weighed_lru(1 << 17, lambda args, _: len(args[0]) // 32)
def rendered_rule(line: str) -> str:
    """A line as `nft_render` writes it, in the same canonical form."""
    return _SET_BODY.sub(lambda m: "{ " + ", ".join(sorted(m.group(1).split(", "))) + " }", line)
