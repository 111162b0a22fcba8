"""The typed decoder's fast path (a yes/no check, no paths, no pruning) agrees with its full walk:
whatever the fast check passes, the walk passes too, with nothing to drop or report; and the walk
reports what the real decoder does for the shapes it refuses. Hypothesis drives odd objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.lab.apiserver import schema
from stockade.lab.apiserver.typed import QUANTITY_MSG, DecodeError, _definition_check, decode

POD = schema.ROOTS[("", "v1", "Pod")]
POLICY = schema.ROOTS[("networking.k8s.io", "v1", "NetworkPolicy")]
KEYS = [
    "metadata", "name", "labels", "annotations", "spec", "status", "containers", "ports", "containerPort",
    "protocol", "resources", "limits", "cpu", "livenessProbe", "httpGet", "port", "podIP", "podIPs", "ip",
    "ingress", "from", "ipBlock", "cidr", "except", "podSelector", "matchLabels", "endPort", "bogus",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.sampled_from(["", "x", "80", "1Gi", "TCP"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=5), st.sampled_from([POD, POLICY]))
def test_the_fast_check_never_passes_what_the_walk_refuses(obj: dict[str, Any], kind: schema.Definition) -> None:
    fast = _definition_check(kind.name)(obj)
    walked = copy.deepcopy(obj)
    try:
        problems = decode(kind, walked, "v1", {id(walked): []})  # non-empty dups: the full walk
    except DecodeError:
        assert not fast, obj
        return
    if fast:
        assert problems == [] and walked == obj, obj
    else:
        assert problems, obj  # refused by the fast check: the walk found what to drop


def test_walk_messages() -> None:
    with pytest.raises(DecodeError) as e:
        decode(POD, {"spec": {"containers": [{"ports": [{"containerPort": 1.5}]}]}}, "v1")
    assert e.value.detail == (
        "json: cannot unmarshal number 1.5 into Go struct field ContainerPort.spec.containers.ports.containerPort "
        "of type int32"
    )
    with pytest.raises(DecodeError) as e:
        decode(POD, {"spec": {"containers": [{"resources": {"limits": {"cpu": "lots"}}}]}}, "v1")
    assert e.value.detail == QUANTITY_MSG
    obj = {"spec": {"containers": [{"name": "c", "livenessProbe": {"httpGet": {"port": "http", "pth": "/"}}}]}}
    assert decode(POD, obj, "v1") == ['unknown field "spec.containers[0].livenessProbe.httpGet.pth"']
    assert obj["spec"]["containers"][0]["livenessProbe"] == {"httpGet": {"port": "http"}}
    volume = {"spec": {"volumes": [{"name": "v", "emptyDir": {"medium": "Memory"}}]}}  # an open part: kept
    assert decode(POD, volume, "v1") == [] and volume["spec"]["volumes"][0]["emptyDir"] == {"medium": "Memory"}
