"""core/v1 Pod. Containers, their ports, env and mounts, scheduling fields and the status are
written field by field; the deep parts the lab never reads (probes, security contexts, volume
sources, affinity ...) are open: kept as given, members not checked."""

from __future__ import annotations

from .core import CONDITION_STATUS, CORE, PROTOCOL, PROTOCOLS, RESOURCES
from .meta import INT_OR_STRING, TIME, kind
from .model import (
    BOOL,
    INT32,
    INT64,
    STRING,
    STRING_MAP,
    Definition,
    F,
    Field,
    alias,
    atomic,
    define,
    list_of,
    merged,
)


def _open(name: str, doc: str, *fields: Field) -> Definition:
    return define(CORE + name, doc + " (The lab keeps it as given.)", *fields, open=True)


HTTP_HEADER = define(
    CORE + "HTTPHeader",
    "A header of an HTTP probe.",
    F("name", STRING, "The header's name.", required=True),
    F("value", STRING, "The header's value.", required=True),
)
PROBE = define(
    CORE + "Probe",
    "How the kubelet checks a container: one of exec, httpGet, tcpSocket or grpc, with its timings.",
    F(
        "exec",
        define(CORE + "ExecAction", "A command run in the container.", atomic("command", STRING, "The command.")),
        "Run a command: success is exit status 0.",
    ),
    F("failureThreshold", INT32, "Failures in a row that make the probe fail (default 3)."),
    F(
        "grpc",
        define(
            CORE + "GRPCAction",
            "A gRPC health check.",
            F("port", INT32, "The port.", required=True),
            F("service", STRING, "The service name sent in the health check."),
        ),
        "A gRPC health check.",
    ),
    F(
        "httpGet",
        define(
            CORE + "HTTPGetAction",
            "An HTTP GET: success is a status from 200 to 399.",
            F("host", STRING, "The host to connect to; the pod's IP when empty."),
            atomic("httpHeaders", HTTP_HEADER, "Headers to send."),
            F("path", STRING, "The path."),
            F("port", INT_OR_STRING, "The port: a number or a container port's name.", required=True),
            F("scheme", alias("v1.URIScheme"), "HTTP or HTTPS.", enum=("HTTP", "HTTPS")),
        ),
        "Send an HTTP GET.",
    ),
    F("initialDelaySeconds", INT32, "Seconds after the start before the first probe."),
    F("periodSeconds", INT32, "Seconds between probes (default 10)."),
    F("successThreshold", INT32, "Successes in a row that make the probe pass again (default 1)."),
    F(
        "tcpSocket",
        define(
            CORE + "TCPSocketAction",
            "A TCP connection: success is a connection accepted.",
            F("host", STRING, "The host to connect to; the pod's IP when empty."),
            F("port", INT_OR_STRING, "The port: a number or a container port's name.", required=True),
        ),
        "Open a TCP connection.",
    ),
    F("terminationGracePeriodSeconds", INT64, "The grace period when the probe kills the container."),
    F("timeoutSeconds", INT32, "Seconds before a probe times out (default 1)."),
)
SECURITY_CONTEXT = _open("SecurityContext", "A container's privileges and user.")
ENV_VAR = define(
    CORE + "EnvVar",
    "An environment variable of a container.",
    F("name", STRING, "The variable's name.", required=True),
    F("value", STRING, "The value; $(VAR) references expand."),
    F("valueFrom", _open("EnvVarSource", "Where a variable's value comes from."), "Where the value comes from."),
)
CONTAINER_PORT = define(
    CORE + "ContainerPort",
    "A port a container listens on. Policies and Services may refer to it by name.",
    F("containerPort", INT32, "The port number, 0 < x < 65536.", required=True),
    F("hostIP", STRING, "The host IP to bind a hostPort to."),
    F("hostPort", INT32, "A port of the node forwarded to this one."),
    F("name", STRING, "An IANA service name, unique within the pod: what policies' named ports match."),
    F("protocol", PROTOCOL, 'TCP, UDP or SCTP; "TCP" when empty.', enum=PROTOCOLS),
)
VOLUME_MOUNT = define(
    CORE + "VolumeMount",
    "Where a volume appears in a container.",
    F("mountPath", STRING, "The path in the container.", required=True),
    F("mountPropagation", STRING, "None, HostToContainer or Bidirectional."),
    F("name", STRING, "The volume's name.", required=True),
    F("readOnly", BOOL, "Mounted read-only."),
    F("recursiveReadOnly", STRING, "Whether read-only applies to submounts."),
    F("subPath", STRING, "A path within the volume to mount instead of its root."),
    F("subPathExpr", STRING, "subPath with $(VAR) expansion."),
)
RESOURCE_REQUIREMENTS = define(
    CORE + "ResourceRequirements",
    "Resources a container asks for and may not exceed.",
    atomic("claims", _open("ResourceClaim", "A resource claim the container uses."), "Resource claims used."),
    F("limits", RESOURCES, "The most the container may use."),
    F("requests", RESOURCES, "What the container is scheduled with."),
)


