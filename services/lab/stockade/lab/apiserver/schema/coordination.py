"""coordination.k8s.io/v1 Lease (the brains' leader election)."""

from __future__ import annotations

from .meta import MICRO_TIME, kind
from .model import INT32, STRING, F, define

COORDINATION = "io.k8s.api.coordination.v1."

LEASE = kind(
    COORDINATION,
    "coordination.k8s.io",
    "v1",
    "Lease",
    "A lease held by one holder at a time, renewed while it lives: how replicas elect a leader.",
    F(
        "spec",
        define(
            COORDINATION + "LeaseSpec",
            "Who holds the lease, since when, and for how long.",
            F("acquireTime", MICRO_TIME, "When the current holder acquired the lease."),
            F("holderIdentity", STRING, "The current holder."),
            F("leaseDurationSeconds", INT32, "How long others wait after the last renewal before taking over."),
            F("leaseTransitions", INT32, "How many times the lease changed holders."),
            F("preferredHolder", STRING, "Who should hold the lease next (coordinated election)."),
            F("renewTime", MICRO_TIME, "When the holder last renewed the lease."),
            F("strategy", STRING, "How the holder is chosen (coordinated election)."),
        ),
        "The lease.",
    ),
)
