"""The brain's memory with a big, realistic cluster (issue 13, item 5).

A real `stockade brain` process lists and watches a lab API server (`stockade.lab.apiserver`, in
a process of its own) holding ``--pods`` Pods as a real API server returns them (managedFields,
three containers with env, volumeMounts, resources and probes, status with conditions and
containerStatuses: about 12 KiB of JSON each), ``--nodes`` Nodes (images, conditions, nodeInfo),
``--namespaces`` Namespaces with three NetworkPolicies and ten Services each. Printed: the
brain's peak RSS (VmHWM, through the list, the cold start and serving) against the target
1.2 GB, and the same brain keeping objects whole (``STOCKADE_BRAIN_KEEP_WHOLE_OBJECTS=1``, the
baseline before sources/slim.py) unless ``--skip-baseline``.

The lab server shares each Deployment's heavy parts between its pods (it serves them as JSON, so
the brain still decodes every byte of every pod) and stores them without its write path's deep
copies, so it holds 100k pods in little memory and time.

usage: python benchmarks/brain_memory.py [--pods N] [--nodes N] [--namespaces N] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_scale

ROOT = Path(__file__).resolve().parents[1]
TARGET_BYTES = 1.2e9
REPLICAS = 10  # pods per Deployment
Obj = dict[str, Any]


def _env(n: int) -> list[Obj]:
    out: list[Obj] = [{"name": f"SETTING_{k}", "value": f"value-{k}-{'x' * 20}"} for k in range(n)]
    out.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}})
    return out


def _container(name: str, port: int | None, image: str) -> Obj:
    c: Obj = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--config=/etc/app/config.yaml", "--log-level=info"],
        "env": _env(12),
        "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/app"},
            {"name": "data", "mountPath": "/var/lib/app"},
            {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True},
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if port is not None:
        c["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        probe = {"httpGet": {"path": "/healthz", "port": port, "scheme": "HTTP"}, "periodSeconds": 10}
        c["livenessProbe"] = c["readinessProbe"] = probe
    return c


def _fields(containers: list[Obj]) -> Obj:
    """managedFields.fieldsV1 as kube-controller-manager writes it for a pod's spec."""
    return {
        "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}}},
        "f:spec": {
            f'k:{{"name":"{c["name"]}"}}': {
                ".": {},
                "f:env": {f'k:{{"name":"{e["name"]}"}}': {".": {}, "f:name": {}, "f:value": {}} for e in c["env"]},
                "f:image": {},
                "f:resources": {"f:limits": {"f:cpu": {}, "f:memory": {}}, "f:requests": {"f:cpu": {}, "f:memory": {}}},
                "f:volumeMounts": {f'k:{{"mountPath":"{m["mountPath"]}"}}': {".": {}} for m in c["volumeMounts"]},
            }
            for c in containers
        },
    }


