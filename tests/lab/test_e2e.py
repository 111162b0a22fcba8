"""The upstream-style NetworkPolicy e2e suite in the lab, on both backends, in an IPv4 lab, a
dual-stack lab and a dual-stack lab on bridges (see e2e.py: `MODES` says which cases run where);
every matrix to the pods' IPs and through their Services' ClusterIPs.

One test function, parametrized by (lab, case) in the order the labs come up: each lab is built
once, for all of its cases, and taken down before the next one is built (`Labs`). (A
module-scoped parametrized fixture would be set up again whenever pytest's reordering
interleaves two labs' cases, and each set-up is a whole lab.)
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator

import pytest

from .e2e import CASES, MODES, XYZ, apply, check_matrix, delete, file, lab_for, pod
from .labenv import Lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

BACKENDS = ("nftables", "iptables")
LABS = [(backend, mode) for mode in MODES for backend in BACKENDS]


class Labs:
    """At most one e2e lab up at a time: asking for another takes the current one down."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp = tmp_path_factory
        self.name: tuple[str, str] | None = None
        self.running: Generator[Lab, None, None] | None = None
        self.lab: Lab | None = None
        self.failed: dict[tuple[str, str], str] = {}

    def get(self, backend: str, mode: str) -> Lab:
        key = (backend, mode)
        if key in self.failed:  # one failed `up` fails its cases at once, not after one more try each
            pytest.fail(f"the {backend} {mode} lab did not come up: {self.failed[key]}")
        if self.name != key:
            self.close()
            self.running = lab_for(backend, self.tmp, mode)
            try:
                self.lab = next(self.running)
            except BaseException as e:
                self.failed[key] = str(e)[-2000:]
                self.close()
                raise
            self.name = key
        assert self.lab is not None
        return self.lab

    def close(self) -> None:
        if self.running is not None:
            self.running.close()  # runs lab_for's `finally`: lab down
        self.running, self.lab, self.name = None, None, None


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Labs]:
    manager = Labs(tmp_path_factory)
    try:
        yield manager
    finally:
        manager.close()


def run_case(xyz: Lab, case: str) -> None:
    path = file(xyz, f"{case}.yaml", CASES[case])
    apply(xyz, path)
    try:
        check_matrix(xyz)
    finally:
        delete(xyz, path)


def label_updates_and_policy_deletion(xyz: Lab) -> None:
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


def beta_default_deny_annotation(xyz: Lab) -> None:
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


SCENARIO_RUNS: dict[str, Callable[[Lab], None]] = {
    "label-updates-and-policy-deletion": label_updates_and_policy_deletion,
    "beta-default-deny-annotation": beta_default_deny_annotation,
}


@pytest.mark.parametrize(
    ("backend", "mode", "case"),
    [(backend, mode, case) for backend, mode in LABS for case in MODES[mode].cases],
    ids=lambda v: str(v),
)
def test_e2e(labs: Labs, backend: str, mode: str, case: str) -> None:
    xyz = labs.get(backend, mode)
    if case in SCENARIO_RUNS:
        SCENARIO_RUNS[case](xyz)
    else:
        run_case(xyz, case)
