"""Leases (coordination.k8s.io/v1): the checks the real server makes (``ValidateLeaseSpec``), and
``kubectl get leases`` columns."""

from __future__ import annotations

from ..fielderrors import FieldError, InvalidError, invalid
from .base import AGE_COLUMN, NAME_COLUMN, Cell, Column, KindBehaviour, Obj, age

GROUP = "coordination.k8s.io"


def check_lease(obj: Obj) -> list[FieldError]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    errors: list[FieldError] = []
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        errors.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (not isinstance(transitions, int) or transitions < 0):
        errors.append(invalid("spec.leaseTransitions", transitions, "must be greater than or equal to 0"))
    return errors


class LeaseBehaviour(KindBehaviour):
    def _check(self, obj: Obj) -> None:
        errors = check_lease(obj)
        if errors:
            raise InvalidError("Lease", obj["metadata"]["name"], errors, group=GROUP)

    def on_create(self, obj: Obj) -> None:
        self._check(obj)

    def on_update(self, obj: Obj, old: Obj) -> None:
        self._check(obj)

    def columns(self) -> list[Column]:
        return [NAME_COLUMN, ("Holder", "string", "The identity of the holder of the lease.", 0), AGE_COLUMN]

    def cells(self, obj: Obj) -> list[Cell]:
        spec = obj.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        return [obj["metadata"]["name"], str(spec.get("holderIdentity") or ""), age(obj)]
