"""A small Kubernetes API server for tests and the lab.

It speaks the real REST and watch protocol, so the brain's kubernetes-asyncio code and the real
``kubectl`` run against it unchanged:

- namespaces, pods, nodes, services (``/api/v1``), networkpolicies (``/apis/networking.k8s.io/v1``;
  also readable and writable under ``/apis/extensions/v1beta1``, the seed article's API, same
  objects) and endpointslices (``/apis/discovery.k8s.io/v1``);
- clusternetworkpolicies (``/apis/policy.networking.k8s.io/v1alpha2``, short name ``cnp``), served
  like a CRD-backed resource (``kinds/clusternetworkpolicies.py``): validated by the brain's own
  parser (``cnp_parse``; 422 naming the field), ``metadata.generation`` bumped by spec changes only,
  status written only through ``/status`` (a create or main update leaves it), JSON merge and JSON
  patches (a strategic-merge patch is 415, as for any custom resource), ``kubectl get cnp`` columns
  NAME TIER PRIORITY AGE; and its CRD under ``/apis/apiextensions.k8s.io/v1/customresourcedefinitions``
  (``kinds/crds.py``, the object deploy/crds/ holds). ``ApiServer(crds=False)`` (``--without-crds``)
  starts without it: the resource is absent from discovery, OpenAPI and its URLs (404) until the CRD
  is created (POST, ``kubectl apply -f deploy/crds/``); deleting the CRD deletes its objects and ends
  their watches. Only the CRDs the lab knows are accepted (422 otherwise);
- Services as the real server stores them (``kinds/services.py``): cluster IPs from
  ``service_cidrs`` (default ``10.96.0.0/16`` and ``fd00:10:96::/112``; ``ipFamilyPolicy``,
  ``ipFamilies`` and ``clusterIPs`` defaulted and validated), node ports from ``node_port_range``
  (default 30000-32767), requested values honoured if free, everything released on delete, the
  real defaulting and validation with the real 422 ``Invalid`` bodies (``fielderrors.py``);
- an EndpointSlice controller in the same process (``controllers/endpointslices.py``): slices
  per Service and address family, following Pods and Services;
- ``kubectl get`` tables (server-side printing: ``Accept: ...;as=Table;g=meta.k8s.io``, lists, gets
  and watches) with the real printers' columns, wide ones included, for pods, nodes, namespaces,
  services, endpointslices, networkpolicies, events and leases; strategic-merge patches
  (``kubectl apply``, ``kubectl edit``) with the list merge keys the schema declares;
- OpenAPI (``openapi/``): ``/openapi/v3`` (the index, with hashes) and ``/openapi/v3/<gv>`` per
  group-version, ``/openapi/v2`` (JSON, or gnostic protobuf), made from one typed description of
  every served kind (``schema/``), so ``kubectl apply`` validates and patches without
  ``--validate=false`` and ``kubectl explain`` answers;
- RBAC (``/apis/rbac.authorization.k8s.io/v1``: clusterroles, clusterrolebindings, roles,
  rolebindings; ``kinds/rbac.py``: the real defaults, validation and columns) and the real
  server's chain (``auth.py``): the static token is ``lab-admin`` (groups ``system:masters``,
  ``system:authenticated``), a ServiceAccount token this server minted for the API audience is its
  ServiceAccount, anything else 401 (a server without a static token lets other requests in as
  ``lab-admin``); ``system:masters`` may do everything, anyone else what RBAC grants
  (``rbac.py``), else 403 Forbidden with the real message. The default roles of a real cluster
  that every user needs are stored at start (cluster-admin, system:discovery, system:basic-user,
  system:public-info-viewer). SubjectAccessReview, SelfSubjectAccessReview and
  SelfSubjectRulesReview (``/apis/authorization.k8s.io/v1``: ``kubectl auth can-i [--list]``) are
  answered with real RBAC semantics; TokenReview answers for the static token too. Request bodies
  in the Kubernetes protobuf encoding are decoded for the RBAC kinds (``protobody.py``: kubectl's
  typed clients, e.g. ``kubectl create rolebinding``);
- discovery: ``/api``, ``/api/v1``, ``/apis``, ``/apis/{group}``, ``/apis/{group}/{version}``,
  plus ``/version`` and ``/healthz``; also the reviews and ``brains.stockade.io`` (what RBAC rules
  name for the brain's admin API; listed only, nothing served there);
- list (all namespaces or one; ``labelSelector``, simple ``fieldSelector``; ``resourceVersion`` in
  the list metadata; items without kind/apiVersion, as Kubernetes serves them; ``limit`` and
  ``continue`` page through one snapshot, and a token older than the last ``compact()`` gets 410),
  get, create (POST), update (PUT, optimistic concurrency on
  ``metadata.resourceVersion``), patch (merge, strategic-merge with the schema's keys, JSON patch),
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

Typed decoding as the real server's (``typed.py`` against ``schema/``): a body whose JSON does not
fit the Go types is 400 BadRequest with Go's text (``Pod in version "v1" cannot be handled as a
Pod: json: cannot unmarshal array into Go struct field ObjectMeta.metadata.labels of type
map[string]string``); members the Go types lack are dropped, and ``fieldValidation`` (``writes.py``)
decides what is said: Strict is 400 (``strict decoding error: unknown field "spec.podSelectr"``),
Warn (the default) a ``Warning`` header each, Ignore nothing; repeated members likewise. Metadata
validation (``validation.py``: names, label keys and values, annotations) and each kind's own
(Services, NetworkPolicies with the real defaults, pods' container names and ports, Events,
Leases, EndpointSlices) are 422 Invalid with ``causes``; a patch whose result does not decode is
422 on ``patch``. ``dryRun=All`` on create, update, patch and delete (query or DeleteOptions body):
validated in full, answered as if done, nothing stored, no allocation kept, no watch event.
Nothing is stored on an error, and the in-process controllers never fail a write.

Deliberate simplifications: no admission; pods are not defaulted (but for their ports' protocol)
and need neither containers nor images, their status is kept on create; Node spec is not
validated; no server-side apply (``application/apply-patch+yaml`` is 415), no managedFields; no
deletecollection, no finalizers or graceful deletion (a delete is immediate, a namespace takes its
content at once, so ``kubectl delete -f`` of a file holding a namespace and its content reports the
content not found); a PUT on the main resource may change status too.

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

Status: tested as a component in ``tests/apiserver`` (aiohttp, kubernetes-asyncio and kubectl:
``test_kubectl_workflow.py`` runs apply, explain, edit, label, annotate, delete and get -w).
"""

from .server import ApiServer, Fault
from .store import ApiError

__all__ = ["ApiError", "ApiServer", "Fault"]
