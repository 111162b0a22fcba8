"""The REST operations the lab serves, as the OpenAPI documents list them (one neutral description,
rendered by v3.py and v2.py): list, create, read, replace, patch and delete for every resource, its
/status, and the token subresource and TokenReview."""

from __future__ import annotations

from dataclasses import dataclass

from ..resources import Resource
from ..schema import DOCUMENTED, for_resource

# name → (in, type, description)
PARAMETERS: dict[str, tuple[str, str, str]] = {
    "name": ("path", "string", "name of the {kind}"),
    "namespace": ("path", "string", "object name and auth scope, such as for teams and projects"),
    "pretty": ("query", "string", "If 'true', then the output is pretty printed."),
    "allowWatchBookmarks": ("query", "boolean", "Ask for BOOKMARK events on a watch (the server may send them)."),
    "continue": ("query", "string", "The continue token of the previous page of a paged list."),
    "fieldSelector": ("query", "string", "Select objects by fields (metadata.name=x, involvedObject.name=y)."),
    "labelSelector": ("query", "string", "Select objects by labels (app=web,tier!=db)."),
    "limit": ("query", "integer", "The most items a page holds; a continue token then follows."),
    "resourceVersion": ("query", "string", "The version to list at or watch from."),
    "resourceVersionMatch": ("query", "string", "How resourceVersion applies to a list."),
    "sendInitialEvents": ("query", "boolean", "Start a watch with the current objects, then a bookmark."),
    "timeoutSeconds": ("query", "integer", "End a list or watch call after this long."),
    "watch": ("query", "boolean", "Watch for changes and stream them as ADDED, MODIFIED and DELETED events."),
    "dryRun": (
        "query",
        "string",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized "
        "dryRun directive will result in an error response and no further processing of the request. Valid "
        "values are: - All: all dry run stages will be processed",
    ),
    "fieldManager": ("query", "string", "A name for the actor making the change (at most 128 characters)."),
    "fieldValidation": (
        "query",
        "string",
        "How the server treats unknown and duplicate fields in the object: Ignore (dropped silently), Warn "
        "(dropped, with a warning header for each; the default) or Strict (the request fails with 400).",
    ),
    "force": ("query", "boolean", "Re-acquire conflicting fields (apply patches only)."),
    "gracePeriodSeconds": ("query", "integer", "Seconds before the object is deleted; 0 deletes at once."),
    "orphanDependents": ("query", "boolean", "Deprecated: use propagationPolicy."),
    "propagationPolicy": ("query", "string", "Orphan, Background or Foreground: what happens to dependents."),
}
LIST_QUERY = (
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
)
WRITE_QUERY = ("dryRun", "fieldManager", "fieldValidation")
PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
# A custom resource has no Go type to take patch strategies from: no strategic-merge patches (so
# kubectl apply sends a JSON merge patch, as to a real CRD's objects).
CUSTOM_PATCH_TYPES = tuple(t for t in PATCH_TYPES if "strategic" not in t)
META = "io.k8s.apimachinery.pkg.apis.meta.v1."


@dataclass(frozen=True)
class Operation:
    method: str  # get, post, put, patch, delete
    operation_id: str
    description: str
    action: str  # x-kubernetes-action: list, get, post, put, patch, delete
    gvk: tuple[str, str, str]
    tag: str
    query: tuple[str, ...] = ()
    body: str = ""  # the request body's definition ("" for none)
    consumes: tuple[str, ...] = ("*/*",)
    responses: tuple[tuple[str, str, str], ...] = ()  # (code, description, definition)
    streams: bool = False  # a list: also served as a watch stream


@dataclass(frozen=True)
class PathItem:
    path: str
    parameters: tuple[str, ...]
    operations: tuple[Operation, ...]
    kind: str  # for the name parameter's description


def _camel(group: str, version: str) -> str:
    head = group.split(".")[0] if group else "core"
    return head[0].upper() + head[1:] + version[0].upper() + version[1:]


def _tag(group: str, version: str) -> str:
    return f"{group.split('.')[0] if group else 'core'}_{version}"


def _package(res: Resource) -> str:
    definition = for_resource(res)
    assert definition is not None, f"{res.kind} has no definition in the schema"
    return definition.name


