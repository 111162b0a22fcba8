"""Admin callers with a Kubernetes token, authorized by Kubernetes RBAC (issue 14, item 1): the
real `stockade` CLI and real gRPC against a real brain, whose TokenReviews and
SubjectAccessReviews go to the lab's API server, where the RBAC objects are made with the real
kubectl from the ClusterRoles shipped in deploy/rbac.yaml.

Each case uses a ServiceAccount of its own: the brain keeps an answer for 10 s, so a user asked
about before its binding exists would still be refused for that long (by design: revocation
takes at most that long)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from cli_brain import ADMIN, Lab, running_lab, stockade, tls

from stockade.brain.admin.kubeauth import CLUSTER_ROLES, GROUP, RESOURCE
from stockade.lab.apiserver import ApiServer
from stockade.v1 import admin_pb2, admin_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
API_TOKEN = "lab-apiserver-admin-token-0123456789"
NS = "team-x"
KUBECTL = shutil.which("kubectl")

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("rbac-brain")
    with running_lab(tmp, api_token=API_TOKEN) as found:
        found.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        shipped = [d for d in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()) if d]
        roles = [d for d in shipped if d["kind"] == "ClusterRole" and d["metadata"]["name"] in CLUSTER_ROLES.values()]
        assert len(roles) == 2
        (tmp / "roles.yaml").write_text(yaml.safe_dump_all(roles))
        kubectl(found, "apply", "-f", str(tmp / "roles.yaml"))
        yield found


def kubectl(lab: Lab, *args: str) -> str:
    assert KUBECTL is not None and lab.kubeconfig is not None
    out = subprocess.run(
        [KUBECTL, "--kubeconfig", str(lab.kubeconfig), *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def token_of(api: ApiServer, sa: str, audiences: tuple[str, ...] = (), namespace: str = NS) -> str:
    """A ServiceAccount token from the lab's API server (for the API's own audience by default,
    as `kubectl create token` gives)."""
    token, _ = api.tokens.issue(namespace, sa, audiences)
    return token


def bind(lab: Lab, role: str, name: str, **subject: str) -> None:
    flag = {"sa": f"--serviceaccount={NS}:{subject.get('sa')}", "group": f"--group={subject.get('group')}"}
    (kind,) = subject
    kubectl(lab, "create", "clusterrolebinding", name, f"--clusterrole={CLUSTER_ROLES[role]}", flag[kind])


def nodes(lab: Lab, token: str) -> subprocess.CompletedProcess[str]:
    return stockade("nodes", *tls(lab), "--token", token, "-o", "json")


def resync(lab: Lab, token: str) -> tuple[grpc.StatusCode, str]:
    """The admin role's call (no CLI command makes it), over real gRPC with TLS."""

    async def call() -> tuple[grpc.StatusCode, str]:
        creds = grpc.ssl_channel_credentials((lab.certs / "ca.crt").read_bytes())
        options = [("grpc.ssl_target_name_override", "localhost")]
        async with grpc.aio.secure_channel(lab.address, creds, options=options) as ch:
            try:
                got = await admin_pb2_grpc.AdminStub(ch).Resync(
                    admin_pb2.ResyncRequest(node="node-1"), metadata=[("authorization", f"Bearer {token}")], timeout=20
                )
            except grpc.aio.AioRpcError as e:
                return e.code(), e.details() or ""
            return grpc.StatusCode.OK, got.message

    return asyncio.run(call())


def test_a_user_without_a_binding_is_denied_and_told_which_role_to_bind(lab: Lab) -> None:
    out = nodes(lab, token_of(lab.api, "nobody"))
    assert out.returncode == 4, out.stderr  # denied (stockade.cli.exits)
    assert f"system:serviceaccount:{NS}:nobody may not get {RESOURCE}.{GROUP}" in out.stderr
    assert CLUSTER_ROLES["read"] in out.stderr


def test_a_viewer_reads_and_may_not_change_anything(lab: Lab) -> None:
    bind(lab, "read", "viewer-binding", sa="viewer")
    token = token_of(lab.api, "viewer")
    out = nodes(lab, token)
    assert out.returncode == 0, out.stderr
    assert {n["name"] for n in json.loads(out.stdout)["items"]} >= {"node-1", "node-2"}
    code, message = resync(lab, token)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert f"may not update {RESOURCE}.{GROUP}" in message and CLUSTER_ROLES["admin"] in message


def test_an_admin_binding_allows_the_changes(lab: Lab) -> None:
    bind(lab, "admin", "admin-binding", sa="operator")
    token = token_of(lab.api, "operator")
    # past authorization: the brain answers (node-1 has no agent here, so it says so)
    assert resync(lab, token) == (grpc.StatusCode.OK, "node node-1 is not connected")
    assert nodes(lab, token).returncode == 0


def test_a_binding_to_a_group_counts_for_its_members(lab: Lab) -> None:
    # every ServiceAccount of namespace team-y (another namespace: the other cases' accounts in
    # team-x stay unbound)
    bind(lab, "read", "team-binding", group="system:serviceaccounts:team-y")
    out = nodes(lab, token_of(lab.api, "someone-of-the-team", namespace="team-y"))
    assert out.returncode == 0, out.stderr


def test_the_api_servers_own_admin_is_allowed_everything(lab: Lab) -> None:
    # the kubeconfig's user is in system:masters, as a cluster's admin kubeconfig is
    assert nodes(lab, API_TOKEN).returncode == 0
    assert resync(lab, API_TOKEN)[0] == grpc.StatusCode.OK


def test_an_agents_token_is_not_an_operators_even_when_its_account_is_bound(lab: Lab) -> None:
    bind(lab, "admin", "agent-binding", sa="stockade-agent")
    out = nodes(lab, token_of(lab.api, "stockade-agent", audiences=("stockade",)))
    assert out.returncode == 4, out.stderr
    assert "the Kubernetes API refused it" in out.stderr


def test_a_token_nobody_knows_is_unauthenticated(lab: Lab) -> None:
    out = nodes(lab, "not-a-token-anyone-issued-0123456789")
    assert out.returncode == 4
    assert "not in the brain's --admin-tokens-file" in out.stderr and "the Kubernetes API refused it" in out.stderr
    # the tokens file still works beside Kubernetes tokens
    assert resync(lab, ADMIN)[0] == grpc.StatusCode.OK


def test_the_realized_endpoint_takes_kubernetes_tokens_too(lab: Lab) -> None:
    bind(lab, "read", "http-binding", sa="http-viewer")

    def get(token: str) -> int:
        url = f"http://127.0.0.1:{lab.http_port}/v1/realized?timeout=0.2"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    # past the credentials (the nodes have no agents here, so the wait itself may time out)
    assert get(token_of(lab.api, "http-viewer")) not in (401, 403)
    assert get(token_of(lab.api, "http-nobody")) == 403
    assert get("garbage-token-0123456789") == 401
