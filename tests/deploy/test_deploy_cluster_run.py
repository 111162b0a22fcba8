"""deploy/'s brain Deployment and agent DaemonSet, run for real without a cluster: each container's
args and env exactly as rendered (the ConfigMap's entries, the downward API's NODE_NAME, Kubernetes'
$(VAR) expansion), its Secret volumes laid out as cert-manager fills them, the agents' projected
ServiceAccount tokens minted by the API server's TokenRequest for pods bound to their nodes,
its mountPaths mapped to folders here, and the Service names in /etc/hosts of network namespaces
standing in for the pods (tests/deploy/netstack.py). The lab's API server stands in for the
cluster's (the only change: KUBECONFIG instead of the in-cluster config). Then the probes and the
ServiceMonitor's endpoints answer as the manifests expect, and the admin API shows both nodes in
sync: the manifests' wiring (paths, names, ports, certificates) works with the real programs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import yaml

from .netstack import STOCKADE, Stack, can_run
from .render import DEPLOY, REPO, Obj, find, render
from .test_deploy_agent_certs import cert_manager_like_ca

NODES = ["node-a", "node-b"]  # as in compose/cluster.yaml, which the API server serves
BRAIN_HOST = "stockade-brain.stockade-system.svc"
PEERS_HOST = "stockade-brain-peers.stockade-system.svc"  # what the agents dial (every brain)
REDIS_HOST = "stockade-redis.stockade-system.svc"

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    why = can_run()
    if why:
        pytest.skip(why)
    s = Stack(tmp_path, NODES)
    try:
        s.up(core_names=[REDIS_HOST, BRAIN_HOST], agent_names=[BRAIN_HOST, PEERS_HOST])
        yield s
    finally:
        s.down()


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def container_env(objects: list[Obj], container: Obj, node: str, namespace: str = "stockade-system") -> dict[str, str]:
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        env.update(find(objects, "ConfigMap", ref["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName":
            env[var["name"]] = node
        elif var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
            env[var["name"]] = namespace
        elif var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":
            env[var["name"]] = f"{container['name']}-{node}"  # the pod's name: unique per node here
        else:
            raise AssertionError(f"no stand-in for {var}")
    return env


def argv(pod_spec: Obj, env: dict[str, str], volumes: dict[str, Path]) -> list[str]:
    (container,) = pod_spec["containers"]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"] if m["name"] in volumes}
    out = []
    for arg in container["args"]:
        flag, eq, value = expand(arg, env).partition("=")
        for inside in sorted(mounts, key=len, reverse=True):
            if value.startswith(inside + "/"):
                value = f"{mounts[inside]}{value[len(inside) :]}"
                break
        out.append(flag + eq + value)
    return [*STOCKADE, "-v", *out]


def probe_url(container: Obj, probe: str) -> str:
    get = container[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    return f"http://127.0.0.1:{port}{get['path']}"


def lay_out_secrets(stack: Stack, objects: list[Obj]) -> dict[str, Path]:
    """Folders with what each Secret volume holds in a cluster."""
    pki = stack.tmp / "pki"
    pki.mkdir()
    ca_cert, ca_key = cert_manager_like_ca()  # cert-manager's stockade-ca Secret
    (pki / "ca.crt").write_bytes(ca_cert)
    (pki / "ca.key").write_bytes(ca_key)
    brain_cert = find(objects, "Certificate", "stockade-brain")["spec"]
    made = subprocess.run(
        [*STOCKADE, "certs", "init", "--out", str(pki), "--nodes", ",".join(NODES),
         "--brain-names", ",".join(brain_cert["dnsNames"])],
        env=stack.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    brain_tls = stack.tmp / "secret-stockade-brain-tls"  # cert-manager's layout
    brain_tls.mkdir()
    shutil.copy(pki / "brain.crt", brain_tls / "tls.crt")
    shutil.copy(pki / "brain.key", brain_tls / "tls.key")
    shutil.copy(pki / "ca.crt", brain_tls / "ca.crt")
    agent_tls = stack.tmp / "secret-stockade-agent-tls"  # deploy/agent-certs.sh's layout
    agent_tls.mkdir()
    shutil.copy(pki / "ca.crt", agent_tls / "ca.crt")
    for node in NODES:
        shutil.copy(pki / "nodes" / f"{node}.crt", agent_tls / f"{node}.crt")
        shutil.copy(pki / "nodes" / f"{node}.key", agent_tls / f"{node}.key")
    admin = stack.tmp / "secret-stockade-admin-tokens"
    admin.mkdir()
    (admin / "tokens").write_text(yaml.safe_dump({"tokens": [{"name": "t", "token": "x" * 24, "role": "read"}]}))
    return {"stockade-brain-tls": brain_tls, "stockade-agent-tls": agent_tls, "stockade-admin-tokens": admin}


def volumes_of(
    pod_spec: Obj, secrets: dict[str, Path], scratch: Path, projected: dict[str, bytes] | None = None
) -> dict[str, Path]:
    """``projected``: what each source of a projected volume holds, by its kind: the
    ServiceAccount token the kubelet would write, and ConfigMap names → their ``ca.crt``."""
    out = {}
    for v in pod_spec["volumes"]:
        if "secret" in v:
            out[v["name"]] = secrets[v["secret"]["secretName"]]
        elif "emptyDir" in v:
            out[v["name"]] = scratch / v["name"]
            out[v["name"]].mkdir(parents=True, exist_ok=True)
        elif "projected" in v:
            folder = out[v["name"]] = scratch / v["name"]
            folder.mkdir(parents=True, exist_ok=True)
            for src in v["projected"]["sources"]:
                assert projected is not None, f"no stand-in for the projected volume {v['name']}"
                if "serviceAccountToken" in src:
                    (folder / src["serviceAccountToken"]["path"]).write_bytes(projected["serviceAccountToken"])
                else:
                    for item in src["configMap"]["items"]:
                        (folder / item["path"]).write_bytes(projected[src["configMap"]["name"]])
    return out  # hostPath volumes (the xtables lock) are the host's own paths already


# Run in the API server's namespace: the agents' pods (bound to their nodes, as the DaemonSet
# makes them) and each one's projected token, from the real TokenRequest API.
TOKENS = r"""
import json, sys, urllib.error, urllib.request, yaml
url = yaml.safe_load(open(sys.argv[1]))["clusters"][0]["cluster"]["server"]
ns, sa, audience, seconds = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def post(path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        return json.load(urllib.request.urlopen(req))
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise
post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
out = {}
for node in sys.argv[6:]:
    pod = post(f"/api/v1/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"stockade-agent-{node}", "namespace": ns},
        "spec": {"nodeName": node, "serviceAccountName": sa, "containers": [{"name": "agent"}]}})
    ref = {"kind": "Pod", "apiVersion": "v1", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}
    tr = post(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", {"apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest", "spec": {"audiences": [audience], "expirationSeconds": seconds, "boundObjectRef": ref}})
    out[node] = tr["status"]["token"]
print(json.dumps(out))
"""


def agent_tokens(stack: Stack, kubeconfig: Path, agent: Obj, pod_spec: Obj) -> dict[str, bytes]:
    """node → the token its agent pod's projected volume would hold."""
    (sat,) = [s["serviceAccountToken"] for v in pod_spec["volumes"] for s in v.get("projected", {}).get("sources", [])
              if "serviceAccountToken" in s]  # fmt: skip
    made = stack.exec(
        "core", *STOCKADE[:1], "-c", TOKENS, str(kubeconfig), agent["metadata"]["namespace"],
        pod_spec["serviceAccountName"], sat["audience"], str(sat["expirationSeconds"]), *NODES,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return {node: token.encode() for node, token in json.loads(made.stdout).items()}


def ready(stack: Stack, where: str, url: str) -> bool:
    return stack.http_status(where, url) == "200"


def test_manifests_run_and_sync(stack: Stack) -> None:
    objects = render(DEPLOY).objects
    secrets = lay_out_secrets(stack, objects)
    brain_pod = find(objects, "Deployment", "stockade-brain")["spec"]["template"]["spec"]
    agent_pod = find(objects, "DaemonSet", "stockade-agent")["spec"]["template"]["spec"]
    (brain_c,) = brain_pod["containers"]
    (agent_c,) = agent_pod["containers"]

    # The cluster: Redis where the ConfigMap's URL points, the API server the brain is given.
    redis_url = find(objects, "ConfigMap", "stockade-config")["data"]["STOCKADE_REDIS_URL"]
    redis_port = re.match(r"redis://[^:/]+:(\d+)", redis_url).group(1)  # type: ignore[union-attr]
    stack.run("redis", ["redis-server", "--port", redis_port, "--save", "", "--dir", str(stack.tmp)])
    kubeconfig = stack.tmp / "kubeconfig"
    stack.run(
        "apiserver",
        [*STOCKADE[:1], "-m", "stockade.lab.apiserver", "--port", "6443",
         "--data", str(REPO / "compose" / "cluster.yaml"), "--kubeconfig", str(kubeconfig)],
    )  # fmt: skip
    stack.wait_for("the API server", kubeconfig.exists)

    brain_ns = find(objects, "Deployment", "stockade-brain")["metadata"]["namespace"]
    env = container_env(objects, brain_c, node="", namespace=brain_ns) | {"KUBECONFIG": str(kubeconfig)}
    stack.run("brain", argv(brain_pod, env, volumes_of(brain_pod, secrets, stack.tmp / "brain")), env=env)
    stack.wait_for("brain ready", partial(ready, stack, "core", probe_url(brain_c, "readinessProbe")))

    agent_ds = find(objects, "DaemonSet", "stockade-agent")
    tokens = agent_tokens(stack, kubeconfig, agent_ds, agent_pod)
    ca_bundle = (secrets["stockade-brain-tls"] / "ca.crt").read_bytes()  # the install guide's ConfigMap
    for node in NODES:
        env = container_env(objects, agent_c, node)
        stand_ins = {"serviceAccountToken": tokens[node], "stockade-ca-bundle": ca_bundle}
        vols = volumes_of(agent_pod, secrets, stack.tmp / node, stand_ins)
        stack.run(node, argv(agent_pod, env, vols), where=node, env=env)
    for node in NODES:
        stack.wait_for(f"agent on {node} ready", partial(ready, stack, node, probe_url(agent_c, "readinessProbe")))
        assert ready(stack, node, probe_url(agent_c, "livenessProbe"))
        assert ready(stack, node, probe_url(agent_c, "startupProbe"))  # the kubelet would start liveness
        assert stack.exec(node, "nft", "list", "table", "inet", "stockade").returncode == 0
    assert ready(stack, "core", probe_url(brain_c, "livenessProbe"))
    assert ready(stack, "core", probe_url(brain_c, "startupProbe"))
    # not "degraded": Redis at the ConfigMap's URL is in use (awaited: ready can come first)
    stack.wait_for(
        "the brain ready and not degraded",
        lambda: stack.exec("core", "curl", "-s", probe_url(brain_c, "readinessProbe")).stdout == "ready\n",
    )

    # What the ServiceMonitor scrapes: `metrics` ports, its path.
    (endpoint,) = find(objects, "ServiceMonitor", "stockade")["spec"]["endpoints"]
    for where, container in (("core", brain_c), (NODES[0], agent_c)):
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == endpoint["port"])
        body = stack.exec(where, "curl", "-s", f"http://127.0.0.1:{port}{endpoint['path']}").stdout
        assert "\nstockade_" in body, body[:500]

    # The admin API through the Service name and the brain's cert-manager CA, as the README install guide does.
    service_ports = find(objects, "Service", "stockade-brain")["spec"]["ports"]
    admin_port = next(p["port"] for p in service_ports if p["name"] == "admin")

    def node_rows() -> dict[str, Obj]:
        nodes = stack.exec(
            NODES[0], *STOCKADE, "nodes", "--brain", f"{BRAIN_HOST}:{admin_port}",
            "--ca", str(secrets["stockade-brain-tls"] / "ca.crt"), "--token", "x" * 24, "-o", "json",
        )  # fmt: skip
        assert nodes.returncode == 0, nodes.stderr
        return {n["name"]: n for n in json.loads(nodes.stdout)["items"]}

    def acked(rows: dict[str, Obj]) -> bool:
        return set(rows) == set(NODES) and all(
            n["connected"] and n["desiredGeneration"] and n["appliedGeneration"] == n["desiredGeneration"]
            for n in rows.values()
        )

    # An agent is ready once its rules are in, a moment before its ack reaches the brain.
    stack.wait_for("every agent's ack at the brain", lambda: acked(node_rows()))
    status = node_rows()
    assert set(status) == set(NODES)
    for node in status.values():
        assert node["connected"] is True
        assert node["appliedGeneration"] == node["desiredGeneration"] > 0


def test_expand_follows_kubernetes() -> None:
    assert expand("/x/$(NODE_NAME).crt", {"NODE_NAME": "n1"}) == "/x/n1.crt"
    assert expand("$(UNSET)", {}) == "$(UNSET)"  # Kubernetes leaves unknown references as written