def resource_paths(res: Resource) -> list[PathItem]:
    prefix = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
    gvk = (res.group, res.version, res.kind)
    camel, tag, kind = _camel(res.group, res.version), _tag(res.group, res.version), res.kind
    definition = for_resource(res)
    assert definition is not None, f"{res.kind} has no definition in the schema"
    obj = definition.name
    listed = obj + "List"
    ok_created = (("200", "OK", obj), ("201", "Created", obj))
    scope = "Namespaced" if res.namespaced else ""
    base = f"{prefix}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"
    scope_params: tuple[str, ...] = ("namespace",) if res.namespaced else ()

    def op(method: str, verb: str, action: str, desc: str, **kw: object) -> Operation:
        return Operation(method, f"{verb}{camel}{scope}{kind}", desc, action, gvk, tag, **kw)  # type: ignore[arg-type]

    items: list[PathItem] = []
    if res.namespaced:
        everywhere = Operation(
            "get",
            f"list{camel}{kind}ForAllNamespaces",
            f"list or watch objects of kind {kind}",
            "list",
            gvk,
            tag,
            responses=(("200", "OK", listed),),
            streams=True,
        )
        items.append(PathItem(f"{prefix}/{res.plural}", (*LIST_QUERY, "pretty"), (everywhere,), kind))
    collection = (
        op(
            "get",
            "list",
            "list",
            f"list or watch objects of kind {kind}",
            query=LIST_QUERY,
            responses=(("200", "OK", listed),),
            streams=True,
        ),
        op(
            "post",
            "create",
            "post",
            f"create a {kind}",
            query=WRITE_QUERY,
            body=obj,
            responses=(*ok_created, ("202", "Accepted", obj)),
        ),
    )
    items.append(PathItem(base, (*scope_params, "pretty"), collection, kind))
    one = (
        op("get", "read", "get", f"read the specified {kind}", responses=(("200", "OK", obj),)),
        op(
            "put",
            "replace",
            "put",
            f"replace the specified {kind}",
            query=WRITE_QUERY,
            body=obj,
            responses=ok_created,
        ),
        op(
            "patch",
            "patch",
            "patch",
            f"partially update the specified {kind}",
            query=(*WRITE_QUERY, "force"),
            body=META + "Patch",
            consumes=CUSTOM_PATCH_TYPES if res.crd else PATCH_TYPES,
            responses=ok_created,
        ),
        op(
            "delete",
            "delete",
            "delete",
            f"delete a {kind}",
            query=("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy"),
            body=META + "DeleteOptions",
            responses=(("200", "OK", obj), ("202", "Accepted", obj)),
        ),
    )
    items.append(PathItem(base + "/{name}", ("name", *scope_params, "pretty"), one, kind))
    if res.has_status:
        status = tuple(
            Operation(
                o.method,
                o.operation_id + "Status",
                o.description.replace("the specified", "status of the specified"),
                o.action,
                gvk,
                tag,
                query=o.query,
                body=o.body,
                consumes=o.consumes,
                responses=o.responses,
            )
            for o in one[:3]
        )
        items.append(PathItem(base + "/{name}/status", ("name", *scope_params, "pretty"), status, kind))
    return items


def _token_paths() -> dict[tuple[str, str], list[PathItem]]:
    auth = "io.k8s.api.authentication.v1."
    request = Operation(
        "post",
        "createCoreV1NamespacedServiceAccountToken",
        "create token of a ServiceAccount",
        "post",
        ("authentication.k8s.io", "v1", "TokenRequest"),
        "core_v1",
        body=auth + "TokenRequest",
        responses=tuple((c, d, auth + "TokenRequest") for c, d in (("200", "OK"), ("201", "Created"))),
    )
    review = Operation(
        "post",
        "createAuthenticationV1TokenReview",
        "create a TokenReview",
        "post",
        ("authentication.k8s.io", "v1", "TokenReview"),
        "authentication_v1",
        query=WRITE_QUERY,
        body=auth + "TokenReview",
        responses=tuple((c, d, auth + "TokenReview") for c, d in (("200", "OK"), ("201", "Created"))),
    )
    sa_token = "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
    return {
        ("", "v1"): [PathItem(sa_token, (*WRITE_QUERY, "name", "namespace", "pretty"), (request,), "TokenRequest")],
        ("authentication.k8s.io", "v1"): [
            PathItem("/apis/authentication.k8s.io/v1/tokenreviews", ("pretty",), (review,), "TokenReview")
        ],
    }


def group_version_paths(group: str, version: str) -> list[PathItem]:
    """Every path of one group-version, as its document lists them."""
    out = [p for r in DOCUMENTED if (r.group, r.version) == (group, version) for p in resource_paths(r)]
    return out + _token_paths().get((group, version), [])
