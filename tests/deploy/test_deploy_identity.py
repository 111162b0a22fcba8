"""deploy/'s agent identity (issue 13 item 1): agents prove their node with a projected
ServiceAccount token the brain checks; the pieces the manifests spread over several files agree."""

from __future__ import annotations

import re

from .render import DEPLOY, Obj, find, render


def _args(container: Obj) -> dict[str, str]:
    return dict(a.split("=", 1) for a in container["args"][1:] if "=" in a)


def test_the_agents_token_is_what_the_brain_expects() -> None:
    objects = render(DEPLOY).objects
    ds = find(objects, "DaemonSet", "stockade-agent")
    spec = ds["spec"]["template"]["spec"]
    (agent,) = spec["containers"]
    brain_dep = find(objects, "Deployment", "stockade-brain")
    (brain,) = brain_dep["spec"]["template"]["spec"]["containers"]
    b, a = _args(brain), _args(agent)
    assert b["--agent-auth"] == "token"
    # the projected token: our audience, short-lived, where --token-file reads it
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    (vol,) = [v for v in spec["volumes"] if "projected" in v]
    (sat,) = [s["serviceAccountToken"] for s in vol["projected"]["sources"] if "serviceAccountToken" in s]
    assert sat["audience"] == b["--agent-audience"] != "https://kubernetes.default.svc"
    assert sat["expirationSeconds"] <= 3600
    assert a["--token-file"] == f"{mounts[vol['name']]}/{sat['path']}"
    # the CA bundle comes from a ConfigMap (no private key), never from a Secret holding one
    (cm,) = [s["configMap"] for s in vol["projected"]["sources"] if "configMap" in s]
    assert a["--tls-ca"] == f"{mounts[vol['name']]}/{cm['items'][0]['path']}"
    assert not any("secret" in v for v in spec["volumes"]), "token mode mounts no Secret on the nodes"
    assert "--tls-cert" not in a and "--tls-key" not in a
    # the account the brain accepts is the DaemonSet's, in the namespace the brain runs in
    ns_var = re.fullmatch(r"\$\((\w+)\):(.+)", b["--agent-service-account"])
    assert ns_var, b["--agent-service-account"]
    env = {e["name"]: e for e in brain.get("env", [])}
    assert env[ns_var.group(1)]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert ns_var.group(2) == spec["serviceAccountName"]
    assert ds["metadata"]["namespace"] == brain_dep["metadata"]["namespace"]
    # the brain may ask TokenReview
    role = find(objects, "ClusterRole", "stockade-brain")
    assert any(
        "authentication.k8s.io" in r["apiGroups"] and "tokenreviews" in r["resources"] and r["verbs"] == ["create"]
        for r in role["rules"]
    )
