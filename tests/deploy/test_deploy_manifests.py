"""deploy/ renders with the real `kubectl kustomize`, every object validates against the Kubernetes schemas
(or, for the custom resources, against tests/deploy/crd_schemas.py), and the objects fit
together: names that refer to each other exist, selectors select, ports match."""

from __future__ import annotations

import os
import re
import tomllib
from collections import Counter
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .cli_flags import DOCUMENTED_FLAGS, flag_names, parse, subcommand_parser
from .crd_schemas import CRD_SCHEMAS
from .render import (
    DEPLOY,
    REPO,
    Obj,
    Rendered,
    RenderError,
    containers,
    find,
    is_manifest,
    kustomize,
    load_yaml_docs,
    pod_spec,
    render,
)

NAMESPACE = "stockade-system"
# The kinds of the base that live outside any namespace (the CRD: deploy/crds/).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# The oldest Kubernetes release we claim to support, and the newest the validator knows.
K8S_VERSIONS = ["1.28", kubernetes_validate.latest_version()]


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return render(DEPLOY)


@pytest.fixture(scope="module")
def objects(rendered: Rendered) -> list[Obj]:
    return rendered.objects


def ident(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# --- rendering -------------------------------------------------------------------------------


def test_every_manifest_file_is_listed_in_the_kustomization(rendered: Rendered) -> None:
    # Any YAML under deploy/ holding Kubernetes objects must be part of the base; other YAML
    # (plain Prometheus rule files, promtool tests) is not a manifest and may stay out.
    on_disk = set()
    for path in DEPLOY.rglob("*.y*ml"):
        if path.name == "kustomization.yaml":
            continue
        docs = load_yaml_docs(path)
        if any(is_manifest(d) for d in docs):
            on_disk.add(path.resolve())
    assert on_disk - set(rendered.files) == set(), "manifests not listed in deploy/kustomization.yaml"


def test_kubectl_renders_every_object_of_every_listed_file(rendered: Rendered) -> None:
    # kubectl kustomize neither drops nor adds objects: each file's objects are all in the output.
    written = Counter((d["kind"], d["metadata"]["name"]) for f in rendered.files for d in load_yaml_docs(f))
    assert Counter((o["kind"], o["metadata"]["name"]) for o in rendered.objects) == written


def test_objects_are_unique_and_namespaced(objects: list[Obj]) -> None:
    keys = Counter((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects)
    assert [k for k, n in keys.items() if n > 1] == []
    find(objects, "Namespace", NAMESPACE)
    for obj in objects:
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], ident(obj)
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, ident(obj)


def test_files_set_the_namespace_themselves() -> None:
    # So `kubectl apply -f deploy/<file>` works without kustomize too.
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_docs(path):
            if is_manifest(doc) and doc["kind"] not in CLUSTER_SCOPED:
                assert doc["metadata"].get("namespace") == NAMESPACE, f"{path.name}: {ident(doc)}"


def test_every_object_is_labelled_part_of_stockade(objects: list[Obj]) -> None:
    for obj in objects:
        assert obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "stockade", ident(obj)


def test_renderer_refuses_a_missing_resource(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [gone.yaml]\n"
    )
    with pytest.raises(RenderError, match=r"gone\.yaml"):
        render(tmp_path)


# --- images ----------------------------------------------------------------------------------


def all_containers(objects: list[Obj]) -> list[tuple[str, Obj]]:
    return [(ident(o), c) for o in objects for c in containers(o)]


def split_image(ref: str) -> tuple[str, str]:
    """(name, tag) of `registry/path/name:tag`; a port in the registry is not a tag."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, ""
    return name, tag


def test_every_image_is_fully_qualified(objects: list[Obj]) -> None:
    # A bare `stockade` resolves to docker.io/library/stockade: someone else's image, or none.
    found = all_containers(objects)
    assert len(found) >= 3
    for where, c in found:
        name, tag = split_image(c["image"])
        registry = name.split("/", 1)[0]
        assert "/" in name and ("." in registry or ":" in registry), f"{where}: {c['image']} names no registry"
        assert tag and tag != "latest", f"{where}: {c['image']} has no fixed tag"
        if name.endswith("/stockade"):
            assert registry != "docker.io", f"{where}: Stockade is not published on Docker Hub"


def test_every_image_is_listed_in_the_kustomization_with_the_files_tag(objects: list[Obj]) -> None:
    # An `images:` override in an overlay matches by these names; the files carry the same tag
    # so that `kubectl apply -f deploy/<file>` installs the same version.
    (kust,) = load_yaml_docs(DEPLOY / "kustomization.yaml")
    listed = {i["name"]: i["newTag"] for i in kust["images"]}
    for where, c in all_containers(objects):
        name, tag = split_image(c["image"])
        assert listed.get(name) == tag, f"{where}: {c['image']} is not in deploy/kustomization.yaml images:"
    for path in DEPLOY.rglob("*.yaml"):
        for doc in load_yaml_docs(path):
            for c in containers(doc) if is_manifest(doc) else ():
                assert split_image(c["image"]) in listed.items(), f"{path.name}: {c['image']}"


def test_an_overlay_images_override_changes_every_container(objects: list[Obj], tmp_path: Path) -> None:
    # What an operator does to use a mirror: an overlay with deploy/ as its base.
    (kust,) = load_yaml_docs(DEPLOY / "kustomization.yaml")
    overrides = [
        {"name": i["name"], "newName": f"mirror.example:5000/{i['name'].rsplit('/', 1)[1]}", "newTag": "9.9.9"}
        for i in kust["images"]
    ]
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY, tmp_path)],
        "images": overrides,
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    before = dict((w, c["image"]) for w, c in all_containers(objects))
    after = all_containers(kustomize(tmp_path))
    assert sorted(w for w, _ in after) == sorted(before)
    for where, c in after:
        assert c["image"] != before[where], where
        assert c["image"].startswith("mirror.example:5000/") and c["image"].endswith(":9.9.9"), where


# --- schema validation -----------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_kinds_validate_against_kubernetes_schemas(objects: list[Obj], version: str) -> None:
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{ident(obj)} invalid for Kubernetes {version} at {path}: {e.message}")
        checked += 1
    assert checked >= 13  # the built-in objects of the base, not a silently empty loop


def test_validator_catches_a_broken_object(objects: list[Obj]) -> None:
    # The check above can fail: a typo in a field name of the DaemonSet is caught.
    ds = yaml.safe_load(yaml.safe_dump(find(objects, "DaemonSet", "stockade-agent")))
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[0], strict=True)


def test_custom_resources_validate_against_their_schemas(objects: list[Obj]) -> None:
    kinds = set()
    for obj in objects:
        schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if schema is None:
            continue
        jsonschema.validate(obj, schema, cls=jsonschema.Draft202012Validator)
        kinds.add(obj["kind"])
    assert kinds == {"Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"}


def test_every_kind_has_a_schema(objects: list[Obj]) -> None:
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_SCHEMAS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSIONS[-1])  # raises SchemaNotFoundError if unknown


# --- the brain -------------------------------------------------------------------------------


def test_brain_deployment_is_highly_available_and_locked_down(objects: list[Obj]) -> None:
    dep = find(objects, "Deployment", "stockade-brain")
    assert dep["spec"]["replicas"] == 2
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "stockade-brain"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    terms = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    (c,) = spec["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}


def test_brain_pdb_and_service_select_the_brain(objects: list[Obj]) -> None:
    dep = find(objects, "Deployment", "stockade-brain")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    pdb = find(objects, "PodDisruptionBudget", "stockade-brain")
    assert pdb["spec"]["minAvailable"] == 1 < dep["spec"]["replicas"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = find(objects, "Service", "stockade-brain")
    assert svc["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for c in containers(dep) for p in c["ports"]}
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {
        "grpc": "grpc",
        "admin": "admin",
        "admin-mtls": "admin-mtls",
        "metrics": "metrics",
    }
    args = dict(a.split("=", 1) for a in dep["spec"]["template"]["spec"]["containers"][0]["args"][1:])
    assert args["--listen"].endswith(f":{ports['grpc']}")
    assert args["--admin-listen"].endswith(f":{ports['admin']}")
    assert args["--admin-mtls-listen"].endswith(f":{ports['admin-mtls']}")  # operator certificates
    assert args["--http"].endswith(f":{ports['metrics']}")


def test_brain_mounts_what_it_names(objects: list[Obj]) -> None:
    dep = find(objects, "Deployment", "stockade-brain")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    for arg in c["args"][1:]:
        flag, _, value = arg.partition("=")
        if flag in {"--tls-cert", "--tls-key", "--tls-ca", "--admin-tokens-file"}:
            assert any(value.startswith(m + "/") for m in mounts), arg
    (ref,) = c["envFrom"]
    config = find(objects, "ConfigMap", ref["configMapRef"]["name"])
    assert config["data"]["STOCKADE_REDIS_URL"].startswith("redis://stockade-redis.")


# --- the agent -------------------------------------------------------------------------------


def test_agent_daemonset_has_exactly_the_capabilities_it_needs(objects: list[Obj]) -> None:
    ds = find(objects, "DaemonSet", "stockade-agent")
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    sc = c["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]
    assert sc.get("privileged", False) is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True


def test_agent_runs_on_every_node_first(objects: list[Obj]) -> None:
    spec = find(objects, "DaemonSet", "stockade-agent")["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["priorityClassName"] == "system-node-critical"
    # A bare `operator: Exists` (no key, no effect) tolerates every taint.
    assert {"operator": "Exists"} in spec["tolerations"]
    # Every Linux node, and only those: nothing else narrows where it runs.
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "affinity" not in spec


def test_agent_has_no_api_access(objects: list[Obj]) -> None:
    spec = find(objects, "DaemonSet", "stockade-agent")["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    sa = find(objects, "ServiceAccount", spec["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False
    for obj in objects:
        if obj["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
            assert all(s["name"] != sa["metadata"]["name"] for s in obj["subjects"]), ident(obj)


def test_agent_mounts_the_xtables_lock_and_probes_readiness(objects: list[Obj]) -> None:
    spec = find(objects, "DaemonSet", "stockade-agent")["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (lock,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/run/xtables.lock"]
    assert volumes[lock["name"]]["hostPath"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    args = dict(a.split("=", 1) for a in c["args"][1:])
    port = int(args["--http"].rsplit(":", 1)[1])
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["readinessProbe"]["httpGet"]["port"] == port
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "--node" not in args  # comes from NODE_NAME


def test_agent_reaches_the_brain_by_a_name_its_certificate_carries(objects: list[Obj]) -> None:
    """Agents dial a headless Service's name: it resolves to every ready brain (issue 13: an agent
    moves to another brain when its own goes away), and the brains' certificate carries it."""
    (c,) = find(objects, "DaemonSet", "stockade-agent")["spec"]["template"]["spec"]["containers"]
    args = dict(a.split("=", 1) for a in c["args"][1:])
    host, _, port = args["--brain"].rpartition(":")
    cert = find(objects, "Certificate", "stockade-brain")
    assert host in cert["spec"]["dnsNames"]
    name, namespace, *_ = host.split(".")
    peers = find(objects, "Service", name)
    assert name == "stockade-brain-peers" and namespace == peers["metadata"]["namespace"]
    assert peers["spec"]["clusterIP"] == "None"  # one record per ready brain pod, not one virtual IP
    assert not peers["spec"].get("publishNotReadyAddresses")  # a brain that is not ready is not dialled
    brain_labels = find(objects, "Deployment", "stockade-brain")["spec"]["template"]["metadata"]["labels"]
    assert peers["spec"]["selector"].items() <= brain_labels.items()
    (p,) = peers["spec"]["ports"]
    assert (p["port"], p["targetPort"]) == (int(port), "grpc")
    for n in (name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"):
        assert n in cert["spec"]["dnsNames"]
    # The ClusterIP Service stays, for the admin API and metrics (the CLI, Prometheus).
    svc = find(objects, "Service", "stockade-brain")
    assert svc["spec"]["type"] == "ClusterIP" and int(port) in {p["port"] for p in svc["spec"]["ports"]}


# --- certificates, Redis, monitoring ---------------------------------------------------------


def test_certificate_chain_is_wired(objects: list[Obj]) -> None:
    ca = find(objects, "Certificate", "stockade-ca")
    assert ca["spec"]["isCA"] is True
    assert ca["spec"]["privateKey"]["algorithm"] == "ECDSA"  # `stockade certs init` signs with EC CAs only
    selfsigned = find(objects, "Issuer", ca["spec"]["issuerRef"]["name"])
    assert "selfSigned" in selfsigned["spec"]
    ca_issuer = find(objects, "Issuer", "stockade-ca")
    assert ca_issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    brain = find(objects, "Certificate", "stockade-brain")
    assert brain["spec"]["issuerRef"]["name"] == "stockade-ca"
    assert "server auth" in brain["spec"]["usages"]
    vols = pod_spec(find(objects, "Deployment", "stockade-brain"))["volumes"]  # type: ignore[index]
    assert brain["spec"]["secretName"] in {v.get("secret", {}).get("secretName") for v in vols}
    # Agents' per-node certificates are signed from this CA's Secret by deploy/agent-certs.sh.
    script = (DEPLOY / "agent-certs.sh").read_text()
    assert f'ca_secret="${{CA_SECRET:-{ca["spec"]["secretName"]}}}"' in script
    # No certificate shared by all agents: the brain would refuse it (it must name the node).
    assert sorted(c["metadata"]["name"] for c in objects if c["kind"] == "Certificate") == [
        "stockade-brain",
        "stockade-ca",
    ]


def test_redis_is_reachable_by_the_configured_url_and_only_by_the_brain(objects: list[Obj]) -> None:
    sts = find(objects, "StatefulSet", "stockade-redis")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    svc = find(objects, "Service", sts["spec"]["serviceName"])
    assert svc["spec"]["selector"].items() <= labels.items()
    url = find(objects, "ConfigMap", "stockade-config")["data"]["STOCKADE_REDIS_URL"]
    assert url.startswith(f"redis://{svc['metadata']['name']}.{NAMESPACE}.svc:{svc['spec']['ports'][0]['port']}")
    policy = find(objects, "NetworkPolicy", "stockade-redis")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    brain_labels = find(objects, "Deployment", "stockade-brain")["spec"]["template"]["metadata"]["labels"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= brain_labels.items()


def test_service_monitor_scrapes_brain_and_agents(objects: list[Obj]) -> None:
    sm = find(objects, "ServiceMonitor", "stockade")
    selector = sm["spec"]["selector"]

    def selected(svc: Obj) -> bool:
        labels = svc["metadata"].get("labels", {})
        if not selector["matchLabels"].items() <= labels.items():
            return False
        return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))

    chosen = {s["metadata"]["name"] for s in objects if s["kind"] == "Service" and selected(s)}
    assert chosen == {"stockade-brain", "stockade-agent-metrics"}
    (endpoint,) = sm["spec"]["endpoints"]
    for name in chosen:
        assert endpoint["port"] in {p["name"] for p in find(objects, "Service", name)["spec"]["ports"]}


