"""RBAC in the lab API server, through the real kubectl and the real kubernetes-asyncio client:
the four RBAC kinds (CRUD, list, watch, columns, validation), who a token is (the static admin
token, ServiceAccount tokens this server minted), 403 Forbidden for a ServiceAccount without a
grant, ``kubectl auth can-i`` (SelfSubjectAccessReview), SubjectAccessReview and the admin
token's TokenReview.

The server serves HTTPS: kubectl sends a bearer token only over TLS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from stockade.lab.apiserver import ApiServer
from stockade.lab.apiserver.tokens import API_AUDIENCE

from .test_kubectl import kubectl

ADMIN_TOKEN = "lab-admin-static-token"
NS = "ops"
SA = "stockade-cli"
SA_USER = f"system:serviceaccount:{NS}:{SA}"

MANIFEST = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: stockade-admin}
rules:
- {apiGroups: [stockade.io], resources: [brains], verbs: [get, update]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: ops}
rules:
- {apiGroups: [""], resources: [pods], verbs: [VERBS]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: read-pods, namespace: ops}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ROLE}
subjects:
- {kind: ServiceAccount, name: stockade-cli}
- {kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}
"""


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[ApiServer]:
    srv = ApiServer(token=ADMIN_TOKEN, tls=True, bookmark_interval=0.2)
    srv.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
def kc(secured: ApiServer, tmp_path: Path) -> Path:
    return secured.kubeconfig(tmp_path / "kubeconfig")


async def sa_token(kc: Path, sa: str = SA, audiences: list[str] | None = None) -> str:
    """A token from the real TokenRequest API (no audiences: the API server's own)."""
    async with await config.new_client_from_config(str(kc)) as ac:
        body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=audiences or []))
        answer = await client.CoreV1Api(ac).create_namespaced_service_account_token(sa, NS, body)
        return str(answer.status.token)


async def as_token(kc: Path, token: str, tmp_path: Path) -> client.ApiClient:
    """A kubernetes-asyncio client of the same server with another bearer token."""
    ac = await config.new_client_from_config(str(kc))
    ac.configuration.api_key["BearerToken"] = f"Bearer {token}"
    return ac


