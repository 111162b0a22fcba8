"""core/v1 kinds but Pod (pods.py): Namespace, Node, Service, Event, and what they share."""

from __future__ import annotations

from .meta import CONDITION, INT_OR_STRING, MICRO_TIME, QUANTITY, TIME, kind
from .model import (
    BOOL,
    INT32,
    INT64,
    STRING,
    STRING_MAP,
    STRINGS,
    Definition,
    F,
    Field,
    alias,
    atomic,
    define,
    list_of,
    map_of,
    merged,
)

CORE = "io.k8s.api.core.v1."
PROTOCOLS = ("SCTP", "TCP", "UDP")
PROTOCOL = alias("v1.Protocol")
CONDITION_STATUS = alias("v1.ConditionStatus")
RESOURCES = map_of(QUANTITY.ref())


def _open(name: str, doc: str, *fields: Field) -> Definition:
    return define(CORE + name, doc + " (The lab keeps it as given.)", *fields, open=True)


OBJECT_REFERENCE = define(
    CORE + "ObjectReference",
    "Refers to an object, or to a part of one (fieldPath).",
    F("apiVersion", STRING, "API version of the referent."),
    F("fieldPath", STRING, "A part of the referent, such as spec.containers{name}."),
    F("kind", STRING, "Kind of the referent."),
    F("name", STRING, "Name of the referent."),
    F("namespace", STRING, "Namespace of the referent."),
    F("resourceVersion", STRING, "The referent's resourceVersion this reference was made at."),
    F("uid", STRING, "UID of the referent."),
    map_type="atomic",
)

# -- Namespace ------------------------------------------------------------------------------------

NAMESPACE_CONDITION = define(
    CORE + "NamespaceCondition",
    "One aspect of a namespace's state.",
    F("lastTransitionTime", TIME, "When the condition last changed status."),
    F("message", STRING, "A human-readable account of the transition."),
    F("reason", STRING, "A CamelCase reason for the transition."),
    F("status", CONDITION_STATUS, "True, False or Unknown.", required=True),
    F("type", alias("v1.NamespaceConditionType"), "The condition's type.", required=True),
)
NAMESPACE = kind(
    CORE,
    "",
    "v1",
    "Namespace",
    "A scope for names: namespaced objects live in one, and policies select namespaces by their labels.",
    F(
        "spec",
        define(
            CORE + "NamespaceSpec",
            "What a namespace wants.",
            atomic("finalizers", alias("v1.FinalizerName"), "Must be empty before the namespace is removed."),
        ),
        "The namespace's desired state.",
    ),
    F(
        "status",
        define(
            CORE + "NamespaceStatus",
            "A namespace's current state.",
            merged("conditions", NAMESPACE_CONDITION, "The namespace's conditions.", "type"),
            F("phase", alias("v1.NamespacePhase"), "Active or Terminating.", enum=("Active", "Terminating")),
        ),
        "The namespace's current state. Read-only.",
    ),
)

# -- Node -----------------------------------------------------------------------------------------

