"""The HTTP face of the store: Kubernetes REST paths, watch streams, auth, TLS and injected faults."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import secrets
import ssl
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiohttp.typedefs import LooseHeaders

from . import resources as R
from .auth import ADMIN, REVIEW_KINDS, access_review, admin_user_info, bearer, check, user_from_review
from .controllers import EndpointSliceController
from .decoding import DecodeError
from .fielderrors import InvalidError, invalid
from .kinds import DEFAULT_NODE_PORTS, DEFAULT_SERVICE_CIDRS, KindBehaviour, behaviours
from .kinds.base import Cell, Column
from .kinds.crds import builtin_crds
from .openapi.serve import openapi
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .rbac import Attributes, Policy, UserInfo, bootstrap_policy
from .resources import Resource
from .schema import for_resource, merge_keys
from .selectors import Matcher, SelectorError, both, field_matcher, label_matcher
from .store import ApiError, Bookmark, Event, Obj, Store, Watcher
from .tls import self_signed
from .tokens import TokenIssuer
from .typed import decode
from .writes import Dups, check_preconditions, judge, read_body, warning_headers, write_options

JSON = "application/json"
# FAULT INJECTION (tests only, off unless the server is made with fault_injection=True): POST an
# object here and it is stored and served verbatim, past every check (see inject_object).
RAW_OBJECTS_PATH = "/fault-injection/v1/raw-objects"
USER = web.RequestKey("user", UserInfo)  # who the request is (auth.py)
SA_TOKEN = ["serviceaccounts", "token"]  # /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(obj: Any, status: int = 200, headers: LooseHeaders | None = None) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type=JSON, headers=headers)


def _error(err: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return _json(err.status(), err.code, headers)


@dataclass
class Fault:
    """Answer the next `remaining` matching requests with `status` instead of serving them."""

    status: int
    remaining: int
    retry_after: float | None = None
    verbs: frozenset[str] | None = None  # None: every verb
    resources: frozenset[str] | None = None  # plurals; None: every resource

    def matches(self, verb: str, plural: str) -> bool:
        return (
            self.remaining > 0
            and (self.verbs is None or verb in self.verbs)
            and (self.resources is None or plural in self.resources)
        )


@dataclass
class Route:
    res: Resource
    namespace: str
    name: str | None
    sub: str | None
    watch_path: bool


def _parse_path(path: str, hidden: R.Hidden = frozenset()) -> Route | Obj | None:
    """A resource route, or the discovery document the path names, or None (404). ``hidden``:
    the storages not served now (custom resources without their CRD)."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return None
    if parts[0] == "api":
        if len(parts) == 1:
            return R.api_versions_doc()
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) == 1:
            return R.api_group_list_doc(hidden)
        if len(parts) == 2:
            return R.api_group_doc(parts[1], hidden)
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return R.resource_list_doc(group, version, hidden)
    watch_path = rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        inner = R.find(group, version, rest[2], hidden)
        if inner is not None and inner.namespaced:
            namespace, rest = rest[1], rest[2:]
    res = R.find(group, version, rest[0], hidden) if rest else None
    if res is None or len(rest) > 3 or (len(rest) == 3 and (rest[2] != "status" or not res.has_status)):
        return None
    if not namespace and res.namespaced and len(rest) > 1:
        return None  # a namespaced object is only addressed inside its namespace
    return Route(res, namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None, watch_path)


def _table_version(request: web.Request) -> str | None:
    """The meta.k8s.io Table version the client accepts first (``as=Table;v=v1;g=meta.k8s.io``), if any."""
    for part in request.headers.get("Accept", "").split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return params["v"]
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _present(obj: Obj, res: Resource, *, in_list: bool = False) -> Obj:
    """An object as the given view shows it (list items carry no kind/apiVersion, as in Kubernetes)."""
    if in_list:
        return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
    if obj.get("apiVersion") != res.api_version:
        return {**obj, "apiVersion": res.api_version}
    return obj


