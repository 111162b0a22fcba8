"""EndpointSlices (discovery.k8s.io/v1): the kind's checks and its ``kubectl get`` columns."""

from __future__ import annotations

from ..fielderrors import InvalidError, invalid, not_supported, required
from .base import AGE_COLUMN, NAME_COLUMN, Cell, Column, KindBehaviour, Obj, age

ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")


class EndpointSliceBehaviour(KindBehaviour):
    def _check(self, obj: Obj) -> None:
        at = obj.get("addressType")
        name = obj["metadata"]["name"]
        if not at:
            raise InvalidError("EndpointSlice", name, [required("addressType")], group="discovery.k8s.io")
        if at not in ADDRESS_TYPES:
            raise InvalidError(
                "EndpointSlice", name, [not_supported("addressType", at, ADDRESS_TYPES)], group="discovery.k8s.io"
            )
        if obj.get("endpoints") is None:
            obj["endpoints"] = []

    def on_create(self, obj: Obj) -> None:
        self._check(obj)

    def on_update(self, obj: Obj, old: Obj) -> None:
        self._check(obj)
        if obj.get("addressType") != old.get("addressType"):
            raise InvalidError(
                "EndpointSlice",
                obj["metadata"]["name"],
                [invalid("addressType", obj.get("addressType"), "field is immutable")],
                group="discovery.k8s.io",
            )

    def columns(self) -> list[Column]:
        return [
            NAME_COLUMN,
            ("AddressType", "string", "The IP protocol for this slice", 0),
            ("Ports", "string", "The ports included in this slice", 0),
            ("Endpoints", "string", "The endpoints included in this slice", 0),
            AGE_COLUMN,
        ]

    def cells(self, obj: Obj) -> list[Cell]:
        ports = [str(p.get("port")) for p in obj.get("ports") or [] if p.get("port") is not None]
        addrs = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
        shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
        return [
            obj["metadata"]["name"],
            obj.get("addressType") or "",
            ",".join(ports) if ports else "<unset>",
            shown or "<unset>",
            age(obj),
        ]