def _container_fields() -> tuple[Field, ...]:
    return (
        atomic("args", STRING, "Arguments to the entrypoint."),
        atomic("command", STRING, "The entrypoint, instead of the image's."),
        merged("env", ENV_VAR, "Environment variables.", "name"),
        atomic("envFrom", _open("EnvFromSource", "Variables taken from a ConfigMap or Secret."), "Variables' sources."),
        F("image", STRING, "The image to run."),
        F("imagePullPolicy", alias("v1.PullPolicy"), "Always, Never or IfNotPresent."),
        F("lifecycle", _open("Lifecycle", "Hooks run after start and before stop."), "Lifecycle hooks."),
        F("livenessProbe", PROBE, "Restarts the container when it fails."),
        F("name", STRING, "The container's name, a DNS label unique within the pod.", required=True),
        merged(
            "ports",
            CONTAINER_PORT,
            "The ports the container exposes (named ports are what policies and Services refer to).",
            "containerPort",
            "containerPort",
            "protocol",
        ),
        F("readinessProbe", PROBE, "Takes the container out of Service endpoints while it fails."),
        atomic("resizePolicy", _open("ContainerResizePolicy", "How a resource is resized."), "Resize policies."),
        F("resources", RESOURCE_REQUIREMENTS, "Compute resources."),
        F("restartPolicy", STRING, "Always, for an init container that runs beside the others (a sidecar)."),
        atomic("restartPolicyRules", _open("ContainerRestartRule", "When a container restarts."), "Restart rules."),
        F("securityContext", SECURITY_CONTEXT, "Privileges and user."),
        F("startupProbe", PROBE, "Holds the other probes back until it succeeds."),
        F("stdin", BOOL, "Allocate a buffer for stdin."),
        F("stdinOnce", BOOL, "Close stdin after the first attach."),
        F("terminationMessagePath", STRING, "Where the container writes its termination message."),
        F("terminationMessagePolicy", STRING, "File or FallbackToLogsOnError."),
        F("tty", BOOL, "Allocate a TTY."),
        merged("volumeDevices", _open("VolumeDevice", "A raw block device."), "Block devices.", "devicePath"),
        merged("volumeMounts", VOLUME_MOUNT, "Volumes mounted in the container.", "mountPath"),
        F("workingDir", STRING, "The working directory."),
    )


CONTAINER = define(CORE + "Container", "A container of a pod.", *_container_fields())
EPHEMERAL_CONTAINER = define(
    CORE + "EphemeralContainer",
    "A container added to a running pod for debugging.",
    *_container_fields(),
    F("targetContainerName", STRING, "The container whose namespaces it shares."),
)
TOLERATION = define(
    CORE + "Toleration",
    "Lets a pod run on nodes with a matching taint.",
    F("effect", alias("v1.TaintEffect"), "The taint effect to match; empty matches all."),
    F("key", STRING, "The taint key; empty with Exists matches every taint."),
    F("operator", alias("v1.TolerationOperator"), "Exists or Equal (the default)."),
    F("tolerationSeconds", INT64, "How long a NoExecute taint is tolerated."),
    F("value", STRING, "The taint value, for Equal."),
)
POD_CONDITION = define(
    CORE + "PodCondition",
    "One aspect of a pod's state (PodScheduled, Initialized, ContainersReady, Ready).",
    F("lastProbeTime", TIME, "When the condition was last probed."),
    F("lastTransitionTime", TIME, "When the condition last changed status."),
    F("message", STRING, "A human-readable account of the transition."),
    F("observedGeneration", INT64, "The metadata.generation the condition was set for."),
    F("reason", STRING, "A CamelCase reason for the transition."),
    F("status", CONDITION_STATUS, "True, False or Unknown.", required=True),
    F("type", alias("v1.PodConditionType"), "The condition's type.", required=True),
)
CONTAINER_STATE = _open("ContainerState", "A container's state: waiting, running or terminated.")
CONTAINER_STATUS = define(
    CORE + "ContainerStatus",
    "A container's current state.",
    F("allocatedResources", RESOURCES, "Resources allocated to the container."),
    atomic("allocatedResourcesStatus", _open("ResourceStatus", "The health of a resource."), "Resource health."),
    F("containerID", STRING, "The runtime's id of the container."),
    F("image", STRING, "The image the container runs.", required=True),
    F("imageID", STRING, "The image's id.", required=True),
    F("lastState", CONTAINER_STATE, "The state before the last restart."),
    F("name", STRING, "The container's name.", required=True),
    F("ready", BOOL, "Whether the container passes its readiness probe.", required=True),
    F("resources", RESOURCE_REQUIREMENTS, "The resources applied."),
    F("restartCount", INT32, "How many times the container restarted.", required=True),
    F("started", BOOL, "Whether the container passed its startup probe."),
    F("state", CONTAINER_STATE, "The current state."),
    F("stopSignal", STRING, "The signal that stops the container."),
    F("user", _open("ContainerUser", "The user the container runs as."), "The user."),
    atomic("volumeMounts", _open("VolumeMountStatus", "A mount's state."), "Mounts' states."),
)
POD_IP = define(CORE + "PodIP", "An address of a pod.", F("ip", STRING, "The address.", required=True))
HOST_IP = define(CORE + "HostIP", "An address of a pod's node.", F("ip", STRING, "The address.", required=True))
NAME_REF = define(
    CORE + "LocalObjectReference",
    "Names an object in the same namespace.",
    F("name", STRING, "The object's name."),
    map_type="atomic",
)
VOLUME = define(
    CORE + "Volume",
    "A named volume containers can mount, and its source (emptyDir, configMap, secret ...).",
    F("name", STRING, "The volume's name, a DNS label unique within the pod.", required=True),
    open=True,
)