TAINT = define(
    CORE + "Taint",
    "Repels pods that do not tolerate it from a node.",
    F(
        "effect",
        alias("v1.TaintEffect"),
        "What happens to pods that do not tolerate the taint.",
        required=True,
        enum=("NoExecute", "NoSchedule", "PreferNoSchedule"),
    ),
    F("key", STRING, "The taint's key.", required=True),
    F("timeAdded", TIME, "When a NoExecute taint was added."),
    F("value", STRING, "The taint's value."),
)
NODE_ADDRESS = define(
    CORE + "NodeAddress",
    "One of a node's addresses.",
    F("address", STRING, "The address.", required=True),
    F(
        "type",
        alias("v1.NodeAddressType"),
        "Hostname, InternalIP, ExternalIP, InternalDNS or ExternalDNS.",
        required=True,
    ),
)
NODE_CONDITION = define(
    CORE + "NodeCondition",
    "One aspect of a node's state (Ready, MemoryPressure ...).",
    F("lastHeartbeatTime", TIME, "When the condition was last reported."),
    F("lastTransitionTime", TIME, "When the condition last changed status."),
    F("message", STRING, "A human-readable account of the transition."),
    F("reason", STRING, "A CamelCase reason for the transition."),
    F("status", CONDITION_STATUS, "True, False or Unknown.", required=True),
    F("type", alias("v1.NodeConditionType"), "The condition's type.", required=True),
)
NODE_SYSTEM_INFO = define(
    CORE + "NodeSystemInfo",
    "What runs on a node: its kernel, OS image, container runtime and kubelet.",
    *(
        F(name, STRING, doc, required=True)
        for name, doc in (
            ("architecture", "The CPU architecture."),
            ("bootID", "Changes at every boot."),
            ("containerRuntimeVersion", "The container runtime and its version (containerd://1.7.0)."),
            ("kernelVersion", "The kernel's release (uname -r)."),
            ("kubeProxyVersion", "Deprecated: the kube-proxy version."),
            ("kubeletVersion", "The kubelet's version."),
            ("machineID", "The machine id (/etc/machine-id)."),
            ("operatingSystem", "The operating system (linux)."),
            ("osImage", "The OS image (/etc/os-release PRETTY_NAME)."),
        )
    ),
    F("swap", _open("NodeSwapStatus", "Swap on the node."), "Swap on the node."),
    F("systemUUID", STRING, "The system UUID.", required=True),
)
CONTAINER_IMAGE = define(
    CORE + "ContainerImage",
    "An image present on a node.",
    atomic("names", STRING, "The image's names."),
    F("sizeBytes", INT64, "The image's size."),
)
NODE = kind(
    CORE,
    "",
    "v1",
    "Node",
    "A machine pods run on; the agent of each node enforces the policies for its pods.",
    F(
        "spec",
        define(
            CORE + "NodeSpec",
            "A node's configuration.",
            F("configSource", _open("NodeConfigSource", "Deprecated dynamic kubelet configuration."), "Deprecated."),
            F("externalID", STRING, "Deprecated."),
            F("podCIDR", STRING, "The pod range given to the node (its first one)."),
            Field(
                "podCIDRs", STRINGS, "The pod ranges given to the node, one per family.", patch="merge", list_type="set"
            ),
            F("providerID", STRING, "The node's id at its cloud provider."),
            atomic("taints", TAINT, "The node's taints."),
            F("unschedulable", BOOL, "If true, no new pod is scheduled on the node (cordoned)."),
        ),
        "The node's configuration.",
    ),
    F(
        "status",
        define(
            CORE + "NodeStatus",
            "A node's current state, as its kubelet reports it.",
            merged("addresses", NODE_ADDRESS, "The node's addresses.", "type"),
            F("allocatable", RESOURCES, "The resources pods may use."),
            F("capacity", RESOURCES, "The node's resources."),
            merged("conditions", NODE_CONDITION, "The node's conditions.", "type"),
            F("config", _open("NodeConfigStatus", "Deprecated dynamic kubelet configuration."), "Deprecated."),
            F("daemonEndpoints", _open("NodeDaemonEndpoints", "The kubelet's port."), "The kubelet's port."),
            F("declaredFeatures", STRINGS, "Features the node declares."),
            F("features", _open("NodeFeatures", "Features the node supports."), "Features the node supports."),
            atomic("images", CONTAINER_IMAGE, "Images on the node."),
            F("nodeInfo", NODE_SYSTEM_INFO, "What runs on the node."),
            F("phase", alias("v1.NodePhase"), "Deprecated.", enum=("Pending", "Running", "Terminated")),
            atomic(
                "runtimeHandlers",
                _open("NodeRuntimeHandler", "A runtime handler of the node."),
                "The runtime handlers.",
            ),
            atomic(
                "volumesAttached",
                define(
                    CORE + "AttachedVolume",
                    "A volume attached to the node.",
                    F("devicePath", STRING, "Where the volume is.", required=True),
                    F("name", alias("v1.UniqueVolumeName"), "The volume's name.", required=True),
                ),
                "Volumes attached to the node.",
            ),
            atomic("volumesInUse", alias("v1.UniqueVolumeName"), "Volumes in use."),
        ),
        "The node's current state. Read-only.",
    ),
)

# -- Service --------------------------------------------------------------------------------------

