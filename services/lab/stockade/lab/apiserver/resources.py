"""The resources the server knows, and how their URLs and discovery documents look."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    """One REST view of a stored resource (a group/version/plural triple)."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    storage: str  # the key the objects are kept under; views of one storage share objects
    short_names: tuple[str, ...] = ()
    has_status: bool = True  # a /status subresource
    categories: tuple[str, ...] = ()  # e.g. "all", for `kubectl get all`
    # A custom resource: the name of the CustomResourceDefinition that serves it (served only
    # while that object is stored, as a real server serves a CRD's resource once it is created).
    crd: str = ""
    # The status is written only through /status: a create or a main-resource update leaves it be
    # (a CRD with the status subresource, and CRDs themselves).
    status_apart: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def singular(self) -> str:
        return self.kind.lower()


RBAC = "rbac.authorization.k8s.io"
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False, "namespaces", ("ns",)),
    Resource("", "v1", "pods", "Pod", True, "pods", ("po",), categories=("all",)),
    Resource("", "v1", "nodes", "Node", False, "nodes", ("no",)),
    Resource("", "v1", "services", "Service", True, "services", ("svc",), categories=("all",)),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, "networkpolicies", ("netpol",)),
    # The seed article's API: the same objects, read and written under the old group (no short
    # name: "netpol" is the current group's, and kubectl warns when two groups claim one).
    Resource("extensions", "v1beta1", "networkpolicies", "NetworkPolicy", True, "networkpolicies"),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, "endpointslices", has_status=False),
    # Leader election (the brain's Lease) and the Events it writes (kinds/leases.py, kinds/events.py).
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True, "leases", has_status=False),
    Resource("", "v1", "events", "Event", True, "events", ("ev",), has_status=False),
    # RBAC (kinds/rbac.py; evaluated by rbac.py for requests and SubjectAccessReviews).
    Resource(RBAC, "v1", "clusterroles", "ClusterRole", False, "clusterroles", has_status=False),
    Resource(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False, "clusterrolebindings", has_status=False),
    Resource(RBAC, "v1", "roles", "Role", True, "roles", has_status=False),
    Resource(RBAC, "v1", "rolebindings", "RoleBinding", True, "rolebindings", has_status=False),
    # CustomResourceDefinitions (kinds/crds.py): only the ones the lab knows how to serve, below.
    Resource(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        "customresourcedefinitions",
        ("crd", "crds"),
        status_apart=True,
    ),
    # ClusterNetworkPolicy (network-policy-api v0.2.0), CRD-backed (kinds/clusternetworkpolicies.py).
    Resource(
        "policy.networking.k8s.io",
        "v1alpha2",
        "clusternetworkpolicies",
        "ClusterNetworkPolicy",
        False,
        "clusternetworkpolicies",
        ("cnp",),
        crd="clusternetworkpolicies.policy.networking.k8s.io",
        status_apart=True,
    ),
)


@dataclass(frozen=True)
class Listed:
    """A resource discovery lists that is not stored: the create-only reviews (answered by
    server.py) and ``brains.stockade.io``, the name RBAC rules give the brain's admin API (the
    brain asks SubjectAccessReviews about it; nothing is served there). Lab deviation: a real
    cluster lists it only if something registers it; the lab lists it so that ``kubectl create
    clusterrole --resource=brains.stockade.io`` and ``kubectl auth can-i`` resolve it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]


LISTED: tuple[Listed, ...] = (
    Listed("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False, ("create",)),
    Listed("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False, ("create",)),
    Listed("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", False, ("create",)),
    Listed("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False, ("create",)),
    Listed("stockade.io", "v1", "brains", "Brain", False, ("get", "update")),
)
# The storages of custom resources, by the name of the CRD that serves them.
CRD_STORAGE: dict[str, str] = {r.crd: r.storage for r in RESOURCES if r.crd}
# Storages a server does not serve now (custom resources whose CRD is absent).
Hidden = frozenset[str]

# The view objects are stored as (and watch events are first serialised as).
STORAGE_VIEW: dict[str, Resource] = {}
for _r in RESOURCES:
    STORAGE_VIEW.setdefault(_r.storage, _r)

BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in RESOURCES}


def find(group: str, version: str, plural: str, hidden: Hidden = frozenset()) -> Resource | None:
    r = BY_PATH.get((group, version, plural))
    return None if r is None or r.storage in hidden else r


def by_kind(kind: str, api_version: str | None = None) -> Resource:
    """The resource for a kind (and optional apiVersion), as found in a manifest."""
    for r in RESOURCES:
        if r.kind == kind and (api_version is None or r.api_version == api_version):
            return r
    raise KeyError(f"unknown kind {kind!r} (apiVersion {api_version!r})")


def group_versions(hidden: Hidden = frozenset()) -> dict[str, list[str]]:
    """Group name → its versions, in the order they are declared ("" is the core group)."""
    out: dict[str, list[str]] = {}
    served = [(r.group, r.version) for r in RESOURCES if r.storage not in hidden]
    for group, version in served + [(x.group, x.version) for x in LISTED]:
        versions = out.setdefault(group, [])
        if version not in versions:
            versions.append(version)
    return out


def api_versions_doc() -> dict[str, Any]:
    """GET /api"""
    return {
        "kind": "APIVersions",
        "versions": group_versions()[""],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def _group_doc(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list_doc(hidden: Hidden = frozenset()) -> dict[str, Any]:
    """GET /apis"""
    groups = [_group_doc(g, vs) for g, vs in group_versions(hidden).items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group_doc(group: str, hidden: Hidden = frozenset()) -> dict[str, Any] | None:
    """GET /apis/{group}"""
    versions = group_versions(hidden).get(group)
    return _group_doc(group, versions) if group and versions else None


def resource_list_doc(group: str, version: str, hidden: Hidden = frozenset()) -> dict[str, Any] | None:
    """GET /api/v1 or /apis/{group}/{version}"""
    found = [r for r in RESOURCES if r.group == group and r.version == version and r.storage not in hidden]
    listed = [x for x in LISTED if (x.group, x.version) == (group, version)]
    if not found and not listed:
        return None
    items: list[dict[str, Any]] = []
    for r in found:
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
            "shortNames": list(r.short_names),
        }
        if r.categories:
            entry["categories"] = list(r.categories)
        items.append(entry)
        if not r.has_status:
            continue
        items.append(
            {
                "name": f"{r.plural}/status",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }
        )
    for x in listed:
        entry = {"name": x.plural, "singularName": x.kind.lower(), "namespaced": x.namespaced, "kind": x.kind}
        items.append({**entry, "verbs": list(x.verbs)})
    group_version = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": items}
