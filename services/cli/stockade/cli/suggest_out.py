"""What `stockade suggest` writes, from the suggestion document (`Suggestion.as_json`): the same
online (the brain's answer) and offline.

``text``: each change, why, the flows it admits, and what the whole opens beyond them.
``yaml``: the changed and new manifests, ready for `kubectl apply -f -`, each after comments
naming the flows it admits; the summary is comments too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from stockade.cli.printable import printable


def _flow(f: Mapping[str, Any]) -> str:
    return printable(f"{f['from']} -> {f['to']} {f['protocol']}/{f['port']}")


def _conn(c: Mapping[str, Any]) -> str:
    over = {"ipv4": " over IPv4", "ipv6": " over IPv6"}.get(str(c.get("family")), "")
    return _flow(c) + over


def _summary(doc: Mapping[str, Any]) -> list[str]:
    admitted, asked = len(doc["admitted"]), len(doc["admitted"]) + len(doc["notAdmitted"])
    lines = [f"{len(doc['changes'])} changes admit {admitted} of the {asked} blocked flows a NetworkPolicy can open."]
    if doc["alsoOpens"]:
        lines.append(f"They also open {len(doc['alsoOpens'])} other connections (see the notes for why):")
        lines.extend(f"  {_conn(c)}" for c in doc["alsoOpens"])
    elif doc["changes"]:
        lines.append("They open no other connection between the cluster's pods on their declared ports.")
    if doc["closes"]:
        lines.append(f"They would close {len(doc['closes'])} connections:")
        lines.extend(f"  {_conn(c)}" for c in doc["closes"])
    return lines


def text(doc: Mapping[str, Any]) -> str:
    out: list[str] = []
    for c in doc["changes"]:
        out.append(f"{c['action'].upper():<10} {printable(c['policy'])}")
        out.extend(f"  - {printable(w)}" for w in c["why"])
        out.extend(f"  admits {_flow(f)}" for f in c["admits"])
        out.extend(f"  note: {printable(n)}" for n in c["notes"])
        out.append("")
    out.extend(_summary(doc))
    for title, key in (("Still blocked after the change", "notAdmitted"), ("No NetworkPolicy can open", "notFixable")):
        if doc[key]:
            out.append(f"\n{title} ({len(doc[key])}):")
            out.extend(f"  {_flow(f)}: {printable(f['reason'])}" for f in doc[key])
    if doc["alreadyAllowed"]:
        out.append(f"\nAlready allowed ({len(doc['alreadyAllowed'])}): nothing to change for them.")
    for title, key in (("Rejected", "rejected"), ("Lint warnings", "warnings")):
        if doc[key]:
            out.append(f"\n{title}:")
            out.extend(f"  - {printable(w)}" for w in doc[key])
    if doc["changes"]:
        out.append("\nThe manifests: stockade suggest ... -o yaml | kubectl apply -f -")
    return "\n".join(out).strip("\n")


def _comment(lines: Sequence[str]) -> str:
    return "\n".join(f"# {printable(line)}" for line in lines)


def manifests(doc: Mapping[str, Any]) -> str:
    """The manifests as one multi-document YAML stream, comments naming what each admits."""
    parts = [_comment(["stockade suggest", *_summary(doc)])]
    for c in doc["changes"]:
        head = [f"{c['action']} {c['policy']}", *c["why"], *(f"admits {_flow(f)}" for f in c["admits"])]
        head += [f"note: {n}" for n in c["notes"]]
        body = yaml.safe_dump(c["manifest"], sort_keys=False).rstrip("\n")
        parts.append(f"---\n{_comment(head)}\n{body}")
    left = [f"not admitted: {_flow(f)}: {f['reason']}" for f in (*doc["notAdmitted"], *doc["notFixable"])]
    if left:
        parts.append(_comment(left))
    return "\n".join(parts)