async def test_kubectl_creates_lists_applies_and_deletes_the_rbac_kinds(
    secured: ApiServer, kc: Path, tmp_path: Path
) -> None:
    _, out, _ = await kubectl(
        kc, "create", "clusterrole", "stockade-viewer", "--verb=get", "--resource=brains.stockade.io"
    )
    assert "clusterrole.rbac.authorization.k8s.io/stockade-viewer created" in out
    rules = secured.get_object("ClusterRole", "stockade-viewer")["rules"]
    assert rules == [{"apiGroups": ["stockade.io"], "resources": ["brains"], "verbs": ["get"]}]
    _, out, _ = await kubectl(kc, "get", "clusterroles")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "CREATED", "AT"]
    names = [r.split()[0] for r in rows]
    assert "stockade-viewer" in names and "cluster-admin" in names and "system:discovery" in names
    assert rows[names.index("stockade-viewer")].split()[1].endswith("Z")  # RFC 3339, as the real printer

    _, out, _ = await kubectl(
        kc,
        "create",
        "clusterrolebinding",
        "ops-view",
        "--clusterrole=stockade-viewer",
        f"--serviceaccount={NS}:{SA}",
        "--group=ops",
    )
    assert "clusterrolebinding.rbac.authorization.k8s.io/ops-view created" in out
    _, out, _ = await kubectl(
        kc, "create", "rolebinding", "edit", "--clusterrole=cluster-admin", "--user=alice", "-n", NS
    )
    assert "rolebinding.rbac.authorization.k8s.io/edit created" in out
    _, out, _ = await kubectl(kc, "get", "clusterrolebinding", "ops-view", "-o", "wide")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    assert row.split()[:2] == ["ops-view", "ClusterRole/stockade-viewer"] and row.split()[-2:] == ["ops", f"{NS}/{SA}"]
    binding = secured.get_object("RoleBinding", "edit", NS)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    }
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]

    manifest = tmp_path / "rbac.yaml"
    manifest.write_text(MANIFEST.replace("VERBS", "get").replace("ROLE", "pod-reader"))
    _, out, _ = await kubectl(kc, "apply", "-f", str(manifest))
    assert "clusterrole.rbac.authorization.k8s.io/stockade-admin created" in out
    assert "role.rbac.authorization.k8s.io/pod-reader created" in out
    assert "rolebinding.rbac.authorization.k8s.io/read-pods created" in out
    # defaulted as v1 defaults: roleRef's and a User's apiGroup; a ServiceAccount's stays ""
    subjects = secured.get_object("RoleBinding", "read-pods", NS)["subjects"]
    assert subjects[0] == {"kind": "ServiceAccount", "name": SA}
    manifest.write_text(MANIFEST.replace("VERBS", "get, list, watch").replace("ROLE", "pod-reader"))
    _, out, _ = await kubectl(kc, "apply", "-f", str(manifest))
    assert "role.rbac.authorization.k8s.io/pod-reader configured" in out
    assert secured.get_object("Role", "pod-reader", NS)["rules"][0]["verbs"] == ["get", "list", "watch"]
    _, out, _ = await kubectl(kc, "get", "roles,rolebindings", "-n", NS)
    assert "role.rbac.authorization.k8s.io/pod-reader" in out and "Role/pod-reader" in out

    # roleRef may not change, as the real server says it
    manifest.write_text(MANIFEST.replace("VERBS", "get").replace("ROLE", "other"))
    rc, _, err = await kubectl(kc, "apply", "-f", str(manifest), ok=False)
    assert rc != 0
    assert (
        'The RoleBinding "read-pods" is invalid: roleRef: Invalid value: '
        'rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", Name:"other"}: cannot change roleRef' in err
    )

    _, out, _ = await kubectl(kc, "delete", "-f", str(manifest))
    assert 'rolebinding.rbac.authorization.k8s.io "read-pods" deleted' in out
    _, out, _ = await kubectl(kc, "delete", "clusterrolebinding", "ops-view")
    assert 'clusterrolebinding.rbac.authorization.k8s.io "ops-view" deleted' in out
    _, out, _ = await kubectl(kc, "get", "rolebindings", "-n", NS, "-o", "name")
    assert out.split() == ["rolebinding.rbac.authorization.k8s.io/edit"]


async def test_invalid_rbac_objects_are_422_with_field_paths(kc: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: bad}\n"
        "roleRef: {apiGroup: example.com, kind: Role, name: x}\n"
        "subjects: [{kind: ServiceAccount, name: cli}, {kind: Robot, name: r}]\n"
    )
    rc, _, err = await kubectl(kc, "create", "-f", str(bad), ok=False)
    assert rc != 0
    assert 'The ClusterRoleBinding "bad" is invalid:' in err  # kubectl's rewording of the 422
    assert 'roleRef.apiGroup: Unsupported value: "example.com": supported values: "rbac.authorization.k8s.io"' in err
    assert 'roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole"' in err
    assert "subjects[0].namespace: Required value" in err
    assert 'subjects[1].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group"' in err
    async with await config.new_client_from_config(str(kc)) as ac:
        rbac = client.RbacAuthorizationV1Api(ac)
        with pytest.raises(ApiException) as e:
            await rbac.create_cluster_role(
                client.V1ClusterRole(
                    metadata=client.V1ObjectMeta(name="r"), rules=[{"apiGroups": [""], "resources": ["pods"]}]
                )
            )
        body = json.loads(e.value.body)
        assert e.value.status == 422 and [c["field"] for c in body["details"]["causes"]] == ["rules[0].verbs"]
        assert body["message"] == (
            'ClusterRole.rbac.authorization.k8s.io "r" is invalid: '
            "rules[0].verbs: Required value: verbs must contain at least one value"
        )
        with pytest.raises(ApiException) as e:
            await rbac.create_namespaced_role(
                NS, {"metadata": {"name": "r"}, "rules": [{"nonResourceURLs": ["/x"], "verbs": ["get"]}]}
            )
        assert "namespaced rules cannot apply to non-resource URLs" in json.loads(e.value.body)["message"]
        with pytest.raises(ApiException) as e:
            await rbac.create_namespaced_role_binding(
                NS, {"metadata": {"name": "b"}, "roleRef": {"kind": "Role", "apiGroup": "rbac.authorization.k8s.io"}}
            )
        assert [c["field"] for c in json.loads(e.value.body)["details"]["causes"]] == ["roleRef.name"]