def test_every_container_has_resources_and_drops_capabilities(objects: list[Obj]) -> None:
    for obj in objects:
        for c in containers(obj):
            assert set(c["resources"]) == {"requests", "limits"}, ident(obj)
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], ident(obj)
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, ident(obj)


# --- what platforms expect --------------------------------------------------------------------

CRITICAL = {"system-node-critical", "system-cluster-critical"}
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
OPERATOR_SELECTOR_LABELS = {"release": "kube-prometheus-stack"}


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if pod_spec(o) is not None]


def test_every_pod_runs_on_linux_nodes_only(objects: list[Obj]) -> None:
    # nft, iptables and the images are Linux-only: a pod on a Windows node would never start.
    assert {o["kind"] for o in workloads(objects)} == {"Deployment", "DaemonSet", "StatefulSet"}
    for obj in workloads(objects):
        selector = pod_spec(obj).get("nodeSelector", {})  # type: ignore[union-attr]
        assert selector.get("kubernetes.io/os") == "linux", f"{ident(obj)}: no nodeSelector kubernetes.io/os: linux"


def quota_admits(quota: Obj, priority_class: str) -> bool:
    """Whether a ResourceQuota's scope covers pods of this priority class (the ResourceQuota
    admission plugin's `limitedResources` rule: such pods need a covering quota)."""
    scope = quota["spec"].get("scopeSelector", {}).get("matchExpressions", [])
    return any(
        e["scopeName"] == "PriorityClass"
        and (
            (e["operator"] == "In" and priority_class in e.get("values", []))
            or (e["operator"] == "NotIn" and priority_class not in e.get("values", []))
            or e["operator"] == "Exists"
        )
        for e in scope
    )