def _plain_cells(columns: list[Column], obj: Obj) -> list[Cell]:
    """The row of an object the kind cannot print (only fault injection stores such): name and age."""
    name, when = KindBehaviour().cells(obj)
    return [name if c[0] == "Name" else when if c[0] == "Age" else "<unknown>" for c in columns]


class ApiServer:
    """A small Kubernetes API server over an in-memory store. See the package docstring."""

    def __init__(
        self,
        *,
        token: str | None = None,
        tls: bool = False,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        history_size: int = 10_000,
        bookmark_interval: float = 10.0,
        default_watch_timeout: float = 1800.0,
        service_cidrs: Sequence[str] = DEFAULT_SERVICE_CIDRS,
        node_port_range: str = DEFAULT_NODE_PORTS,
        fault_injection: bool = False,
        crds: bool = True,
    ):
        """``crds``: install the CRDs of the custom resources the lab serves at start (False: they
        are served once their CRD is created, e.g. by ``kubectl apply -f deploy/crds/``)."""
        self.behaviours: dict[str, KindBehaviour] = behaviours(service_cidrs, node_port_range)
        self.store = Store(history_size=history_size, behaviours=self.behaviours)
        self.endpoint_slices = EndpointSliceController(self.store)
        self.tokens = TokenIssuer(self.store)  # TokenRequest and TokenReview (tokens.py)
        self.token = token
        self.tokens.static = {token: admin_user_info()} if token else {}  # TokenReview answers for it too
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.faults: list[Fault] = []
        self.fault_injection = fault_injection  # serves RAW_OBJECTS_PATH
        # continue token → (the list's items, its version, where the next page starts)
        self._snapshots: OrderedDict[str, tuple[list[Obj], int, int]] = OrderedDict()
        self.requests: Counter[tuple[str, str]] = Counter()  # (verb, plural) → count, for tests
        self._tls = tls or bool(tls_cert)
        self._tls_files: tuple[str, str | None] | None = (tls_cert, tls_key) if tls_cert else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0
        if crds:
            self.install_crds()
        self.install_bootstrap_policy()

    # -- lifecycle -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        ctx = None
        if self._tls:
            if self._tls_files is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="stockade-apiserver-")
                cert, key = self_signed(Path(self._tmp.name))
                self._tls_files = (str(cert), str(key))
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self._tls_files[0], self._tls_files[1])
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ctx)
        await site.start()
        self.host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self.host}:{self.port}"

    def kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig for this server that kubernetes-asyncio (and kubectl) can load."""
        cluster: Obj = {"server": self.url}
        if self._tls_files:
            cluster["certificate-authority-data"] = base64.b64encode(Path(self._tls_files[0]).read_bytes()).decode()
        user: Obj = {"token": self.token} if self.token else {}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": "stockade-lab", "cluster": cluster}],
            "users": [{"name": "stockade-lab", "user": user}],
            "contexts": [{"name": "stockade-lab", "context": {"cluster": "stockade-lab", "user": "stockade-lab"}}],
            "current-context": "stockade-lab",
        }
        out = Path(path)
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        return out

    # -- direct access for tests and the lab ------------------------------------------------------

    @staticmethod
    def _storage_of(obj: Obj) -> str:
        return R.by_kind(obj.get("kind", ""), obj.get("apiVersion")).storage

    def put_object(self, obj: Obj) -> Obj:
        """Create or replace an object (a dict as in a manifest), whatever its stored version."""
        return self.store.put(self._storage_of(obj), obj)

    def delete_object(self, kind: str, name: str, namespace: str = "") -> Obj:
        return self.store.delete(R.by_kind(kind).storage, namespace, name)

    def get_object(self, kind: str, name: str, namespace: str = "") -> Obj:
        return copy.deepcopy(self.store.get(R.by_kind(kind).storage, namespace, name))

    def list_objects(self, kind: str) -> list[Obj]:
        return copy.deepcopy(self.store.list(R.by_kind(kind).storage)[0])

    def install_crds(self) -> list[Obj]:
        """Create (or replace) the CRD of every custom resource the lab serves (``kinds/crds.py``)."""
        return [self.put_object(crd) for crd in builtin_crds()]

    def install_bootstrap_policy(self) -> list[Obj]:
        """Create (or replace) the default RBAC roles and bindings (``rbac.bootstrap_policy``)."""
        return [self.put_object(o) for o in bootstrap_policy()]

    def policy(self) -> Policy:
        """The RBAC objects stored now, for the authorizer."""
        return Policy.from_objects(self.store.objects)

    def hidden(self) -> R.Hidden:
        """The storages not served now: custom resources whose CRD is not stored."""
        crds = self.store.objects["customresourcedefinitions"]
        return frozenset(storage for name, storage in R.CRD_STORAGE.items() if ("", name) not in crds)

    @property
    def resource_version(self) -> int:
        return self.store.rv

    # -- faults and time for tests ---------------------------------------------------------------

    def compact(self, keep: int = 0) -> None:
        """Forget the event history: a watch from an older resourceVersion gets 410 Expired."""
        self.store.compact(keep)
        self._snapshots.clear()  # an unfinished paged list now gets 410 on its next page

    def send_bookmarks(self) -> None:
        """Have every open watch that asked for bookmarks send one now."""
        for w in list(self.store.watchers):
            w.bookmark(self.store.rv)

    def inject_fault(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: float | None = None,
        verbs: set[str] | None = None,
        resources: set[str] | None = None,
    ) -> Fault:
        """Answer the next `count` matching resource requests with `status` (e.g. 429 or 500)."""
        fault = Fault(
            status, count, retry_after, frozenset(verbs) if verbs else None, frozenset(resources) if resources else None
        )
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def inject_object(self, obj: Obj) -> Obj:
        """FAULT INJECTION: store and serve ``obj`` verbatim, bypassing decoding and validation
        (what a buggy or newer API server could serve); see Store.inject_raw."""
        if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
            raise ApiError(400, "BadRequest", "fault injection: the object needs a kind")
        try:
            storage = self._storage_of(obj)
        except KeyError as e:
            raise ApiError(400, "BadRequest", f"fault injection: {e.args[0]}") from e
        return self.store.inject_raw(storage, obj)

    def drop_watches(self) -> int:
        """Cut every open watch connection at once; returns how many."""
        watchers = [w for w in self.store.watchers if not w.dropped]
        for w in watchers:
            w.drop()
        return len(watchers)

    def freeze_watches(self) -> int:
        """Make every open watch go silent (no events, no bookmarks) while staying connected."""
        watchers = [w for w in self.store.watchers if not (w.dropped or w.frozen)]
        for w in watchers:
            w.freeze()
        return len(watchers)

    @property
    def watch_count(self) -> int:
        """Open watches that are neither cut nor silenced."""
        return sum(1 for w in self.store.watchers if not (w.dropped or w.frozen))

    # -- HTTP ------------------------------------------------------------------------------------

    def authenticate(self, header: str) -> UserInfo | None:
        """The user an Authorization header authenticates as; None: 401 (see auth.py)."""
        token = bearer(header)
        if token is not None and self.token and secrets.compare_digest(token, self.token):
            return ADMIN
        if token is not None:
            user = self.tokens.api_user(token)
            if user is not None:
                return user_from_review(user)
            if self.tokens.signed(token):
                return None  # ours, but expired, for another audience or bound to a deleted pod
        return None if self.token else ADMIN

    def _check(self, request: web.Request, attrs: Attributes) -> None:
        """403 unless the request's user may do ``attrs``."""
        check(request[USER], attrs, self.policy)

    def _check_path(self, request: web.Request) -> None:
        self._check(request, Attributes(request.method.lower(), path=request.path, resource_request=False))

    def _take_fault(self, verb: str, plural: str) -> web.Response | None:
        for fault in self.faults:
            if fault.matches(verb, plural):
                fault.remaining -= 1
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                reason = {
                    410: "Expired",
                    429: "TooManyRequests",
                    500: "InternalError",
                    503: "ServiceUnavailable",
                    504: "Timeout",
                }.get(fault.status, "InternalError")
                return _error(ApiError(fault.status, reason, f"injected fault ({fault.status})"), headers)
        self.faults = [f for f in self.faults if f.remaining > 0]
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/version":
            return _json({"major": "1", "minor": "30", "gitVersion": "v1.30.0-stockade-lab", "platform": "linux/amd64"})
        user = self.authenticate(request.headers.get("Authorization", ""))
        if user is None:
            return _error(ApiError(401, "Unauthorized", "Unauthorized"))
        request[USER] = user
        if request.method == "POST" and (answer := await self._tokens(request, path)) is not None:
            return answer  # each authorized there, as the resource it is
        openapi_get = path.startswith("/openapi/") and request.method == "GET"
        raw_objects = path == RAW_OBJECTS_PATH and self.fault_injection
        hidden = self.hidden()
        route = None if openapi_get or raw_objects else _parse_path(path, hidden)
        if not isinstance(route, Route):
            try:  # a non-resource request: authorized by its path, before it is found missing (as real)
                self._check_path(request)
            except ApiError as e:
                return _error(e)
        if openapi_get:
            served = openapi(request, hidden)
            if served is not None:
                return served
            return _error(ApiError(404, "NotFound", "the server could not find the requested resource"))
        if raw_objects:
            if request.method != "POST":
                return _error(ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed here"))
            try:
                return _json(self.inject_object(await self._body(request)), 201)
            except ApiError as e:
                return _error(e)
        if route is None:
            return _error(ApiError(404, "NotFound", "the server could not find the requested resource"))
        if not isinstance(route, Route):
            if request.method != "GET":
                return _error(ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed here"))
            return _json(route)
        try:
            verb = self._verb(request, route)
            res = route.res
            self._check(
                request, Attributes(verb, route.namespace, res.group, res.plural, route.sub or "", route.name or "")
            )
            self.requests[(verb, route.res.plural)] += 1
            faulted = self._take_fault(verb, route.res.plural)
            if faulted is not None:
                return faulted
            if verb == "watch":
                return await self._watch(request, route)
            return await self._serve(request, route, verb)
        except ApiError as e:
            return _error(e)

    async def _tokens(self, request: web.Request, path: str) -> web.Response | None:
        """TokenReview and the serviceaccounts/<sa>/token subresource; None for any other path."""
        parts = [p for p in path.split("/") if p]
        try:
            if parts == ["apis", "authentication.k8s.io", "v1", "tokenreviews"]:
                self._check(request, Attributes("create", group="authentication.k8s.io", resource="tokenreviews"))
                self.requests[("create", "tokenreviews")] += 1
                return _json(self.tokens.token_review(await self._body(request)), 201)
            if len(parts) == 4 and parts[:3] == ["apis", "authorization.k8s.io", "v1"] and parts[3] in REVIEW_KINDS:
                self._check(request, Attributes("create", group="authorization.k8s.io", resource=parts[3]))
                self.requests[("create", parts[3])] += 1
                body = await self._body(request)
                return _json(access_review(parts[3], body, request[USER], self.policy()), 201)
            if (
                len(parts) == 7
                and parts[:3] == ["api", "v1", "namespaces"]
                and parts[4::2] == ["serviceaccounts", "token"]
            ):
                self._check(request, Attributes("create", parts[3], "", "serviceaccounts", "token", parts[5]))
                self.requests[("create", "serviceaccounts/token")] += 1
                self.store.get("namespaces", "", parts[3])
                return _json(self.tokens.token_request(parts[3], parts[5], await self._body(request)), 201)
        except ApiError as e:
            return _error(e)
        return None

    @staticmethod
    def _verb(request: web.Request, route: Route) -> str:
        method = request.method
        if route.name is None:
            if method == "GET":
                return "watch" if route.watch_path or _truthy(request.query.get("watch")) else "list"
            if method == "POST" and (route.namespace or not route.res.namespaced):
                return "create"
        else:
            if method == "GET":
                return "watch" if route.watch_path or _truthy(request.query.get("watch")) else "get"
            verb = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
            if verb:
                return verb
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {request.path}")

    @staticmethod
    async def _body(request: web.Request) -> Any:
        try:
            return await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, "BadRequest", f"the request body is not valid JSON: {e}") from e

    def _check_identity(self, route: Route, obj: Any, *, name_required: bool, dups: Dups | None = None) -> list[str]:
        """The checks of a create or update body before the store's, in the real order; returns
        what decoding found unknown or repeated (for fieldValidation to judge)."""
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        kind = obj.get("kind")
        if kind not in (None, "", route.res.kind):
            raise ApiError(400, "BadRequest", f"kind {kind!r} does not match the URL ({route.res.kind})")
        # 400 as the real decoder, in the URL's version; unknown fields dropped and returned
        definition = for_resource(route.res)
        problems = [] if definition is None else decode(definition, obj, route.res.version, dups)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(422, "Invalid", "metadata: Required value")
        if route.namespace and meta.get("namespace") not in (None, "", route.namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if route.namespace:
            meta["namespace"] = route.namespace
        if name_required and meta.get("name") != route.name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({route.name})",
            )
        return problems

    async def _serve(self, request: web.Request, route: Route, verb: str) -> web.Response:
        res, store = route.res, self.store
        q = request.query
        if verb == "list":
            try:
                matcher = both(label_matcher(q.get("labelSelector")), field_matcher(q.get("fieldSelector")))
            except SelectorError as e:
                raise ApiError(400, "BadRequest", str(e)) from e
            page = self._list_page(res, route.namespace, matcher, q.get("limit"), q.get("continue"))
            table = _table_version(request)
            if table:
                return _json(self._table(res, page["items"], page["metadata"], table, q.get("includeObject")))
            return _json(page)
        assert route.name is not None or verb == "create"
        if verb == "get":
            obj = _present(store.get(res.storage, route.namespace, route.name or ""), res)
            table = _table_version(request)
            if table:
                return _json(self._table(res, [obj], {"resourceVersion": str(store.rv)}, table, q.get("includeObject")))
            return _json(obj)
        if verb in ("create", "update"):
            return await self._put(request, route, verb)
        if verb == "patch":
            return await self._patch(request, route)
        if verb == "delete":
            return await self._delete(request, route)
        raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported")

    async def _put(self, request: web.Request, route: Route, verb: str) -> web.Response:
        """A create (POST) or an update (PUT)."""
        res = route.res
        options = write_options(request.query, verb)
        obj, dups = await read_body(request)
        problems = self._check_identity(route, obj, name_required=verb == "update", dups=dups)
        warnings = judge(problems, options, res.kind, res.version)
        if verb == "create":
            made = self.store.create(res.storage, obj, dry_run=options.dry_run)
            return _json(_present(made, res), 201, warning_headers(warnings))
        stored = self.store.update(res.storage, obj, status_only=route.sub == "status", dry_run=options.dry_run)
        return _json(_present(stored, res), 200, warning_headers(warnings))

    async def _patch(self, request: web.Request, route: Route) -> web.Response:
        res = route.res
        options = write_options(request.query, "patch")
        current = self.store.get(res.storage, route.namespace, route.name or "")
        body, _ = await read_body(request)
        ctype = request.content_type
        try:
            if ctype == "application/json-patch+json":
                patched = json_patch(current, body)
            elif ctype == "application/merge-patch+json":
                patched = merge_patch(copy.deepcopy(current), body)
            elif ctype == "application/strategic-merge-patch+json" and not res.crd:
                patched = strategic_merge_patch(copy.deepcopy(current), body, self._merge_keys(res))
            elif res.crd:  # the real server's words for a custom resource's patch types
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                )
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the patch type {ctype!r} is not supported")
        except PatchError as e:
            raise ApiError(422, "Invalid", f"the patch could not be applied: {e}") from e
        meta = patched.get("metadata") if isinstance(patched, dict) else None
        if (
            not isinstance(meta, dict)
            or meta.get("name") != route.name
            or (meta.get("namespace") or "") != route.namespace
        ):
            raise ApiError(422, "Invalid", "a patch may not change metadata.name or metadata.namespace")
        definition = for_resource(res)
        try:
            problems = [] if definition is None else decode(definition, patched, res.version)
        except DecodeError as e:
            # As the real patch handler: the patched object does not decode, so the patch is invalid.
            text = json.dumps(patched, separators=(",", ":"))
            raise InvalidError("", "", [invalid("patch", text, e.detail)]) from e
        warnings = judge(problems, options)  # a patch's strict error names no kind, as the real one
        stored = self.store.update(res.storage, patched, status_only=route.sub == "status", dry_run=options.dry_run)
        return _json(_present(stored, res), 200, warning_headers(warnings))

    @staticmethod
    def _merge_keys(res: Resource) -> dict[str, str]:
        definition = for_resource(res)
        return {} if definition is None else merge_keys(definition.name)

    async def _delete(self, request: web.Request, route: Route) -> web.Response:
        res = route.res
        body, _ = await read_body(request)
        body = body if isinstance(body, dict) else None
        options = write_options(request.query, "delete", body)
        current = self.store.get(res.storage, route.namespace, route.name or "")
        check_preconditions(res.storage, current, body)
        return _json(
            _present(self.store.delete(res.storage, route.namespace, route.name or "", dry_run=options.dry_run), res)
        )

    def _list_page(
        self, res: Resource, namespace: str, matcher: Matcher | None, limit_text: str | None, token: str | None
    ) -> Obj:
        """A list, or one page of it: pages come from one snapshot, as a consistent list does."""
        try:
            limit = max(0, int(limit_text or 0))
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"invalid limit {limit_text!r}") from e
        if token:
            snap = self._snapshots.pop(token, None)
            if snap is None:
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a "
                    "consistent list result. You can start a new list without "
                    "the continue parameter.",
                )
            items, rv, offset = snap
        else:
            items, rv = self.store.list(res.storage, namespace, matcher)
            offset = 0
        end = offset + limit if limit else len(items)
        meta: Obj = {"resourceVersion": str(rv)}
        if end < len(items):
            token = secrets.token_urlsafe(12)
            self._snapshots[token] = (items, rv, end)
            while len(self._snapshots) > 1000:
                self._snapshots.popitem(last=False)
            meta.update({"continue": token, "remainingItemCount": len(items) - end})
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": meta,
            "items": [_present(o, res, in_list=True) for o in items[offset:end]],
        }

    def _table(self, res: Resource, items: list[Obj], meta: Obj, version: str, include: str | None) -> Obj:
        """Server-side printing (what ``kubectl get`` asks for): the kind's columns, a row per object."""
        kind = self.behaviours.get(res.storage) or KindBehaviour()
        columns = kind.columns()
        rows = []
        for obj in items:
            try:
                cells = kind.cells(obj)
            except (AttributeError, KeyError, TypeError, ValueError):  # an injected odd object: print what is sure
                cells = _plain_cells(columns, obj)
            row: Obj = {"cells": cells}
            if include == "Object":
                row["object"] = {**obj, "kind": res.kind, "apiVersion": res.api_version}
            elif include != "None":
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": f"meta.k8s.io/{version}",
                    "metadata": obj.get("metadata") or {},
                }
            rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": f"meta.k8s.io/{version}",
            "metadata": {k: v for k, v in meta.items() if k in ("resourceVersion", "continue", "remainingItemCount")},
            "columnDefinitions": [
                {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": d, "priority": p}
                for n, t, d, p in columns
            ],
            "rows": rows,
        }

    # -- watch -----------------------------------------------------------------------------------

    def _event_line(self, ev: Event, type_: str, res: Resource) -> bytes:
        if type_ == ev.type and res.api_version == ev.obj.get("apiVersion"):
            if ev.line is None:
                ev.line = _dumps({"type": ev.type, "object": ev.obj}) + b"\n"
            return ev.line
        return _dumps({"type": type_, "object": _present(ev.obj, res)}) + b"\n"

    async def _watch(self, request: web.Request, route: Route) -> web.StreamResponse:
        q, res = request.query, route.res
        try:
            matcher = both(label_matcher(q.get("labelSelector")), field_matcher(q.get("fieldSelector")))
        except SelectorError as e:
            raise ApiError(400, "BadRequest", str(e)) from e
        if route.name:
            name = route.name
            matcher = both(matcher, lambda o: o["metadata"]["name"] == name)
        rv_text = q.get("resourceVersion", "")
        try:
            since = int(rv_text) if rv_text not in ("", "0") else None
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv_text!r}") from e
        try:
            timeout = float(q.get("timeoutSeconds") or self.default_watch_timeout)
        except ValueError as e:
            raise ApiError(400, "BadRequest", "invalid timeoutSeconds") from e
        bookmarks = _truthy(q.get("allowWatchBookmarks"))

        resp = web.StreamResponse(headers={"Content-Type": JSON, "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        try:
            watcher = self.store.watch(res.storage, route.namespace, matcher, since)
        except ApiError as e:
            # As Kubernetes does: the watch opens with 200 and says why it ends in an ERROR event.
            await resp.prepare(request)
            await resp.write(_dumps({"type": "ERROR", "object": e.status()}) + b"\n")
            await resp.write_eof()
            return resp
        try:
            await resp.prepare(request)
            await self._pump(request, resp, watcher, res, timeout, bookmarks)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.store.unwatch(watcher)
        return resp

    async def _pump(
        self, request: web.Request, resp: web.StreamResponse, w: Watcher, res: Resource, timeout: float, bookmarks: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        table = _table_version(request)
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_interval
        while True:
            now = loop.time()
            if now >= deadline:
                await resp.write_eof()
                return
            wait = deadline - now
            if bookmarks and not w.frozen:
                wait = min(wait, max(0.0, next_bookmark - now))
            try:
                item = await asyncio.wait_for(w.queue.get(), wait)
            except TimeoutError:
                if bookmarks and not w.frozen and loop.time() >= next_bookmark:
                    next_bookmark = loop.time() + self.bookmark_interval
                    if w.queue.empty():  # so everything up to the store's version has been written
                        item = Bookmark(self.store.rv)
                    else:
                        continue
                else:
                    continue
            if w.dropped:
                if request.transport is not None:
                    request.transport.abort()  # an abrupt cut, as when a proxy or the server dies
                return
            if item is None or w.frozen:
                continue
            if isinstance(item, Bookmark):
                if bookmarks:
                    obj = {
                        "kind": res.kind,
                        "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(item.rv)},
                    }
                    await resp.write(_dumps({"type": "BOOKMARK", "object": obj}) + b"\n")
                continue
            type_ = w.wants(item) if w.matcher is not None else item.type
            if type_ and table:  # `kubectl get -w`: each event's object is a one-row Table
                rows = self._table(res, [_present(item.obj, res)], {}, table, request.query.get("includeObject"))
                await resp.write(_dumps({"type": type_, "object": rows}) + b"\n")
            elif type_:
                await resp.write(self._event_line(item, type_, res))