async def test_rbac_kinds_list_and_watch_with_kubernetes_asyncio(kc: Path) -> None:
    async with await config.new_client_from_config(str(kc)) as ac:
        rbac = client.RbacAuthorizationV1Api(ac)
        listed = await rbac.list_cluster_role()
        rv = listed.metadata.resource_version
        assert "cluster-admin" in [r.metadata.name for r in listed.items]
        w = watch.Watch()
        events: list[tuple[str, str]] = []

        async def follow() -> None:
            async for ev in w.stream(rbac.list_namespaced_role_binding, NS, resource_version=rv, timeout_seconds=10):
                events.append((ev["type"], ev["object"].role_ref.name))
                if ev["type"] == "DELETED":
                    w.stop()

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.2)
        body = client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="b"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"),
            subjects=[client.RbacV1Subject(kind="Group", name="devs", api_group="rbac.authorization.k8s.io")],
        )
        made = await rbac.create_namespaced_role_binding(NS, body)
        assert made.subjects[0].name == "devs"
        await rbac.patch_namespaced_role_binding("b", NS, {"metadata": {"labels": {"x": "y"}}})
        await rbac.delete_namespaced_role_binding("b", NS)
        await asyncio.wait_for(task, 10)
        assert events == [("ADDED", "view"), ("MODIFIED", "view"), ("DELETED", "view")]


async def test_service_account_tokens_are_authorized_by_rbac(secured: ApiServer, kc: Path, tmp_path: Path) -> None:
    token = await sa_token(kc)
    # kubectl auth can-i (a SelfSubjectAccessReview): no until a binding grants it, then yes
    rc, out, _ = await kubectl(kc, "auth", "can-i", "get", "brains.stockade.io", "--token", token, ok=False)
    assert (rc, out.strip()) == (1, "no")
    await kubectl(kc, "create", "clusterrole", "stockade-viewer", "--verb=get", "--resource=brains.stockade.io")
    await kubectl(
        kc, "create", "clusterrolebinding", "cli", "--clusterrole=stockade-viewer", f"--serviceaccount={NS}:{SA}"
    )
    rc, out, _ = await kubectl(kc, "auth", "can-i", "get", "brains.stockade.io", "--token", token, ok=False)
    assert (rc, out.strip()) == (0, "yes")
    rc, out, _ = await kubectl(kc, "auth", "can-i", "update", "brains.stockade.io", "--token", token, ok=False)
    assert (rc, out.strip()) == (1, "no")
    _, out, _ = await kubectl(kc, "auth", "can-i", "--list", "--token", token)  # a SelfSubjectRulesReview
    rows = [line.split() for line in out.splitlines()[1:]]
    assert ["brains.stockade.io", "[]", "[]", "[get]"] in rows
    assert ["selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]"] in rows
    # the admin token can do anything; and its can-i about another user (--as is impersonation: not served)
    rc, out, _ = await kubectl(kc, "auth", "can-i", "update", "brains.stockade.io", ok=False)
    assert (rc, out.strip()) == (0, "yes")

    # listing pods: 403 with the real message, then 200 once a RoleBinding grants it
    rc, _, err = await kubectl(kc, "get", "pods", "-n", NS, "--token", token, ok=False)
    assert rc == 1
    assert (
        f'Error from server (Forbidden): pods is forbidden: User "{SA_USER}" cannot list resource "pods" '
        f'in API group "" in the namespace "{NS}"' in err
    )
    ac = await as_token(kc, token, tmp_path)
    try:
        core = client.CoreV1Api(ac)
        with pytest.raises(ApiException) as e:
            await core.read_namespaced_pod("web", NS)
        status = json.loads(e.value.body)
        assert e.value.status == 403 and status["reason"] == "Forbidden"
        assert status["details"] == {"name": "web", "kind": "pods"}
        assert status["message"] == (
            f'pods "web" is forbidden: User "{SA_USER}" cannot get resource "pods" in API group "" '
            f'in the namespace "{NS}"'
        )
        await kubectl(kc, "create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods", "-n", NS)
        await kubectl(
            kc, "create", "rolebinding", "cli-pods", "--role=pod-reader", f"--serviceaccount={NS}:{SA}", "-n", NS
        )
        rc, _, err = await kubectl(kc, "get", "pods", "-n", NS, "--token", token, ok=False)
        assert rc == 0 and "No resources found" in err
        assert (await core.list_namespaced_pod(NS)).items == []
        with pytest.raises(ApiException) as e:  # only in its namespace
            await core.list_pod_for_all_namespaces()
        assert e.value.status == 403 and "at the cluster scope" in json.loads(e.value.body)["message"]
        with pytest.raises(ApiException) as e:  # nor another verb
            await core.create_namespaced_pod(NS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}})
        assert e.value.status == 403
        # discovery is every authenticated user's (system:discovery); TokenReview is not
        rc, out, _ = await kubectl(kc, "api-resources", "--api-group=rbac.authorization.k8s.io", "--token", token)
        assert "clusterroles" in out
        with pytest.raises(ApiException) as e:
            await client.AuthenticationV1Api(ac).create_token_review(
                client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
            )
        assert e.value.status == 403
    finally:
        await ac.close()