def test_critical_priority_is_admitted_outside_kube_system(objects: list[Obj]) -> None:
    quotas = [o for o in objects if o["kind"] == "ResourceQuota"]
    critical = [o for o in workloads(objects) if pod_spec(o).get("priorityClassName") in CRITICAL]  # type: ignore[union-attr]
    assert {ident(o) for o in critical} == {"DaemonSet/stockade-agent", "Deployment/stockade-brain"}
    for obj in critical:
        namespace = obj["metadata"]["namespace"]
        if namespace == "kube-system":
            continue
        cls = pod_spec(obj)["priorityClassName"]  # type: ignore[index]
        covering = [q for q in quotas if q["metadata"]["namespace"] == namespace and quota_admits(q, cls)]
        assert covering, f"{ident(obj)}: {cls} in {namespace} needs a ResourceQuota scoped to it"
        # It is there to admit, not to limit: room for an agent on every node of a large cluster.
        for quota in covering:
            assert set(quota["spec"]["hard"]) == {"pods"}, ident(quota)
            assert parse_quantity(quota["spec"]["hard"]["pods"]) >= 100_000, ident(quota)


def parse_quantity(text: str) -> int:
    units = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9}
    number = text.rstrip("kMG")
    return int(number) * units[text[len(number) :]]


def test_quota_check_can_fail() -> None:
    quota = {"spec": {"scopeSelector": {"matchExpressions": [
        {"scopeName": "PriorityClass", "operator": "In", "values": ["system-cluster-critical"]}]}}}  # fmt: skip
    assert quota_admits(quota, "system-cluster-critical")
    assert not quota_admits(quota, "system-node-critical")