def _named(name: str, doc: str, field_name: str = "name") -> Definition:
    return define(CORE + name, doc, F(field_name, STRING, "Its name.", required=True))


POD_SPEC = define(
    CORE + "PodSpec",
    "What a pod runs and where.",
    F("activeDeadlineSeconds", INT64, "How long the pod may be active."),
    F("affinity", _open("Affinity", "Node and pod (anti-)affinity."), "Scheduling constraints."),
    F("automountServiceAccountToken", BOOL, "Whether a service account token is mounted."),
    merged("containers", CONTAINER, "The containers; at least one.", "name", required=True),
    F("dnsConfig", _open("PodDNSConfig", "DNS settings."), "DNS settings."),
    F("dnsPolicy", alias("v1.DNSPolicy"), "ClusterFirst, ClusterFirstWithHostNet, Default or None."),
    F("enableServiceLinks", BOOL, "Whether Services are injected as environment variables."),
    merged("ephemeralContainers", EPHEMERAL_CONTAINER, "Debugging containers.", "name"),
    merged(
        "hostAliases",
        define(
            CORE + "HostAlias",
            "An /etc/hosts entry.",
            atomic("hostnames", STRING, "Names for the address."),
            F("ip", STRING, "The address.", required=True),
        ),
        "Extra /etc/hosts entries.",
        "ip",
    ),
    F("hostIPC", BOOL, "Use the node's IPC namespace."),
    F("hostNetwork", BOOL, "Use the node's network namespace: the pod has the node's addresses."),
    F("hostPID", BOOL, "Use the node's PID namespace."),
    F("hostUsers", BOOL, "Use the node's user namespace."),
    F("hostname", STRING, "The pod's hostname."),
    F("hostnameOverride", STRING, "A hostname set instead of the pod's name."),
    merged("imagePullSecrets", NAME_REF, "Secrets to pull images with.", "name"),
    merged("initContainers", CONTAINER, "Containers run to completion before the others.", "name"),
    F("nodeName", STRING, "The node the pod is bound to."),
    F("nodeSelector", STRING_MAP, "Labels a node must have.", map_type="atomic"),
    F("os", _named("PodOS", "The pod's operating system."), "The pod's operating system."),
    F("overhead", RESOURCES, "Resources the runtime needs for the pod."),
    F("preemptionPolicy", alias("v1.PreemptionPolicy"), "Never or PreemptLowerPriority."),
    F("priority", INT32, "The pod's priority."),
    F("priorityClassName", STRING, "The pod's priority class."),
    atomic(
        "readinessGates",
        _named("PodReadinessGate", "A condition the pod must have to be ready.", "conditionType"),
        "Conditions the pod must have to be ready.",
    ),
    Field(
        "resourceClaims",
        list_of(
            _open(
                "PodResourceClaim", "A resource claim of the pod.", F("name", STRING, "Its name.", required=True)
            ).ref()
        ),
        "Resource claims.",
        patch="merge,retainKeys",
        key="name",
        list_type="map",
        map_keys=("name",),
    ),
    F("resources", RESOURCE_REQUIREMENTS, "Pod-level resources."),
    F("restartPolicy", alias("v1.RestartPolicy"), "Always, OnFailure or Never."),
    F("runtimeClassName", STRING, "The runtime class."),
    F("schedulerName", STRING, "The scheduler that places the pod."),
    merged("schedulingGates", _named("PodSchedulingGate", "Holds the pod back from scheduling."), "Gates.", "name"),
    F("schedulingGroup", _open("PodSchedulingGroup", "A group scheduled together."), "The scheduling group."),
    F("securityContext", _open("PodSecurityContext", "Pod-wide privileges and user."), "Pod-wide security."),
    F("serviceAccount", STRING, "Deprecated: use serviceAccountName."),
    F("serviceAccountName", STRING, "The service account the pod runs as."),
    F("setHostnameAsFQDN", BOOL, "Set the hostname to the FQDN."),
    F("shareProcessNamespace", BOOL, "Containers share one PID namespace."),
    F("subdomain", STRING, "The pod's subdomain."),
    F("terminationGracePeriodSeconds", INT64, "Seconds between SIGTERM and SIGKILL."),
    atomic("tolerations", TOLERATION, "Taints the pod tolerates."),
    Field(
        "topologySpreadConstraints",
        list_of(_open("TopologySpreadConstraint", "How pods spread over a topology.").ref()),
        "How the pods spread over zones and nodes.",
        patch="merge",
        key="topologyKey",
        list_type="map",
        map_keys=("topologyKey", "whenUnsatisfiable"),
    ),
    Field(
        "volumes",
        list_of(VOLUME.ref()),
        "Volumes containers can mount.",
        patch="merge,retainKeys",
        key="name",
    ),
)
POD_STATUS = define(
    CORE + "PodStatus",
    "A pod's current state, as its node reports it.",
    F("allocatedResources", RESOURCES, "Resources allocated to the pod."),
    merged("conditions", POD_CONDITION, "The pod's conditions.", "type"),
    atomic("containerStatuses", CONTAINER_STATUS, "The containers' states."),
    atomic("ephemeralContainerStatuses", CONTAINER_STATUS, "The debugging containers' states."),
    F(
        "extendedResourceClaimStatus",
        _open("PodExtendedResourceClaimStatus", "Extended resources' claims."),
        "Extended resources' claims.",
    ),
    F("hostIP", STRING, "The node's primary address."),
    Field("hostIPs", list_of(HOST_IP.ref()), "The node's addresses.", patch="merge", key="ip", list_type="atomic"),
    atomic("initContainerStatuses", CONTAINER_STATUS, "The init containers' states."),
    F("message", STRING, "Why the pod is in this state, for humans."),
    atomic(
        "nodeAllocatableResourceClaimStatuses",
        _open("NodeAllocatableResourceClaimStatus", "A node-allocatable resource's claim."),
        "Node-allocatable resources' claims.",
    ),
    F("nominatedNodeName", STRING, "The node the scheduler preempted pods on for this one."),
    F("observedGeneration", INT64, "The metadata.generation the status was set for."),
    F(
        "phase",
        alias("v1.PodPhase"),
        "Pending, Running, Succeeded, Failed or Unknown.",
        enum=("Failed", "Pending", "Running", "Succeeded", "Unknown"),
    ),
    F("podIP", STRING, "The pod's primary address: what policies and Services see."),
    merged("podIPs", POD_IP, "The pod's addresses, at most one per family; the first is podIP.", "ip"),
    F("qosClass", alias("v1.PodQOSClass"), "Guaranteed, Burstable or BestEffort."),
    F("reason", STRING, "A CamelCase reason for the state (Evicted ...)."),
    F("resize", STRING, "Deprecated: the state of a resize."),
    atomic(
        "resourceClaimStatuses",
        _open("PodResourceClaimStatus", "A resource claim's state."),
        "Resource claims' states.",
    ),
    F("resources", RESOURCE_REQUIREMENTS, "Pod-level resources applied."),
    F("startTime", TIME, "When the kubelet acknowledged the pod."),
)
POD = kind(
    CORE,
    "",
    "v1",
    "Pod",
    "Containers run together on a node with one network identity: what policies select and isolate.",
    F("spec", POD_SPEC, "What the pod runs."),
    F("status", POD_STATUS, "The pod's current state. Read-only."),
)