async def test_only_valid_api_tokens_authenticate(secured: ApiServer, kc: Path) -> None:
    async def status(token: str) -> int:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{secured.url}/apis", headers=headers, ssl=False) as r:
                return r.status

    assert await status(ADMIN_TOKEN) == 200
    assert await status(await sa_token(kc)) == 200  # system:discovery
    assert await status(await sa_token(kc, audiences=["stockade"])) == 401  # another audience
    expired, _ = secured.tokens.issue(NS, SA, expiration_seconds=-5)
    assert await status(expired) == 401
    assert await status("not-a-token") == 401
    assert secured.tokens.reviews == 0  # authenticating requests is not TokenReview


async def test_without_a_static_token_service_account_tokens_still_identify(server: ApiServer, tmp_path: Path) -> None:
    """A server made without a token lets every other request in as lab-admin, as before RBAC."""
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    token, _ = server.tokens.issue(NS, SA)
    async with aiohttp.ClientSession(base_url=server.url) as http:
        async with http.get(f"/api/v1/namespaces/{NS}/pods") as r:
            assert r.status == 200
        async with http.get(f"/api/v1/namespaces/{NS}/pods", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 403 and SA_USER in (await r.json())["message"]
        expired, _ = server.tokens.issue(NS, SA, expiration_seconds=-5)
        async with http.get(f"/api/v1/namespaces/{NS}/pods", headers={"Authorization": f"Bearer {expired}"}) as r:
            assert r.status == 401


def sar(**spec: Any) -> client.V1SubjectAccessReview:
    return client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(**spec))