def probe_target(container: Obj, probe: Obj) -> tuple[str, int]:
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    return probe["httpGet"]["path"], port


def test_startup_probes_cover_a_slow_start(objects: list[Obj]) -> None:
    # Liveness only starts once the startup probe has passed once: a slow first list (the brain
    # reads every pod before it serves) must not get the container killed over and over.
    for kind, name, path, budget in (
        ("Deployment", "stockade-brain", "/readyz", 600),  # 503 until the first full list
        ("DaemonSet", "stockade-agent", "/healthz", 120),
    ):
        (c,) = pod_spec(find(objects, kind, name))["containers"]  # type: ignore[index]
        startup, liveness = c["startupProbe"], c["livenessProbe"]
        assert probe_target(c, startup) == (path, probe_target(c, c["readinessProbe"])[1]), name
        assert startup["periodSeconds"] * startup["failureThreshold"] >= budget, name
        assert "initialDelaySeconds" not in liveness, f"{name}: the startup probe replaces the delay"
        assert liveness["periodSeconds"] * liveness.get("failureThreshold", 3) >= 30, name


def test_prometheus_operator_labels_come_from_one_place(objects: list[Obj]) -> None:
    # kube-prometheus-stack selects ServiceMonitors, PodMonitors and PrometheusRules by its
    # `release` label; the kustomization sets it on exactly those, and no file sets it itself.
    monitoring = [o for o in objects if o["kind"] in MONITORING_KINDS]
    assert {o["kind"] for o in monitoring} == {"ServiceMonitor", "PrometheusRule"}
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        if obj["kind"] in MONITORING_KINDS:
            assert OPERATOR_SELECTOR_LABELS.items() <= labels.items(), ident(obj)
        else:
            assert "release" not in labels, ident(obj)
    for path in DEPLOY.rglob("*.yaml"):
        if path.name != "kustomization.yaml":
            assert "kube-prometheus-stack" not in path.read_text(), path.name