class Deployment:
    """What a Deployment's pods share (the lab server holds it once)."""

    def __init__(self, ns: str, app: str) -> None:
        self.ns, self.app = ns, app
        self.hash = uuid.uuid4().hex[:10]
        image = f"registry.example.com/{ns}/{app}:1.{len(app)}.3"
        self.containers = [
            _container("app", 8080, image),
            _container("sidecar", 9090, "registry.example.com/mesh/proxy:2.1.0"),
            _container("logs", None, "registry.example.com/obs/logs:0.9.1"),
        ]
        self.volumes = [
            {"name": "config", "configMap": {"name": f"{app}-config", "defaultMode": 420}},
            {"name": "data", "emptyDir": {}},
            {
                "name": "kube-api-access",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    ],
                },
            },
        ]
        t = "2026-11-30T10:00:00Z"
        self.managed = [
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": t,
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields(self.containers),
            },
            {
                "manager": "kubelet",
                "operation": "Update",
                "apiVersion": "v1",
                "time": t,
                "fieldsType": "FieldsV1",
                "subresource": "status",
                "fieldsV1": {
                    "f:status": {
                        "f:conditions": {".": {}},
                        "f:containerStatuses": {},
                        "f:podIP": {},
                        "f:podIPs": {},
                        "f:phase": {},
                    }
                },
            },
        ]
        self.conditions = [
            {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": t}
            for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ]
        self.statuses = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": f"{c['image']}@sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}",
                "containerID": f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}",
                "ready": True,
                "restartCount": 0,
                "started": True,
                "state": {"running": {"startedAt": t}},
                "lastState": {},
            }
            for c in self.containers
        ]

    def pod(self, i: int, node: str, ip: str) -> Obj:
        name = f"{self.app}-{self.hash}-{i:05d}"
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "generateName": f"{self.app}-{self.hash}-",
                "namespace": self.ns,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": "2026-11-30T10:00:00Z",
                "labels": {"app": self.app, "pod-template-hash": self.hash, "tier": "x"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-30T09:59:00Z"},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"{self.app}-{self.hash}",
                        "uid": str(uuid.uuid4()),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "managedFields": self.managed,
            },
            "spec": {
                "containers": self.containers,
                "volumes": self.volumes,
                "nodeName": node,
                "restartPolicy": "Always",
                "dnsPolicy": "ClusterFirst",
                "serviceAccountName": "default",
                "terminationGracePeriodSeconds": 30,
                "schedulerName": "default-scheduler",
                "tolerations": [
                    {
                        "key": "node.kubernetes.io/not-ready",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                ],
            },
            "status": {
                "phase": "Running",
                "conditions": self.conditions,
                "hostIP": "192.168.0.1",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": "2026-11-30T10:00:00Z",
                "qosClass": "Burstable",
                "containerStatuses": self.statuses,
            },
        }


def fat_node(i: int) -> Obj:
    images = [
        {
            "names": [f"registry.example.com/img-{k}@sha256:{uuid.uuid4().hex}", f"registry.example.com/img-{k}:1"],
            "sizeBytes": 100_000_000 + k,
        }
        for k in range(30)
    ]
    t = "2026-11-30T10:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"node-{i}",
            "uid": str(uuid.uuid4()),
            "labels": {"kubernetes.io/hostname": f"node-{i}", "kubernetes.io/os": "linux", "zone": f"z{i % 3}"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed": "true"},
        },
        "spec": {"podCIDR": f"10.{i >> 8}.{i & 255}.0/24", "providerID": f"cloud://node-{i}"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": f"192.168.{i >> 8}.{i & 255}"},
                {"type": "Hostname", "address": f"node-{i}"},
            ],
            "capacity": {"cpu": "16", "memory": "65842040Ki", "pods": "110"},
            "allocatable": {"cpu": "15800m", "memory": "64000000Ki", "pods": "110"},
            "conditions": [
                {
                    "type": c,
                    "status": "False",
                    "lastHeartbeatTime": t,
                    "lastTransitionTime": t,
                    "reason": f"Kubelet{c}",
                    "message": "kubelet is fine",
                }
                for c in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.31.2",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kernelVersion": "6.1.0",
                "osImage": "Debian GNU/Linux 12",
                "architecture": "amd64",
                "machineID": uuid.uuid4().hex,
                "systemUUID": str(uuid.uuid4()),
                "bootID": str(uuid.uuid4()),
            },
            "images": images,
        },
    }


def cluster(pods: int, nodes: int, namespaces: int) -> tuple[list[Obj], list[Obj], list[Obj], list[Obj], list[Obj]]:
    """(namespaces, nodes, pods, policies, services); pods spread evenly over namespaces."""
    per_ns = max(1, pods // namespaces)
    nss: list[Obj] = []
    pol: list[Obj] = []
    svc: list[Obj] = []
    podl: list[Obj] = []
    for i in range(namespaces):
        ns = engine_scale.ns_obj(i)
        ns["apiVersion"] = "v1"
        nss.append(ns)
        for p in engine_scale.policies_for(i):
            p["apiVersion"] = "networking.k8s.io/v1"
            pol.append(p)
        deps = [Deployment(f"ns-{i}", app) for app in ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")]
        for d in deps:
            svc.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": d.app, "namespace": d.ns},
                    "spec": {
                        "selector": {"app": d.app},
                        "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}],
                    },
                }
            )
        for j in range(per_ns):
            n = len(podl)
            if n >= pods:
                break
            ip = f"10.{64 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"
            podl.append(deps[j % len(deps)].pod(j, f"node-{n % nodes}", ip))
    return nss, [fat_node(i) for i in range(nodes)], podl, pol, svc


