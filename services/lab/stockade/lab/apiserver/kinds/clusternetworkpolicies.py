"""ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2), served as a CRD-backed resource:
validated by the brain's own parser (``stockade.brain.engine.cnp_parse``: the CRD's schema and CEL
rules, and what Stockade does not support), so the API admits exactly what the brain enforces and
a refusal is the real server's 422 naming the field; and the ``kubectl get clusternetworkpolicies``
columns the CRD's additionalPrinterColumns declare (NAME TIER PRIORITY AGE).

Deviation from a real CRD: the brain's parser refuses unknown fields (a real CRD prunes them) and
``domainNames`` peers (the CRD admits them; Stockade cannot enforce them)."""

from __future__ import annotations

import re
from typing import Any

from stockade.brain.engine.cnp_parse import parse_cnp
from stockade.brain.engine.errors import PolicyError

from ..fielderrors import FieldError, InvalidError, invalid, required
from .base import AGE_COLUMN, NAME_COLUMN, Cell, Column, KindBehaviour, Obj, age

GROUP = "policy.networking.k8s.io"
KIND = "ClusterNetworkPolicy"
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def value_at(obj: Any, path: str) -> Any:
    """The value a field path (``spec.egress[0].protocols[1].tcp``) names; None when absent."""
    cur = obj
    for name, index in _STEP.findall(path):
        if name:
            cur = cur.get(name) if isinstance(cur, dict) else None
        else:
            i = int(index)
            cur = cur[i] if isinstance(cur, list) and i < len(cur) else None
        if cur is None:
            return None
    return cur


def field_error(obj: Obj, e: PolicyError) -> FieldError:
    """The parser's error as the API server's field error (``Required value`` or ``Invalid value``)."""
    if e.message == "is required":
        return required(e.field)
    return invalid(e.field, value_at(obj, e.field), e.message)


def check(obj: Obj) -> None:
    """422 Invalid naming the field, when the brain's parser refuses the object."""
    try:
        parse_cnp(obj)
    except PolicyError as e:
        raise InvalidError(KIND, obj["metadata"]["name"], [field_error(obj, e)], group=GROUP) from None


class ClusterNetworkPolicyBehaviour(KindBehaviour):
    def on_create(self, obj: Obj) -> None:
        check(obj)

    def on_update(self, obj: Obj, old: Obj) -> None:
        check(obj)

    def columns(self) -> list[Column]:
        return [
            NAME_COLUMN,
            ("Tier", "string", "Admin or Baseline.", 0),
            ("Priority", "integer", "Lower runs first within the tier.", 0),
            AGE_COLUMN,
        ]

    def cells(self, obj: Obj) -> list[Cell]:
        spec = obj.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        return [obj["metadata"]["name"], spec.get("tier"), spec.get("priority"), age(obj)]
