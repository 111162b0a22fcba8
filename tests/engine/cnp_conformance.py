"""The upstream ClusterNetworkPolicy conformance suite as data (data/cnp_conformance.yaml): loading
it and replaying a test's steps on plain Kubernetes objects.

A `Replay` holds one test's cluster (the suite's base objects plus the test's manifests) and
applies its changes as the Go code makes them; each probe then states the verdict upstream
expects for the objects at that point. See the data file's header for the format.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).parent / "data" / "cnp_conformance.yaml"
Obj = dict[str, Any]
_STEP = re.compile(r"([A-Za-z]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Probe:
    test: str
    subtest: str
    src: str  # "namespace/pod"
    dst: str  # "namespace/pod" whose status.podIP is dialled
    protocol: str
    port: int
    connect: bool

    def __str__(self) -> str:
        verdict = "connects" if self.connect else "times out"
        return f"{self.test} / {self.subtest}: {self.src} -> {self.dst} {self.protocol}/{self.port} {verdict}"


def load() -> dict[str, Any]:
    with DATA.open() as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


def _meta_key(obj: Obj) -> tuple[str, str, str]:
    md = obj["metadata"]
    return obj["kind"], md.get("namespace", ""), md["name"]


class Replay:
    """One conformance test's objects, changed step by step."""

    def __init__(self, data: dict[str, Any], test: dict[str, Any]) -> None:
        self.test = test
        objects = copy.deepcopy(data["cluster"])
        for path in test["manifests"]:
            objects += copy.deepcopy(data["manifests"][path])
        self.objects: list[Obj] = objects

    def kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind: str, name: str, namespace: str = "") -> Obj:
        return next(o for o in self.objects if _meta_key(o) == (kind, namespace, name))

    def pod(self, key: str) -> Obj:
        namespace, name = key.split("/")
        return self.find("Pod", name, namespace)

    def apply(self, step: dict[str, Any]) -> None:
        """One change of the Go code (swap, set, prepend, labelNamespace, delete)."""
        (op, args), *_ = step.items()
        if op == "labelNamespace":
            ns = self.find("Namespace", args["namespace"])
            # the API server keeps the name label whatever the patch says
            ns["metadata"]["labels"] = {**args["labels"], "kubernetes.io/metadata.name": args["namespace"]}
        elif op == "delete":
            self.objects.remove(self.find(args["kind"], args["name"], args.get("namespace", "")))
        else:
            cnp = self.find("ClusterNetworkPolicy", args["policy"])
            if op == "swap":
                rules = cnp["spec"][args["direction"]]
                i, j = args["indexes"]
                rules[i], rules[j] = rules[j], rules[i]
            elif op == "prepend":
                cnp["spec"][args["direction"]] = copy.deepcopy(args["rules"]) + cnp["spec"][args["direction"]]
            elif op == "set":
                *parents, last = [m.group(1) or int(m.group(2)) for m in _STEP.finditer(args["path"])]
                target: Any = cnp
                for part in parents:
                    target = target[part]
                target[last] = copy.deepcopy(args["value"])
            else:
                raise ValueError(f"unknown step {op!r}")

    def run(self) -> Iterator[Probe]:
        """Apply every change in order, yielding each probe when its turn comes (the objects
        then are what upstream probes against)."""
        for sub in self.test["subtests"]:
            for step in sub["steps"]:
                if "from" in step:
                    yield Probe(
                        self.test["name"],
                        sub["name"],
                        step["from"],
                        step["to"],
                        step["protocol"],
                        step["port"],
                        step["connect"],
                    )
                else:
                    self.apply(step)