def _serve(args: argparse.Namespace, tmp: str, conn: Any) -> None:
    """The lab API server in its own process; stores the cluster, then serves until told to stop."""
    from stockade.lab.apiserver import ApiServer

    async def run() -> None:
        server = ApiServer()
        await server.start("127.0.0.1", 0)
        nss, nodes, pods, pols, svcs = cluster(args.pods, args.nodes, args.namespaces)
        for o in nss + nodes + pols + svcs:
            server.put_object(o)
        sizes = [len(json.dumps(p, separators=(",", ":"))) for p in pods[:: max(1, len(pods) // 100)]]
        node_size = len(json.dumps(nodes[0], separators=(",", ":"))) if nodes else 0
        for p in pods:
            # The write path deep-copies and validates each object (minutes for 100k fat pods,
            # gigabytes unshared); what is served is the same JSON either way.
            server.store._commit("pods", "ADDED", p, None)
        conn.send((str(server.kubeconfig(Path(tmp) / "kc")), sum(sizes) / len(sizes), node_size))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop()

    asyncio.run(run())


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) * 1024
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(kc: str, keep_whole: bool, settle: float) -> tuple[int, int, float, str]:
    """Run a brain against ``kc`` until it serves (and ``settle`` s more): (peak RSS, RSS then,
    seconds to serving, its "computed" line)."""
    env = {
        "PYTHONPATH": ":".join(str(ROOT / "services" / s) for s in ("common", "brain", "node-agent", "lab", "cli")),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    if keep_whole:
        env["STOCKADE_BRAIN_KEEP_WHOLE_OBJECTS"] = "1"
    argv = ["-v", "brain", "--kubeconfig", kc, "--insecure", "--listen", "127.0.0.1:0"]
    argv += ["--admin-listen", "127.0.0.1:0", "--admin-mtls-listen", "", "--http", f"127.0.0.1:{free_port()}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stockade.cli.main", *argv], stderr=subprocess.PIPE, text=True, env=env
    )
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "serving:" in line:
                serving.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        while not serving.wait(0.5):
            if proc.poll() is not None or time.perf_counter() - t0 > 600:
                raise SystemExit("the brain did not start:\n" + "".join(lines[-30:]))
        took = time.perf_counter() - t0
        time.sleep(settle)
        st = _status(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    computed = next((ln.strip().split(": ", 1)[-1] for ln in lines if "computed " in ln), "")
    return st["VmHWM"], st["VmRSS"], took, computed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=1000, help="3 policies and 10 Services each")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds serving before RSS is read")
    ap.add_argument("--skip-baseline", action="store_true", help="do not measure the brain keeping objects whole")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="st-memory-")
    ours, theirs = multiprocessing.Pipe()
    lab = multiprocessing.get_context("fork").Process(target=_serve, args=(args, tmp, theirs), daemon=True)
    t0 = time.perf_counter()
    lab.start()
    kc, pod_bytes, node_bytes = ours.recv()
    print(
        f"cluster: {args.pods} pods (~{pod_bytes / 1024:.1f} KiB of JSON each), {args.nodes} nodes "
        f"(~{node_bytes / 1024:.1f} KiB), {args.namespaces} namespaces, {args.namespaces * 3} policies, "
        f"{args.namespaces * 10} services; served after {time.perf_counter() - t0:.0f} s"
    )
    try:
        runs = [("slim (what the brain keeps)", False)] + (
            [] if args.skip_baseline else [("whole objects (baseline)", True)]
        )
        peaks = {}
        for label, whole in runs:
            peak, rss, took, computed = measure(kc, whole, args.settle)
            peaks[whole] = peak
            print(
                f"  {label:30s} peak RSS {peak / 1e9:5.2f} GB ({peak / TARGET_BYTES:.2f}x of 1.2 GB), "
                f"serving RSS {rss / 1e9:5.2f} GB, serving after {took:.0f} s"
            )
            if computed:
                print(f"    brain: {computed}")
        if True in peaks:
            print(f"  slimming: peak RSS {peaks[False] / peaks[True]:.2f}x of the baseline's")
    finally:
        ours.send(None)
        lab.join(30)


if __name__ == "__main__":
    main()
