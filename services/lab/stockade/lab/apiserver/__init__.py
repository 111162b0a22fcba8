"""A small Kubernetes API server for tests and the lab.

It speaks the real REST and watch protocol, so the brain's kubernetes-asyncio code and the real
``kubectl`` run against it unchanged:

- namespaces, pods, nodes, services (``/api/v1``), networkpolicies (``/apis/networking.k8s.io/v1``;
  also readable and writable under ``/apis/extensions/v1beta1``, the seed article's API, same
  objects) and endpointslices (``/apis/discovery.k8s.io/v1``);
- Services as the real server stores them (``kinds/services.py``): cluster IPs from
  ``service_cidrs`` (default ``10.96.0.0/16`` and ``fd00:10:96::/112``; ``ipFamilyPolicy``,
  ``ipFamilies`` and ``clusterIPs`` defaulted and validated), node ports from ``node_port_range``
  (default 30000-32767), requested values honoured if free, everything released on delete, the
  real defaulting and validation with the real 422 ``Invalid`` bodies (``fielderrors.py``);
- an EndpointSlice controller in the same process (``controllers/endpointslices.py``): slices
  per Service and address family, following Pods and Services;
- ``kubectl get`` tables (server-side printing: ``Accept: ...;as=Table;g=meta.k8s.io``, lists, gets
  and watches) with the real columns for pods, services and endpointslices, NAME/AGE for the rest; strategic-merge
  patches (``kubectl apply``) with each kind's list merge keys;
- discovery: ``/api``, ``/api/v1``, ``/apis``, ``/apis/{group}``, ``/apis/{group}/{version}``,
  plus ``/version`` and ``/healthz``;
- list (all namespaces or one; ``labelSelector``, simple ``fieldSelector``; ``resourceVersion`` in
  the list metadata; items without kind/apiVersion, as Kubernetes serves them; ``limit`` and
  ``continue`` page through one snapshot, and a token older than the last ``compact()`` gets 410),
  get, create (POST), update (PUT, optimistic concurrency on
  ``metadata.resourceVersion``), patch (merge, strategic-merge applied as merge, JSON patch),
  delete (a namespace takes its pods and policies with it), ``/status`` subresource;
- watch (``?watch=true`` or ``/watch/`` paths) from a ``resourceVersion``, streaming
  newline-delimited ADDED/MODIFIED/DELETED events, BOOKMARK events every ``bookmark_interval``
  when ``allowWatchBookmarks=true``, ending after ``timeoutSeconds``; a version older than the
  bounded event history gets a 200 with one ERROR event carrying a 410 Expired Status, as the real
  server does; without a version (or "0") the watch starts with ADDED for every current object.

One global resourceVersion counter, like etcd; the server sets uid, creationTimestamp,
resourceVersion and generation; metadata.name is required and a namespaced object's namespace must
exist; 409 AlreadyExists on create, 409 Conflict on a stale update, 404 on missing; a no-op write
creates no event. Namespaces get the ``kubernetes.io/metadata.name`` label, as Kubernetes adds it.

Per-kind behaviour (defaulting, validation, allocation, release, columns, merge keys) lives in
``kinds/``, one module per kind, behind the hooks of ``kinds/base.py``; the store calls them.

Typed decoding as the real server's (``decoding.py``): a body whose JSON does not fit the Go types
of the fields the lab serves (metadata's names and string maps, Pod spec/status with containers,
ports and IPs, Service, Node, Namespace spec/status, NetworkPolicy spec) is 400 BadRequest with
Go's text (``Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal array into Go
struct field ObjectMeta.metadata.labels of type map[string]string``); metadata validation
(``validation.py``: names, label keys and values, annotations) is 422 Invalid with ``causes``; a
patch whose result does not decode is 422 on ``patch``. Nothing is stored on an error, and the
in-process controllers never fail a write (an odd object selects and resolves nothing).

Deliberate simplifications: no admission or schema validation beyond the above,
no OpenAPI document (``kubectl apply`` needs ``--validate=false``), no deletecollection, no
finalizers or graceful deletion (a delete is immediate), a PUT on the main resource may change
status too.

For tests: ``compact()`` (the next watch from an old version gets 410), ``send_bookmarks()``,
``inject_fault(429, count, retry_after=1)`` / ``inject_fault(500, ...)`` for the next requests,
``inject_object(obj)`` (FAULT INJECTION: stores and serves obj verbatim, past decoding and
validation; over HTTP as ``POST /fault-injection/v1/raw-objects`` only on a server made with
``fault_injection=True`` / ``--enable-fault-injection``), ``drop_watches()`` (cut every watch
connection), ``freeze_watches()`` (watches stay open but say
nothing), ``requests`` (a count per verb and resource), ``put_object`` / ``delete_object`` /
``get_object`` / ``list_objects``. Optional bearer token; optional TLS (a self-signed loopback
certificate when none is given; ``kubeconfig(path)`` embeds it as the CA).

Use::

    server = ApiServer(bookmark_interval=1.0)
    await server.start("127.0.0.1", 0)
    server.kubeconfig(tmp / "kubeconfig")     # for kubernetes_asyncio.config.load_kube_config
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    ...
    await server.stop()

Standalone: ``python -m stockade.lab.apiserver --port N [--data FILE.yaml ...] [--kubeconfig PATH]
[--service-cluster-ip-range CIDR[,CIDR]] [--service-node-port-range FIRST-LAST]``.

Status: tested as a component in ``tests/apiserver`` (aiohttp, kubernetes-asyncio and kubectl).
"""

from .server import ApiServer, Fault
from .store import ApiError

__all__ = ["ApiError", "ApiServer", "Fault"]
