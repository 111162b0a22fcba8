"""The brain's view of the Kubernetes API: list-then-watch Namespaces, Pods, NetworkPolicies, Nodes,
Services (the last for lint only) and ClusterNetworkPolicies (a custom resource, optional).

``Sources(client, sink)`` runs one list-then-watch loop per kind (``watcher.py``) with the real
kubernetes-asyncio client and hands the consumer ``SourceEvent``s: ``upsert`` / ``delete`` with the
object as a plain camelCase dict (``kind`` and ``apiVersion`` set), then one ``synced`` once every
kind's first list is in. Guarantees, whatever the API server or the network does:

- no event lost: a watch resumes from the last version seen (event or bookmark); on 410 Gone the
  kind is listed again and the list turned into the difference against what is held (deletes for
  objects that vanished in the gap, upserts for changed or new ones);
- none applied twice: an event whose resourceVersion is not newer than the held object's is dropped;
- a silent watch (not even a bookmark for ``inactivity_timeout`` seconds) is restarted;
- errors back off with jitter (reset once a watch has spoken, so a long watch that breaks is
  retried at once); 429 (and 503 with Retry-After) waits what Retry-After says; 410s again and
  again right after a list (a lagging replica) back off too;
- lists are paged (``limit``/``continue``, one snapshot); objects are never turned into models;
- a custom resource whose CRD is not installed (404) does not hold the others up: it counts as
  listed and empty, is looked for again every few seconds (backoff up to 10 s), and is listed and
  watched once it is served (a log line each way); if its CRD goes, its objects are passed on as
  deleted;
- with ``slim`` (``slim.slim`` for the brain) only an allow-list of each kind's fields is held
  and passed on, so memory follows what policy reads, not what the workloads carry.

``RBAC_RULES`` lists what that needs from the API server. ``api_client(kubeconfig)`` builds a client
from a kubeconfig or, in a pod, from the service account.

Status: tested against the lab's API server in ``tests/sources`` (events exactly once, 410 with
deletions in the gap, churn with compactions and cut connections, replays, 429/500, silent
watches, paging, in-cluster config with TLS and a token).
"""

from .backoff import Backoff, parse_retry_after
from .events import SYNCED, SourceEvent
from .kinds import CLUSTER_NETWORK_POLICY, KINDS, RBAC_RULES, WatchedKind
from .sources import Sources, api_client
from .watcher import KindWatcher

__all__ = [
    "CLUSTER_NETWORK_POLICY",
    "KINDS",
    "RBAC_RULES",
    "SYNCED",
    "Backoff",
    "KindWatcher",
    "SourceEvent",
    "Sources",
    "WatchedKind",
    "api_client",
    "parse_retry_after",
]
