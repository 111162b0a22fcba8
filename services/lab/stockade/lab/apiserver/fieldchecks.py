"""Checks several kinds share, with apimachinery's messages: port numbers and names
(``IsValidPortNum``, ``IsValidPortName``), label selectors (``ValidateLabelSelector``) and CIDRs
as ``netutils.ParseCIDRSloppy`` reads them (IPv4 octets may have leading zeros)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .fielderrors import FieldError, forbidden, invalid, required
from .validation import label_errors, label_value, qualified_name

PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def port_num_errors(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else [PORT_RANGE_MSG]


def port_name_errors(name: str) -> list[str]:
    """``validation.IsValidPortName``: an IANA service name."""
    out = []
    if len(name) > 15:
        out.append("must be no more than 15 characters")
    if not re.fullmatch(r"[-a-z0-9]+", name):
        out.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search(r"[a-z]", name):
        out.append("must contain at least one letter (a-z)")
    if "--" in name:
        out.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        out.append("must not begin or end with a hyphen")
    return out


def _ipv4_sloppy(text: str) -> ipaddress.IPv4Address | None:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    octets = [int(p) for p in parts]
    return ipaddress.IPv4Address(bytes(octets)) if all(o <= 255 for o in octets) else None


def parse_cidr(text: str) -> IPNetwork | None:
    """The network a CIDR names (host bits cleared), or None where ParseCIDRSloppy fails."""
    addr, slash, mask = text.partition("/")
    if not slash or not (mask.isascii() and mask.isdigit()) or len(mask) > 7:
        return None
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    if ":" in addr:
        if "%" in addr:  # a zone is not a CIDR's
            return None
        try:
            ip = ipaddress.IPv6Address(addr)
        except ValueError:
            return None
    else:
        ip = _ipv4_sloppy(addr)
    if ip is None or int(mask) > ip.max_prefixlen:
        return None
    return ipaddress.ip_network((ip, int(mask)), strict=False)


def _requirement_errors(expr: Any, path: str, allow_invalid_values: bool) -> list[FieldError]:
    expr = expr if isinstance(expr, dict) else {}
    op, key, values = expr.get("operator") or "", expr.get("key") or "", expr.get("values") or []
    out: list[FieldError] = []
    if op in ("In", "NotIn"):
        if not values:
            out.append(required(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
    elif op in ("Exists", "DoesNotExist"):
        if values:
            out.append(
                forbidden(f"{path}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
            )
    else:
        out.append(invalid(f"{path}.operator", op, "not a valid selector operator"))
    out += [invalid(f"{path}.key", key, m) for m in qualified_name(key)]
    if not allow_invalid_values:
        for i, v in enumerate(values):
            out += [invalid(f"{path}.values[{i}]", v or "", m) for m in label_value(v or "")]
    return out


def label_selector_errors(selector: Any, path: str, allow_invalid_values: bool = False) -> list[FieldError]:
    """``ValidateLabelSelector``: matchLabels as labels, then each requirement."""
    if not isinstance(selector, dict):
        return []
    out = label_errors(selector.get("matchLabels") or {}, f"{path}.matchLabels")
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        out += _requirement_errors(expr, f"{path}.matchExpressions[{i}]", allow_invalid_values)
    return out


def format_label_selector(selector: Any) -> str:
    """``metav1.FormatLabelSelector``: what ``kubectl get`` shows for a selector (``<none>`` for an
    empty one, ``<error>`` for one that does not parse)."""
    if not isinstance(selector, dict):
        return "<none>"
    terms: list[tuple[str, str]] = []
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        terms.append((key, f"{key}={value}"))
    for expr in selector.get("matchExpressions") or []:
        if not isinstance(expr, dict):
            return "<error>"
        key, op, values = expr.get("key") or "", expr.get("operator"), sorted(expr.get("values") or [])
        if op in ("In", "NotIn") and values:
            terms.append((key, f"{key} {op.lower()} ({','.join(values)})"))
        elif op == "Exists" and not values:
            terms.append((key, key))
        elif op == "DoesNotExist" and not values:
            terms.append((key, f"!{key}"))
        else:
            return "<error>"
    text = ",".join(t for _, t in sorted(terms, key=lambda t: t[0]))
    return text or "<none>"