SERVICE_PORT = define(
    CORE + "ServicePort",
    "A port a Service exposes and the port of its pods it forwards to.",
    F("appProtocol", STRING, "The application protocol (a hint to implementations)."),
    F("name", STRING, "A DNS label; required when the Service has more than one port."),
    F("nodePort", INT32, "The port on every node (NodePort and LoadBalancer Services); allocated when empty."),
    F("port", INT32, "The port the Service exposes.", required=True),
    F("protocol", PROTOCOL, 'TCP, UDP or SCTP; "TCP" when empty.', enum=PROTOCOLS),
    F("targetPort", INT_OR_STRING, "The pods' port: a number, or the name of a container port; port when empty."),
)
PORT_STATUS = define(
    CORE + "PortStatus",
    "The state of one port of a load balancer.",
    F("error", STRING, "Why the port failed, if it did."),
    F("port", INT32, "The port.", required=True),
    F("protocol", PROTOCOL, "The protocol.", required=True, enum=PROTOCOLS),
)
LOAD_BALANCER_INGRESS = define(
    CORE + "LoadBalancerIngress",
    "An address a load balancer receives traffic on.",
    F("hostname", STRING, "A DNS name."),
    F("ip", STRING, "An IP address."),
    F("ipMode", STRING, "VIP or Proxy: how traffic reaches the address."),
    atomic("ports", PORT_STATUS, "The state of each port."),
)
LOAD_BALANCER_STATUS = define(
    CORE + "LoadBalancerStatus",
    "A load balancer's state.",
    atomic("ingress", LOAD_BALANCER_INGRESS, "The addresses of the load balancer."),
)
SERVICE = kind(
    CORE,
    "",
    "v1",
    "Service",
    "A stable address (a cluster IP, node ports) for a set of pods chosen by labels.",
    F(
        "spec",
        define(
            CORE + "ServiceSpec",
            "What a Service exposes, and how.",
            F("allocateLoadBalancerNodePorts", BOOL, "Whether a LoadBalancer Service gets node ports (default true)."),
            F("clusterIP", STRING, 'The Service\'s IP: allocated when empty, "None" for a headless Service.'),
            atomic("clusterIPs", STRING, "The Service's IPs, one per family; the first is clusterIP."),
            atomic("externalIPs", STRING, "Addresses outside the cluster that reach the Service."),
            F("externalName", STRING, "The DNS name an ExternalName Service is an alias of."),
            F(
                "externalTrafficPolicy",
                alias("v1.ServiceExternalTrafficPolicy"),
                "Cluster (any node's endpoints, client IP masqueraded) or Local (this node's, client IP kept).",
                enum=("Cluster", "Local"),
            ),
            F("healthCheckNodePort", INT32, "The health check port of a Local LoadBalancer Service."),
            F(
                "internalTrafficPolicy",
                alias("v1.ServiceInternalTrafficPolicy"),
                "Cluster or Local, for traffic from inside the cluster.",
                enum=("Cluster", "Local"),
            ),
            atomic("ipFamilies", alias("v1.IPFamily"), "IPv4 and/or IPv6, in the order of clusterIPs."),
            F(
                "ipFamilyPolicy",
                alias("v1.IPFamilyPolicy"),
                "SingleStack, PreferDualStack or RequireDualStack.",
                enum=("PreferDualStack", "RequireDualStack", "SingleStack"),
            ),
            F("loadBalancerClass", STRING, "Which load balancer implementation serves the Service."),
            F("loadBalancerIP", STRING, "Deprecated: a requested load balancer IP."),
            atomic("loadBalancerSourceRanges", STRING, "Client ranges a load balancer admits."),
            Field(
                "ports",
                list_of(SERVICE_PORT.ref()),
                "The ports the Service exposes.",
                patch="merge",
                key="port",
                list_type="map",
                map_keys=("port", "protocol"),
            ),
            F("publishNotReadyAddresses", BOOL, "Whether endpoints include pods that are not ready."),
            F("selector", STRING_MAP, "The labels of the pods the Service forwards to.", map_type="atomic"),
            F(
                "sessionAffinity",
                alias("v1.ServiceAffinity"),
                "None or ClientIP (a client sticks to one pod).",
                enum=("ClientIP", "None"),
            ),
            F(
                "sessionAffinityConfig",
                _open("SessionAffinityConfig", "Session affinity settings."),
                "Session affinity settings.",
            ),
            F("trafficDistribution", STRING, "A preference for how traffic is spread over endpoints."),
            F(
                "type",
                alias("v1.ServiceType"),
                "ClusterIP, NodePort, LoadBalancer or ExternalName.",
                enum=("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"),
            ),
        ),
        "The Service's desired state.",
    ),
    F(
        "status",
        define(
            CORE + "ServiceStatus",
            "A Service's current state.",
            merged("conditions", CONDITION, "The Service's conditions.", "type"),
            F("loadBalancer", LOAD_BALANCER_STATUS, "The load balancer, if there is one."),
        ),
        "The Service's current state. Read-only.",
    ),
)

# -- Event ----------------------------------------------------------------------------------------

EVENT = kind(
    CORE,
    "",
    "v1",
    "Event",
    "A report of something that happened to an object (the brain reports refused policies this way).",
    F("action", STRING, "What was done, or failed, about the object."),
    F("count", INT32, "How many times the event has occurred."),
    F("eventTime", MICRO_TIME, "When the event was first observed (newer recorders)."),
    F("firstTimestamp", TIME, "When the event was first recorded."),
    F("involvedObject", OBJECT_REFERENCE, "The object the event is about.", required=True),
    F("lastTimestamp", TIME, "When the event was last recorded."),
    F("message", STRING, "What happened, for humans."),
    F("reason", STRING, "A short CamelCase reason."),
    F("related", OBJECT_REFERENCE, "A second object the event involves."),
    F("reportingComponent", STRING, "The controller that emitted the event."),
    F("reportingInstance", STRING, "Which instance of that controller."),
    F(
        "series",
        define(
            CORE + "EventSeries",
            "A recurring event.",
            F("count", INT32, "How many times it has occurred."),
            F("lastObservedTime", MICRO_TIME, "When it last occurred."),
        ),
        "The series, for an event that recurs.",
    ),
    F(
        "source",
        define(
            CORE + "EventSource",
            "Who reported an event.",
            F("component", STRING, "The component."),
            F("host", STRING, "The node it runs on."),
        ),
        "The component that reported the event.",
    ),
    F("type", STRING, "Normal or Warning."),
)