async def test_subject_access_reviews_with_kubernetes_asyncio(secured: ApiServer, kc: Path, tmp_path: Path) -> None:
    secured.put_object(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "stockade-admin"},
            "rules": [{"apiGroups": ["stockade.io"], "resources": ["brains"], "verbs": ["get", "update"]}],
        }
    )
    secured.put_object(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "ops-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "stockade-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ops"}],
        }
    )
    brains = client.V1ResourceAttributes(verb="update", group="stockade.io", resource="brains")
    async with await config.new_client_from_config(str(kc)) as ac:
        authz = client.AuthorizationV1Api(ac)
        answer = await authz.create_subject_access_review(sar(user="alice", groups=["ops"], resource_attributes=brains))
        assert answer.status.allowed is True and answer.status.denied is False
        assert (
            answer.status.reason
            == 'RBAC: allowed by ClusterRoleBinding "ops-admin" of ClusterRole "stockade-admin" to Group "ops"'
        )
        answer = await authz.create_subject_access_review(sar(user="alice", resource_attributes=brains))
        assert answer.status.allowed is False and answer.status.denied is False and not answer.status.reason
        answer = await authz.create_subject_access_review(
            sar(
                user=SA_USER,
                groups=["system:authenticated"],
                non_resource_attributes=client.V1NonResourceAttributes(path="/apis/stockade.io", verb="get"),
            )
        )
        assert answer.status.allowed is True and "system:discovery" in answer.status.reason
        answer = await authz.create_subject_access_review(
            sar(user="root", groups=["system:masters"], resource_attributes=brains)
        )
        assert answer.status.allowed is True
        with pytest.raises(ApiException) as e:
            await authz.create_subject_access_review(sar(user="alice"))
        body = json.loads(e.value.body)
        assert e.value.status == 422 and [c["field"] for c in body["details"]["causes"]] == ["spec.resourceAttributes"]
        with pytest.raises(ApiException) as e:
            await authz.create_subject_access_review(sar(resource_attributes=brains))
        assert (
            'spec.user: Invalid value: "": at least one of user or group must be specified'
            in json.loads(e.value.body)["message"]
        )
        # a SelfSubjectAccessReview is about the caller: lab-admin, a master
        me = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=brains))
        assert (await authz.create_self_subject_access_review(me)).status.allowed is True

    # a ServiceAccount may ask SubjectAccessReviews only when RBAC lets it create them
    token = await sa_token(kc)
    ac = await as_token(kc, token, tmp_path)
    try:
        authz = client.AuthorizationV1Api(ac)
        with pytest.raises(ApiException) as e:
            await authz.create_subject_access_review(sar(user="alice", groups=["ops"], resource_attributes=brains))
        assert e.value.status == 403
        assert json.loads(e.value.body)["message"] == (
            f'subjectaccessreviews.authorization.k8s.io is forbidden: User "{SA_USER}" cannot create resource '
            '"subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope'
        )
        me = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=brains))
        answer = await authz.create_self_subject_access_review(me)
        assert answer.status.allowed is False
        secured.put_object(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "cli-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "stockade-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": NS}],
            }
        )
        answer = await authz.create_self_subject_access_review(me)
        assert answer.status.allowed is True
        assert (
            answer.status.reason == 'RBAC: allowed by ClusterRoleBinding "cli-admin" of ClusterRole "stockade-admin" '
            f'to ServiceAccount "{SA}/{NS}"'
        )
        secured.put_object(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "reviewer"},
                "rules": [
                    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}
                ],
            }
        )
        secured.put_object(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "cli-reviewer"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reviewer"},
                "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": NS}],
            }
        )
        answer = await authz.create_subject_access_review(sar(user="alice", groups=["ops"], resource_attributes=brains))
        assert answer.status.allowed is True
    finally:
        await ac.close()


async def test_token_review_answers_for_the_admin_token(secured: ApiServer, kc: Path) -> None:
    async with await config.new_client_from_config(str(kc)) as ac:
        authn = client.AuthenticationV1Api(ac)
        review = await authn.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token=ADMIN_TOKEN)))
        st = review.status
        assert st.authenticated is True and st.audiences == [API_AUDIENCE]
        assert st.user.username == "lab-admin" and st.user.groups == ["system:masters", "system:authenticated"]
        review = await authn.create_token_review(
            client.V1TokenReview(spec=client.V1TokenReviewSpec(token=ADMIN_TOKEN, audiences=["stockade", API_AUDIENCE]))
        )
        assert review.status.authenticated is True and review.status.audiences == [API_AUDIENCE]
        review = await authn.create_token_review(
            client.V1TokenReview(spec=client.V1TokenReviewSpec(token=ADMIN_TOKEN, audiences=["stockade"]))
        )
        assert not review.status.authenticated and "audiences" in review.status.error
        # ServiceAccount tokens are reviewed as before
        token = await sa_token(kc)
        review = await authn.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token)))
        assert review.status.authenticated is True and review.status.user.username == SA_USER
        assert review.status.user.groups == [
            "system:serviceaccounts",
            f"system:serviceaccounts:{NS}",
            "system:authenticated",
        ]
