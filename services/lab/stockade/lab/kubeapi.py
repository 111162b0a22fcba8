"""A small synchronous client for the lab's Kubernetes API server (create-or-replace, delete)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

Obj = dict[str, Any]

_PATHS = {  # kind -> (prefix, plural, namespaced)
    "Namespace": ("/api/v1", "namespaces", False),
    "Node": ("/api/v1", "nodes", False),
    "Pod": ("/api/v1", "pods", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "Service": ("/api/v1", "services", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "ClusterNetworkPolicy": ("/apis/policy.networking.k8s.io/v1alpha2", "clusternetworkpolicies", False),
}


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"API server answered {status}: {message}")
        self.status = status


def collection_path(kind: str, namespace: str | None) -> str:
    prefix, plural, namespaced = _PATHS[kind]
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespaced and namespace else f"{prefix}/{plural}"


class Client:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Obj | None = None) -> Obj:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                result: Obj = json.loads(resp.read() or b"{}")
                return result
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("message", e.reason)
            except ValueError:
                message = e.reason
            raise ApiError(e.code, str(message)) from None

    def ready(self) -> bool:
        req = urllib.request.Request(self.url + "/readyz")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return bool(resp.status == 200)

    def put(self, obj: Obj) -> tuple[str, Obj]:
        """Create the object, or replace it if it exists; returns ("created"|"configured", stored)."""
        kind, meta = obj["kind"], obj["metadata"]
        path = collection_path(kind, meta.get("namespace"))
        body = {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
        try:
            return "created", self._call("POST", path, body)
        except ApiError as e:
            if e.status != 409:
                raise
        return "configured", self._call("PUT", f"{path}/{meta['name']}", body)

    def delete(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        """Delete; the object as it was deleted, or None when it was not there."""
        try:
            return self._call("DELETE", f"{collection_path(kind, namespace)}/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None) -> list[Obj]:
        items: list[Obj] = self._call("GET", collection_path(kind, namespace)).get("items", [])
        return items
