"""``/openapi/v2`` and ``/openapi/v3[/<group-version>]`` as the real API server serves them.

kubectl 1.27+ reads v3 first: the index lists each group-version's document under a URL carrying
the document's hash, and that URL is served as immutable (so kubectl's disk cache keeps it until
the hash changes); a stale hash is redirected to the current one. v2 is served as JSON, or as the
gnostic protobuf kubectl asks for (``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``).
Every document has an ETag; If-None-Match answers 304.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from ..resources import Hidden
from ..schema import DOCUMENTED, GROUP_VERSIONS
from .documents import JSON, digest, gv_path, v2_json, v3_document, v3_hash, v3_index
from .protobuf import v2_protobuf

# Asked for as ...spec.v2@v1.0+protobuf; answered as .v1.0 ("@" is not valid in a media type)
PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_BY_PATH = {gv_path(g, v): (g, v) for g, v in GROUP_VERSIONS}


def _answer(request: web.Request, body: bytes, content_type: str, etag: str, cache: str) -> web.Response:
    headers = {"ETag": f'"{etag}"', "Cache-Control": cache, "Vary": "Accept"}
    if "immutable" in cache:
        headers["Expires"] = (datetime.now(UTC) + timedelta(days=365)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, headers=headers)


def hidden_group_versions(hidden: Hidden) -> frozenset[tuple[str, str]]:
    """The group-versions every documented resource of which is hidden (custom resources without their CRD)."""
    out = set()
    for g, v in GROUP_VERSIONS:
        served = [r for r in DOCUMENTED if (r.group, r.version) == (g, v)]
        if served and all(r.storage in hidden for r in served):
            out.add((g, v))
    return frozenset(out)


def openapi(request: web.Request, hidden: Hidden = frozenset()) -> web.StreamResponse | None:
    """The answer to an /openapi/... GET, or None when the path is not one of them (404).
    ``hidden``: the storages not served now, left out of the documents."""
    path = request.path.rstrip("/")
    gone = hidden_group_versions(hidden)
    if path == "/openapi/v2":
        if "protobuf" in request.headers.get("Accept", ""):
            body = v2_protobuf(gone)
            return _answer(request, body, PROTOBUF_V2, digest(body), "no-cache, private")
        body = v2_json(gone)
        return _answer(request, body, JSON, digest(body), "no-cache, private")
    if path == "/openapi/v3":
        body = v3_index(gone)
        return _answer(request, body, JSON, digest(body), "no-cache, private")
    if path.startswith("/openapi/v3/"):
        gv = _BY_PATH.get(path[len("/openapi/v3/") :])
        if gv is None or gv in gone:
            return None
        current = v3_hash(*gv)
        asked = request.query.get("hash")
        if asked is not None and asked != current:
            raise web.HTTPMovedPermanently(f"{path}?hash={current}")
        cache = "public, immutable" if asked else "no-cache, private"
        return _answer(request, v3_document(*gv), JSON, current, cache)
    return None