def test_an_overlay_renames_the_operator_release_label(tmp_path: Path) -> None:
    # The README's recipe for a Prometheus whose Helm release has another name.
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY, tmp_path)],
        "labels": [{"pairs": {"release": "monitoring"}, "includeSelectors": False, "fields": [
            {"kind": k, "path": "metadata/labels", "create": True} for k in sorted(MONITORING_KINDS)]}],
    }  # fmt: skip
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    out = kustomize(tmp_path)
    assert {o["kind"] for o in out if o["metadata"].get("labels", {}).get("release") == "monitoring"} == {
        "ServiceMonitor",
        "PrometheusRule",
    }
    assert not [ident(o) for o in out if o["metadata"].get("labels", {}).get("release") == "kube-prometheus-stack"]


# --- command lines ---------------------------------------------------------------------------


def stockade_commands(objects: list[Obj]) -> list[tuple[str, list[str]]]:
    out = []
    for obj in objects:
        for c in containers(obj):
            if c["image"].split(":")[0].endswith("stockade"):
                out.append((c["args"][0], c["args"][1:]))
    return out


def test_command_lines_use_only_the_agreed_flags(objects: list[Obj]) -> None:
    commands = stockade_commands(objects)
    assert {cmd for cmd, _ in commands} == {"brain", "agent"}
    for cmd, args in commands:
        assert flag_names(args) <= DOCUMENTED_FLAGS[cmd], cmd


@pytest.mark.parametrize("command", ["brain", "agent"])
def test_command_lines_parse_with_the_real_cli(
    objects: list[Obj], command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser, why = subcommand_parser(command)
    if parser is None:
        pytest.skip(why)
    monkeypatch.setenv("NODE_NAME", "node-a")  # what the downward API gives the agent
    for cmd, args in stockade_commands(objects):
        if cmd == command:
            parse(parser, args)


def test_install_guide_exists_and_points_at_this_base() -> None:
    guide = (REPO / "README.md").read_text()
    assert "kubectl apply -k deploy/" in guide


def test_image_tag_is_the_released_version() -> None:
    # One version everywhere: the package, the image the Dockerfile labels, and what deploy/ pulls.
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    (kust,) = load_yaml_docs(DEPLOY / "kustomization.yaml")
    (stockade,) = [i for i in kust["images"] if i["name"].endswith("/stockade")]
    assert stockade["newTag"] == version
    assert re.search(rf"^ARG VERSION={re.escape(version)}$", (REPO / "Dockerfile").read_text(), flags=re.M)
