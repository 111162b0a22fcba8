"""The upstream-style NetworkPolicy e2e suite in the lab, on both backends (see e2e.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .e2e import CASES, XYZ, apply, check_matrix, delete, file, lab_for, pod
from .labenv import Lab

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module", params=["nftables", "iptables"])
def xyz(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from lab_for(request.param, tmp_path_factory)


@pytest.mark.parametrize("case", sorted(CASES))
def test_case(xyz: Lab, case: str) -> None:
    path = file(xyz, f"{case}.yaml", CASES[case])
    apply(xyz, path)
    try:
        check_matrix(xyz)
    finally:
        delete(xyz, path)


def test_label_updates_and_policy_deletion(xyz: Lab) -> None:
    policy = file(xyz, "from-y.yaml", CASES["from-namespace-y-to-a"])
    apply(xyz, policy)
    try:
        # x/b becomes pod=a: the policy now isolates it too.
        apply(xyz, file(xyz, "relabel-pod.yaml", [pod("x", "b", "a")]))
        check_matrix(xyz)
        # z loses ns=z and gains ns=y: its pods may now reach x's pod=a pods.
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "z", "labels": {"ns": "y"}}}
        apply(xyz, file(xyz, "relabel-ns.yaml", [ns]))
        check_matrix(xyz)
        delete(xyz, policy)  # everything opens again
        check_matrix(xyz)
    finally:
        delete(xyz, policy)
        apply(xyz, str(XYZ))  # the original labels
    check_matrix(xyz)


def test_beta_default_deny_annotation(xyz: Lab) -> None:
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "y",
            "labels": {"ns": "y"},
            "annotations": {"net.beta.kubernetes.io/network-policy": '{"ingress": {"isolation": "DefaultDeny"}}'},
        },
    }
    apply(xyz, file(xyz, "beta.yaml", [ns]))
    try:
        check_matrix(xyz)
    finally:
        plain = {**ns, "metadata": {"name": "y", "labels": {"ns": "y"}}}
        apply(xyz, file(xyz, "unbeta.yaml", [plain]))
