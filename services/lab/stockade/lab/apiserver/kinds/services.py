"""Services as the real API server stores them: defaulting (``SetDefaults_Service``), IP family
initialisation, cluster IP and node port allocation with release on delete (pkg/registry/core/
service), and validation (pkg/apis/core/validation ``ValidateService``/``ValidateServiceUpdate``)
with the real messages.

The order is the real one: defaults, IP-family initialisation (which pre-validates the IP fields),
allocation, then the rest of validation; a refused create or update gives back what it took.

Left out: ``externalIPs``, ``loadBalancerSourceRanges``, ``loadBalancerClass`` and
``sessionAffinityConfig`` are stored as given and not validated; there is no LoadBalancer
controller (``status.loadBalancer`` stays empty, as on a cluster without a cloud provider).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..fieldchecks import PORT_RANGE_MSG, port_name_errors
from ..fielderrors import (
    FieldError,
    GoRepr,
    InvalidError,
    duplicate,
    forbidden,
    invalid,
    not_supported,
    required,
)
from ..store import ApiError
from .allocators import AllocationError, IPAllocator, PortAllocator
from .base import AGE_COLUMN, NAME_COLUMN, Cell, Column, KindBehaviour, Obj, age

TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
PROTOCOLS = ("SCTP", "TCP", "UDP")
POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")
FAMILIES = ("IPv4", "IPv6")
AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")
NONE = "None"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1123_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def family_of(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _intstr(value: Any) -> GoRepr:
    if isinstance(value, str):
        return GoRepr(value)
    return GoRepr(str(value))


def _port_struct(protocol: str, port: int) -> GoRepr:
    """How ``field.Duplicate`` prints the (protocol, port) key of a duplicate service port."""
    return GoRepr(
        f'core.ServicePort{{Name:"", Protocol:"{protocol}", AppProtocol:(*string)(nil), Port:{port}, '
        'TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}'
    )


def _zero_nulls(obj: Obj) -> None:
    """The typed decoding (``decoding.check_types``, run by the store first) has accepted the
    shape; what is left is what Go's decoder does with a JSON null: a null spec, port or string
    decodes to the zero value."""
    spec = obj.get("spec")
    if spec is None:
        obj["spec"] = spec = {}
    for key in ("clusterIPs", "ipFamilies"):
        if isinstance(spec.get(key), list):
            spec[key] = ["" if v is None else v for v in spec[key]]
    if isinstance(spec.get("selector"), dict):
        spec["selector"] = {k: "" if v is None else v for k, v in spec["selector"].items()}
    if isinstance(spec.get("ports"), list):
        spec["ports"] = [{} if p is None else p for p in spec["ports"]]


def _defaults(spec: Obj) -> None:
    """SetDefaults_Service, and the clusterIP → clusterIPs conversion."""
    spec.setdefault("type", "ClusterIP")
    if not spec.get("type"):
        spec["type"] = "ClusterIP"
    if not spec.get("sessionAffinity"):
        spec["sessionAffinity"] = "None"
    for p in spec.get("ports") or []:
        if not p.get("protocol"):
            p["protocol"] = "TCP"
        if p.get("targetPort") in (None, 0, ""):
            p["targetPort"] = p.get("port")
    kind = spec["type"]
    if kind in ("NodePort", "LoadBalancer") and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if kind != "ExternalName" and not spec.get("internalTrafficPolicy"):
        spec["internalTrafficPolicy"] = "Cluster"
    if kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    if spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]
    for key in ("clusterIP", "externalTrafficPolicy", "ipFamilyPolicy"):
        if spec.get(key) == "":
            spec.pop(key)
    for key in ("clusterIPs", "ipFamilies"):
        if spec.get(key) == []:
            spec.pop(key)


def _headless(spec: Obj) -> bool:
    ips = spec.get("clusterIPs") or []
    return len(ips) == 1 and ips[0] == NONE


def _externally_accessible(spec: Obj) -> bool:
    return spec.get("type") in ("NodePort", "LoadBalancer") or (
        spec.get("type") == "ClusterIP" and bool(spec.get("externalIPs"))
    )


def _needs_node_ports(spec: Obj) -> bool:
    return spec.get("type") == "NodePort" or (
        spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True)
    )


def _needs_health_check(spec: Obj) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def validate_cluster_ip_fields(spec: Obj) -> list[FieldError]:
    """ValidateServiceClusterIPsRelatedFields."""
    if spec.get("type") == "ExternalName":
        return []
    errs: list[FieldError] = []
    ips: list[str] = spec.get("clusterIPs") or []
    families: list[str] = spec.get("ipFamilies") or []
    if spec.get("clusterIP"):
        if not ips:
            errs.append(required("spec.clusterIPs"))
        elif ips[0] != spec["clusterIP"]:
            errs.append(invalid("spec.clusterIPs", ips, "first value must match `clusterIP`"))
    elif ips:
        errs.append(invalid("spec.clusterIPs", ips, "must be empty when `clusterIP` is not specified"))
    seen: set[str] = set()
    for i, fam in enumerate(families):
        if fam not in FAMILIES:
            errs.append(not_supported(f"spec.ipFamilies[{i}]", fam, FAMILIES))
        if fam in seen:
            errs.append(duplicate(f"spec.ipFamilies[{i}]", fam))
        seen.add(fam)
    policy = spec.get("ipFamilyPolicy")
    if policy is not None and policy not in POLICIES:
        errs.append(not_supported("spec.ipFamilyPolicy", policy, POLICIES))
    bad_ips = False
    for i, ip in enumerate(ips):
        if i == 0 and ip == NONE:
            if len(ips) > 1:
                bad_ips = True
                errs.append(invalid("spec.clusterIPs", ips, "'None' must be the first and only value"))
            continue
        if not _is_ip(ip):
            bad_ips = True
            errs.append(
                invalid(f"spec.clusterIPs[{i}]", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
            )
    if len(ips) > 2:
        errs.append(invalid("spec.clusterIPs", ips, "may only hold up to 2 values"))
    if bad_ips:
        return errs
    if len(ips) > 1 and len({family_of(ip) for ip in ips}) != len(ips):
        errs.append(invalid("spec.clusterIPs", ips, "may specify no more than one IP for each IP family"))
    if not _headless(spec):
        for i, ip in enumerate(ips[: len(families)]):
            if families[i] == "IPv4" and family_of(ip) == "IPv6":
                errs.append(
                    invalid(f"spec.clusterIPs[{i}]", ip, f"expected an IPv4 value as indicated by `ipFamilies[{i}]`")
                )
            if families[i] == "IPv6" and family_of(ip) == "IPv4":
                errs.append(
                    invalid(f"spec.clusterIPs[{i}]", ip, f"expected an IPv6 value as indicated by `ipFamilies[{i}]`")
                )
    return errs


def validate_service(obj: Obj) -> list[FieldError]:
    """ValidateService (the parts a lab cluster meets)."""
    spec = obj["spec"]
    name = obj["metadata"]["name"]
    errs: list[FieldError] = []
    if len(name) > 63 or not _DNS1035.match(name):
        errs.append(invalid("metadata.name", name, _DNS1035_MSG))
    kind = spec.get("type")
    if kind not in TYPES:
        errs.append(not_supported("spec.type", kind, TYPES))
    ports: list[Obj] = spec.get("ports") or []
    if kind == "ExternalName":
        if not spec.get("externalName"):
            errs.append(required("spec.externalName"))
        if spec.get("clusterIP"):
            errs.append(forbidden("spec.clusterIP", "may not be set for ExternalName services"))
    elif not ports and not _headless(spec):
        errs.append(required("spec.ports"))
    names: set[str] = set()
    for i, p in enumerate(ports):
        path = f"spec.ports[{i}]"
        pname = p.get("name") or ""
        if len(ports) > 1 and not pname:
            errs.append(required(f"{path}.name"))
        elif pname:
            if len(pname) > 63 or not _DNS1123.match(pname):
                errs.append(invalid(f"{path}.name", pname, _DNS1123_MSG))
            if pname in names:
                errs.append(duplicate(f"{path}.name", pname))
            names.add(pname)
        port = p.get("port") or 0
        if not 1 <= port <= 65535:
            errs.append(invalid(f"{path}.port", port, PORT_RANGE_MSG))
        proto = p.get("protocol")
        if proto not in PROTOCOLS:
            errs.append(not_supported(f"{path}.protocol", proto, PROTOCOLS))
        tp = p.get("targetPort")
        if isinstance(tp, int):
            if not 1 <= tp <= 65535:
                errs.append(invalid(f"{path}.targetPort", tp, PORT_RANGE_MSG))
        elif isinstance(tp, str):
            errs.extend(invalid(f"{path}.targetPort", _intstr(tp), m) for m in port_name_errors(tp))
        if kind == "ClusterIP" and p.get("nodePort"):
            errs.append(forbidden(f"{path}.nodePort", "may not be used when `type` is 'ClusterIP'"))
        if kind == "ExternalName" and p.get("nodePort"):
            errs.append(forbidden(f"{path}.nodePort", "may not be used when `type` is 'ExternalName'"))
    seen_node: set[tuple[str, int]] = set()
    seen_port: set[tuple[str, int]] = set()
    for i, p in enumerate(ports):
        if p.get("nodePort"):
            key = (p.get("protocol") or "", p["nodePort"])
            if key in seen_node:
                errs.append(duplicate(f"spec.ports[{i}].nodePort", p["nodePort"]))
            seen_node.add(key)
    for i, p in enumerate(ports):
        key = (p.get("protocol") or "", p.get("port") or 0)
        if key in seen_port:
            errs.append(duplicate(f"spec.ports[{i}]", _port_struct(*key)))
        seen_port.add(key)
    affinity = spec.get("sessionAffinity")
    if affinity not in AFFINITIES:
        errs.append(not_supported("spec.sessionAffinity", affinity, AFFINITIES))
    etp = spec.get("externalTrafficPolicy")
    if _externally_accessible(spec):
        if not etp:
            errs.append(required("spec.externalTrafficPolicy"))
        elif etp not in TRAFFIC_POLICIES:
            errs.append(not_supported("spec.externalTrafficPolicy", etp, TRAFFIC_POLICIES))
    elif etp:
        errs.append(invalid("spec.externalTrafficPolicy", etp, "may only be set for externally-accessible services"))
    hc = spec.get("healthCheckNodePort")
    if hc and not _needs_health_check(spec):
        errs.append(
            invalid(
                "spec.healthCheckNodePort",
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            )
        )
    itp = spec.get("internalTrafficPolicy")
    if itp is not None and kind != "ExternalName" and itp not in TRAFFIC_POLICIES:
        errs.append(not_supported("spec.internalTrafficPolicy", itp, TRAFFIC_POLICIES))
    return errs


def validate_update(spec: Obj, old: Obj) -> list[FieldError]:
    """validateUpgradeDowngradeClusterIPs: the primary cluster IP never changes."""
    if "ExternalName" in (spec.get("type"), old.get("type")):
        return []
    new_ips: list[str] = spec.get("clusterIPs") or []
    old_ips: list[str] = old.get("clusterIPs") or []
    if _headless(spec) and _headless(old):
        return []
    errs: list[FieldError] = []
    if len(new_ips) == len(old_ips):
        errs.extend(
            invalid(f"spec.clusterIPs[{i}]", new_ips, "may not change once set")
            for i, ip in enumerate(old_ips)
            if ip != new_ips[i]
        )
    elif len(old_ips) > len(new_ips):
        if not new_ips:
            errs.append(invalid("spec.clusterIPs[0]", new_ips, "primary clusterIP can not be unset"))
        elif new_ips[0] != old_ips[0]:
            errs.append(invalid("spec.clusterIPs[0]", new_ips, "may not change once set"))
        if len(new_ips) == 1 and spec.get("ipFamilyPolicy") != "SingleStack":
            errs.append(
                invalid(
                    "spec.ipFamilyPolicy",
                    spec.get("ipFamilyPolicy"),
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                )
            )
    elif old_ips and new_ips[0] != old_ips[0]:
        errs.append(invalid("spec.clusterIPs[0]", new_ips, "may not change once set"))
    return errs


class ServiceBehaviour(KindBehaviour):
    def __init__(self, cidrs: Sequence[IPAllocator], node_ports: PortAllocator):
        self.ips = {a.family: a for a in cidrs}
        self.default_family = cidrs[0].family
        self.node_ports = node_ports

    # -- hooks -----------------------------------------------------------------------------------

    def snapshot(self) -> object:
        return ({f: a.snapshot() for f, a in self.ips.items()}, self.node_ports.snapshot())

    def restore(self, state: object) -> None:
        assert isinstance(state, tuple)
        ips: dict[str, frozenset[int]] = state[0]
        for family, used in ips.items():
            self.ips[family].restore(used)
        self.node_ports.restore(state[1])

    def on_create(self, obj: Obj) -> None:
        _zero_nulls(obj)
        spec = obj["spec"]
        _defaults(spec)
        name = obj["metadata"]["name"]
        self._init_families(name, spec, None)
        undo: list[Callable[[], None]] = []
        try:
            if spec["type"] != "ExternalName":
                self._alloc_cluster_ips(name, spec, undo)
                if spec["type"] in ("NodePort", "LoadBalancer"):
                    self._alloc_node_ports(name, spec, None, undo)
                if _needs_health_check(spec):
                    self._alloc_health_check(spec, undo)
            errs = validate_service(obj)
            if errs:
                raise InvalidError("Service", name, errs)
        except BaseException:
            for step in reversed(undo):
                step()
            raise

    def on_update(self, obj: Obj, old: Obj) -> None:
        _zero_nulls(obj)
        spec, ospec = obj["spec"], old["spec"]
        _defaults(spec)
        name = obj["metadata"]["name"]
        self._keep_allocated(spec, ospec)
        self._drop_type_dependent(spec, ospec)
        if spec.get("clusterIP", "") != ospec.get("clusterIP", "") and spec.get("clusterIPs") == ospec.get(
            "clusterIPs"
        ):
            # A changed clusterIP with clusterIPs left as they were: clusterIPs follow it (normalizeClusterIPs).
            if spec.get("clusterIP"):
                spec["clusterIPs"] = [spec["clusterIP"]]
            else:
                spec.pop("clusterIPs", None)
        self._init_families(name, spec, ospec)
        errs = validate_update(spec, ospec)
        if errs:
            raise InvalidError("Service", name, errs)
        undo: list[Callable[[], None]] = []
        release: list[Callable[[], None]] = []
        try:
            self._update_cluster_ips(name, spec, ospec, undo, release)
            if spec["type"] in ("NodePort", "LoadBalancer"):
                self._alloc_node_ports(name, spec, ospec, undo)
            old_ports = _node_ports(ospec)
            new_ports = _node_ports(spec)
            release.extend(functools.partial(self.node_ports.release, p) for p in old_ports - new_ports)
            old_hc, new_hc = ospec.get("healthCheckNodePort"), spec.get("healthCheckNodePort")
            if _needs_health_check(spec) and not _needs_health_check(ospec):
                self._alloc_health_check(spec, undo)
            elif _needs_health_check(ospec) and not _needs_health_check(spec):
                spec.pop("healthCheckNodePort", None)
                if old_hc:
                    release.append(lambda: self.node_ports.release(int(old_hc)))
            elif new_hc != old_hc:  # allocated by the server: kept as it was
                if old_hc:
                    spec["healthCheckNodePort"] = old_hc
                else:
                    spec.pop("healthCheckNodePort", None)
            errs = validate_service(obj)
            if errs:
                raise InvalidError("Service", name, errs)
        except BaseException:
            for step in reversed(undo):
                step()
            raise
        for step in release:
            step()

    def on_delete(self, old: Obj) -> None:
        spec = old.get("spec") or {}
        if spec.get("type") != "ExternalName" and not _headless(spec):
            for ip in spec.get("clusterIPs") or []:
                alloc = self.ips.get(family_of(ip))
                if alloc is not None:
                    alloc.release(ip)
        for port in _node_ports(spec):
            self.node_ports.release(port)
        if _needs_health_check(spec) and spec.get("healthCheckNodePort"):
            self.node_ports.release(int(spec["healthCheckNodePort"]))

    # -- IP families (initIPFamilyFields) ---------------------------------------------------------

    def _init_families(self, name: str, spec: Obj, old: Obj | None) -> None:
        if spec["type"] == "ExternalName":
            return
        if old is not None and _matching_prefer_dual(spec, old):
            spec["ipFamilyPolicy"] = "PreferDualStack"
            spec["ipFamilies"] = list(old.get("ipFamilies") or [])
            return
        if not spec.get("ipFamilyPolicy"):
            if old is not None and old.get("ipFamilyPolicy"):
                spec["ipFamilyPolicy"] = old["ipFamilyPolicy"]
            elif spec.get("clusterIP") == NONE and not spec.get("selector"):
                spec["ipFamilyPolicy"] = "RequireDualStack"
            else:
                spec["ipFamilyPolicy"] = "SingleStack"
        errs = validate_cluster_ip_fields(spec)
        if errs:
            raise InvalidError("Service", name, errs)
        policy = spec["ipFamilyPolicy"]
        ips: list[str] = spec.get("clusterIPs") or []
        families: list[str] = list(spec.get("ipFamilies") or [])
        if old is not None:
            if policy == "SingleStack":
                if ips == (old.get("clusterIPs") or []) and len(ips) > 1:
                    spec["clusterIPs"] = ips = ips[:1]
                if families == (old.get("ipFamilies") or []) and len(families) > 1:
                    families = families[:1]
            else:
                if len(ips) < len(old.get("clusterIPs") or []):
                    errs.append(
                        invalid(
                            "spec.ipFamilyPolicy", policy, "must be 'SingleStack' to release the secondary cluster IP"
                        )
                    )
                if len(families) < len(old.get("ipFamilies") or []):
                    errs.append(
                        invalid(
                            "spec.ipFamilyPolicy", policy, "must be 'SingleStack' to release the secondary IP family"
                        )
                    )
        if policy == "SingleStack":
            if len(ips) == 2:
                errs.append(
                    invalid(
                        "spec.ipFamilyPolicy",
                        policy,
                        "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
                    )
                )
            if len(families) == 2:
                errs.append(
                    invalid(
                        "spec.ipFamilyPolicy",
                        policy,
                        "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
                    )
                )
        for i, ip in enumerate(ips):
            if ip == NONE:
                break
            if i >= len(families):
                fam = family_of(ip)
                if fam not in self.ips:
                    errs.append(invalid(f"spec.clusterIPs[{i}]", ips, f"{fam} is not configured on this cluster"))
                else:
                    families.append(fam)
        if errs:
            raise InvalidError("Service", name, errs)
        if spec.get("clusterIP") == NONE and not spec.get("selector"):
            if not families:
                families = [self.default_family]
            if len(families) < 2 and policy != "SingleStack":
                families.append("IPv6" if families[0] == "IPv4" else "IPv4")
            spec["ipFamilies"] = families
            return
        if policy == "RequireDualStack" and len(self.ips) < 2:
            errs.append(
                invalid("spec.ipFamilyPolicy", policy, "this cluster is not configured for dual-stack services")
            )
        for i, fam in enumerate(families):
            if fam not in self.ips:
                errs.append(invalid(f"spec.ipFamilies[{i}]", fam, "not configured on this cluster"))
        if errs:
            raise InvalidError("Service", name, errs)
        if not families:
            families = [self.default_family]
        if policy != "SingleStack" and len(families) == 1 and len(self.ips) == 2:
            families.append("IPv6" if families[0] == "IPv4" else "IPv4")
        spec["ipFamilies"] = families

    # -- allocation ------------------------------------------------------------------------------

    def _alloc_ips(self, name: str, spec: Obj, indexes: list[int], undo: list[Callable[[], None]]) -> None:
        ips: list[str] = spec.setdefault("clusterIPs", [])
        for i in indexes:
            fam = spec["ipFamilies"][i]
            alloc = self.ips[fam]
            while len(ips) <= i:
                ips.append("")
            try:
                ip = alloc.allocate(ips[i]) if ips[i] else alloc.allocate_next()
            except AllocationError as e:
                if not ips[i]:  # the range is full: the real server calls it an internal error
                    raise ApiError(
                        500, "InternalError", f"Internal error occurred: failed to allocate a serviceIP: {e}"
                    ) from None
                raise InvalidError(
                    "Service", name, [invalid("spec.clusterIPs", list(ips), f"failed to allocate IP {ips[i]}: {e}")]
                ) from None
            ips[i] = ip
            undo.append(functools.partial(alloc.release, ip))
        spec["clusterIP"] = ips[0]

    def _alloc_cluster_ips(self, name: str, spec: Obj, undo: list[Callable[[], None]]) -> None:
        if _headless(spec):
            return
        self._alloc_ips(name, spec, list(range(len(spec["ipFamilies"]))), undo)

    def _update_cluster_ips(
        self,
        name: str,
        spec: Obj,
        old: Obj,
        undo: list[Callable[[], None]],
        release: list[Callable[[], None]],
    ) -> None:
        if _matching_prefer_dual(spec, old):
            return
        if old.get("type") == "ExternalName" and spec["type"] != "ExternalName":
            self._alloc_cluster_ips(name, spec, undo)
            return
        if _headless(old):
            return
        if old.get("type") != "ExternalName" and spec["type"] == "ExternalName":
            release.extend(self._releaser(ip) for ip in old.get("clusterIPs") or [])
            return
        old_fams, new_fams = old.get("ipFamilies") or [], spec.get("ipFamilies") or []
        if len(old_fams) == 1 and len(new_fams) == 2:
            self._alloc_ips(name, spec, [1], undo)
        elif len(old_fams) == 2 and len(new_fams) == 1:
            release.append(self._releaser((old.get("clusterIPs") or ["", ""])[1]))

    def _releaser(self, ip: str) -> Callable[[], None]:
        alloc = self.ips.get(family_of(ip))
        return (lambda: alloc.release(ip)) if alloc is not None and ip else (lambda: None)

    def _alloc_node_ports(self, name: str, spec: Obj, old: Obj | None, undo: list[Callable[[], None]]) -> None:
        """initNodePorts / updateNodePorts: requested ports honoured if free, the rest allocated."""
        held = _node_ports(old) if old is not None else set()
        by_port: dict[int, int] = {}
        taken: set[int] = set()
        ports: list[Obj] = spec.get("ports") or []
        for i, p in enumerate(ports):
            if not p.get("nodePort") and not _needs_node_ports(spec):
                continue
            want = p.get("nodePort") or by_port.get(p.get("port") or 0) or _requested(p.get("port"), ports)
            if want:
                if want not in held and want not in taken:
                    try:
                        self.node_ports.allocate(want)
                    except AllocationError as e:
                        raise InvalidError(
                            "Service", name, [invalid(f"spec.ports[{i}].nodePort", want, str(e))]
                        ) from None
                    undo.append(functools.partial(self.node_ports.release, want))
                    taken.add(want)
                p["nodePort"] = want
            else:
                try:
                    got = self.node_ports.allocate_next()
                except AllocationError as e:
                    raise ApiError(
                        500, "InternalError", f"Internal error occurred: failed to allocate a nodePort: {e}"
                    ) from None
                undo.append(functools.partial(self.node_ports.release, got))
                taken.add(got)
                p["nodePort"] = got
            by_port[p.get("port") or 0] = p["nodePort"]

    def _alloc_health_check(self, spec: Obj, undo: list[Callable[[], None]]) -> None:
        want = spec.get("healthCheckNodePort")
        try:
            got = self.node_ports.allocate(int(want)) if want else self.node_ports.allocate_next()
        except AllocationError as e:
            what = f"requested HealthCheck NodePort {want}" if want else "a HealthCheck NodePort"
            raise ApiError(500, "InternalError", f"Internal error occurred: failed to allocate {what}: {e}") from None
        undo.append(lambda: self.node_ports.release(got))
        spec["healthCheckNodePort"] = got

    # -- update preparation ----------------------------------------------------------------------

    @staticmethod
    def _keep_allocated(spec: Obj, old: Obj) -> None:
        """patchAllocatedValues: what the server allocated stays when a client leaves it out."""
        if old.get("type") != "ExternalName" and spec["type"] != "ExternalName":
            if not spec.get("clusterIP") and old.get("clusterIP"):
                spec["clusterIP"] = old["clusterIP"]
            if not spec.get("clusterIPs") and old.get("clusterIPs"):
                spec["clusterIPs"] = list(old["clusterIPs"])
        if _needs_node_ports(old) and spec["type"] in ("NodePort", "LoadBalancer"):
            before = {(p.get("port"), p.get("protocol")): p.get("nodePort") for p in old.get("ports") or []}
            for p in spec.get("ports") or []:
                if not p.get("nodePort") and before.get((p.get("port"), p.get("protocol"))):
                    p["nodePort"] = before[(p.get("port"), p.get("protocol"))]
        if _needs_health_check(old) and _needs_health_check(spec) and not spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = old.get("healthCheckNodePort")

    @staticmethod
    def _drop_type_dependent(spec: Obj, old: Obj) -> None:
        """dropTypeDependentFields: fields the old type needed go when the type changes, if unchanged."""
        if spec["type"] == old.get("type"):
            return
        if spec["type"] == "ExternalName":
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if spec.get(key) == old.get(key):
                    spec.pop(key, None)
        if not _needs_node_ports(spec) and spec["type"] not in ("NodePort", "LoadBalancer"):
            before = {(p.get("port"), p.get("protocol")): p.get("nodePort") for p in old.get("ports") or []}
            for p in spec.get("ports") or []:
                if p.get("nodePort") and before.get((p.get("port"), p.get("protocol"))) == p["nodePort"]:
                    p.pop("nodePort")
        if not _needs_health_check(spec) and spec.get("healthCheckNodePort") == old.get("healthCheckNodePort"):
            spec.pop("healthCheckNodePort", None)
        if not _externally_accessible(spec) and spec.get("externalTrafficPolicy") == old.get("externalTrafficPolicy"):
            spec.pop("externalTrafficPolicy", None)

    # -- kubectl get -----------------------------------------------------------------------------

    def columns(self) -> list[Column]:
        return [
            NAME_COLUMN,
            ("Type", "string", "The type of the service.", 0),
            ("Cluster-IP", "string", "The cluster IP of the service.", 0),
            ("External-IP", "string", "The external IPs of the service.", 0),
            ("Port(s)", "string", "The ports of the service.", 0),
            AGE_COLUMN,
            ("Selector", "string", "The selector of the service.", 1),
        ]

    def cells(self, obj: Obj) -> list[Cell]:
        spec = obj.get("spec") or {}
        kind = spec.get("type") or "ClusterIP"
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        external = list(spec.get("externalIPs") or [])
        if kind == "ExternalName":
            external = [spec.get("externalName") or ""]
        elif kind == "LoadBalancer":
            ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            external += [i.get("ip") or i.get("hostname") or "" for i in ingress]
            if not external:
                external = ["<pending>"]
        ports = []
        for p in spec.get("ports") or []:
            text = f"{p.get('port')}:{p['nodePort']}" if p.get("nodePort") else str(p.get("port"))
            ports.append(f"{text}/{p.get('protocol') or 'TCP'}")
        selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
        return [
            obj["metadata"]["name"],
            kind,
            ",".join(ips) if ips else "<none>",
            ",".join(external) if external else "<none>",
            ",".join(ports) if ports else "<none>",
            age(obj),
            selector or "<none>",
        ]


def _node_ports(spec: Obj | None) -> set[int]:
    if not spec:
        return set()
    return {int(p["nodePort"]) for p in spec.get("ports") or [] if p.get("nodePort")}


def _requested(port: Any, ports: list[Obj]) -> int:
    """findRequestedNodePort: a node port another entry with the same service port asked for."""
    for p in ports:
        if p.get("port") == port and p.get("nodePort"):
            return int(p["nodePort"])
    return 0


def _matching_prefer_dual(spec: Obj, old: Obj) -> bool:
    """isMatchingPreferDualStackClusterIPFields: a PreferDualStack service that kept its IP fields
    is not upgraded or downgraded when the cluster's families change."""
    return (
        old.get("ipFamilyPolicy") == "PreferDualStack"
        and spec.get("ipFamilyPolicy") in (None, "PreferDualStack")
        and spec.get("clusterIPs") == old.get("clusterIPs")
        and spec.get("ipFamilies") in (None, old.get("ipFamilies"))
        and "ExternalName" not in (old.get("type"), spec["type"])
    )
