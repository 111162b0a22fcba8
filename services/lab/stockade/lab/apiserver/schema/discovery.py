"""discovery.k8s.io/v1 EndpointSlice (the lab's controller writes them for Services)."""

from __future__ import annotations

from .core import OBJECT_REFERENCE, PROTOCOL, PROTOCOLS
from .meta import kind
from .model import BOOL, INT32, STRING, STRING_MAP, STRINGS, F, Field, alias, atomic, define

DISCOVERY = "io.k8s.api.discovery.v1."

CONDITIONS = define(
    DISCOVERY + "EndpointConditions",
    "The state of an endpoint.",
    F("ready", BOOL, "Ready to receive traffic."),
    F("serving", BOOL, "Ready, or terminating and still serving."),
    F("terminating", BOOL, "Terminating."),
)
FOR_ZONE = define(DISCOVERY + "ForZone", "A zone an endpoint serves.", F("name", STRING, "The zone.", required=True))
FOR_NODE = define(DISCOVERY + "ForNode", "A node an endpoint serves.", F("name", STRING, "The node.", required=True))
HINTS = define(
    DISCOVERY + "EndpointHints",
    "Where an endpoint should be used (topology-aware routing).",
    atomic("forNodes", FOR_NODE, "Nodes that should use the endpoint."),
    atomic("forZones", FOR_ZONE, "Zones that should use the endpoint."),
)
ENDPOINT = define(
    DISCOVERY + "Endpoint",
    "One backend of a Service: a pod's addresses, its state and node.",
    Field("addresses", STRINGS, "The addresses (one, in practice).", required=True, list_type="set"),
    F("conditions", CONDITIONS, "The endpoint's state."),
    F("deprecatedTopology", STRING_MAP, "Deprecated topology labels."),
    F("hints", HINTS, "Routing hints."),
    F("hostname", STRING, "The endpoint's hostname."),
    F("nodeName", STRING, "The node the endpoint runs on."),
    F("targetRef", OBJECT_REFERENCE, "The pod behind the endpoint."),
    F("zone", STRING, "The endpoint's zone."),
)
ENDPOINT_PORT = define(
    DISCOVERY + "EndpointPort",
    "A port of the endpoints of a slice.",
    F("appProtocol", STRING, "The application protocol."),
    F("name", STRING, "The Service port's name."),
    F("port", INT32, "The port number."),
    F("protocol", PROTOCOL, "TCP, UDP or SCTP.", enum=PROTOCOLS),
    map_type="atomic",
)
ENDPOINT_SLICE = kind(
    DISCOVERY,
    "discovery.k8s.io",
    "v1",
    "EndpointSlice",
    "A subset of a Service's endpoints, of one address type.",
    F(
        "addressType",
        alias("v1.AddressType"),
        "IPv4, IPv6 or FQDN: the type of every address in the slice. Immutable.",
        required=True,
        enum=("FQDN", "IPv4", "IPv6"),
    ),
    atomic("endpoints", ENDPOINT, "The endpoints."),
    atomic("ports", ENDPOINT_PORT, "The ports of every endpoint."),
)
