"""Text from agents and the cluster, made safe for a terminal.

Fields the CLI prints (node names, addresses, protocols, pod and policy names, agents' error
texts) come from places an attacker may write to. A raw escape sequence could rewrite the
screen, hide lines or retitle the terminal, so every character that is not plainly printable is
shown as a visible escape instead: ``\\x1b``, ``\\u202e``; a backslash is doubled so that an
escape shown can never be confused with one sent.
"""

from __future__ import annotations


def printable(value: object) -> str:
    """``value`` as text with control, format and other invisible characters escaped."""
    s = str(value)
    if s.isprintable() and "\\" not in s:
        return s  # the usual case: nothing to do
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)
