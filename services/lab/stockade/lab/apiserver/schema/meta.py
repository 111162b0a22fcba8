"""apimachinery's meta/v1 types (ObjectMeta, LabelSelector, Status, DeleteOptions ...) and the
named scalars (Time, Quantity, IntOrString)."""

from __future__ import annotations

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
    atomic,
    define,
    list_of,
    merged,
    scalar,
)

META = "io.k8s.apimachinery.pkg.apis.meta.v1."

TIME = scalar(
    META + "Time",
    "A point in time, serialised as RFC 3339 (seconds precision).",
    {"type": "string", "format": "date-time"},
    "time",
)
MICRO_TIME = scalar(
    META + "MicroTime",
    "A point in time with microseconds, serialised as RFC 3339.",
    {"type": "string", "format": "date-time"},
    "time",
)
QUANTITY = scalar(
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "A fixed-point number with an optional suffix (100m, 1Gi, 2e3), as a string or a number.",
    {"oneOf": [{"type": "string"}, {"type": "number"}]},
    "quantity",
)
INT_OR_STRING = scalar(
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    "An int32 or a string: a port number or a port name.",
    {"format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]},
    "intstr",
)
FIELDS_V1 = scalar(
    META + "FieldsV1", "The set of fields a manager owns, as a trie (server-side apply).", {"type": "object"}, "any"
)
PATCH = scalar(
    META + "Patch", "The body of a PATCH request: its media type says how it applies.", {"type": "object"}, "any"
)

OWNER_REFERENCE = define(
    META + "OwnerReference",
    "Names the object that owns this one; the garbage collector deletes an object its owners outlive.",
    F("apiVersion", STRING, "API version of the owner.", required=True),
    F("blockOwnerDeletion", BOOL, "If true, the owner cannot be deleted in the foreground before this object."),
    F("controller", BOOL, "If true, this owner is the managing controller."),
    F("kind", STRING, "Kind of the owner.", required=True),
    F("name", STRING, "Name of the owner.", required=True),
    F("uid", STRING, "UID of the owner.", required=True),
    map_type="atomic",
)
MANAGED_FIELDS_ENTRY = define(
    META + "ManagedFieldsEntry",
    "A workflow (manager) and the fields it set, as server-side apply tracks them.",
    F("apiVersion", STRING, "The version of the fields' schema."),
    F("fieldsType", STRING, 'The format of fieldsV1: always "FieldsV1".'),
    F("fieldsV1", FIELDS_V1, "The fields this manager owns."),
    F("manager", STRING, "The manager's identifier."),
    F("operation", STRING, "Apply or Update: the kind of request that set the fields."),
    F("subresource", STRING, "The subresource the request was sent to, if any."),
    F("time", TIME, "When the fields were last changed."),
)
OBJECT_META = define(
    META + "ObjectMeta",
    "Metadata every persisted object has: its name, namespace, labels, annotations and versions.",
    F("annotations", STRING_MAP, "Unstructured key/value pairs for tools; not used to select objects."),
    F("creationTimestamp", TIME, "When the server created the object. Read-only."),
    F("deletionGracePeriodSeconds", INT64, "Seconds allowed for a graceful deletion. Read-only."),
    F("deletionTimestamp", TIME, "When the object will be (or was) deleted. Read-only."),
    F(
        "finalizers",
        STRINGS,
        "Must be empty before the object is removed from the store.",
        patch="merge",
        list_type="set",
    ),
    F("generateName", STRING, "A prefix the server completes into a unique name when name is empty."),
    F("generation", INT64, "A sequence number of the desired state, raised on every spec change. Read-only."),
    F("labels", STRING_MAP, "Key/value pairs that selectors match: how Services and policies find objects."),
    atomic("managedFields", MANAGED_FIELDS_ENTRY, "Which manager owns which fields (server-side apply)."),
    F("name", STRING, "Unique within a namespace; required when creating, unless generateName is set."),
    F("namespace", STRING, 'The namespace of a namespaced object; empty means "default".'),
    merged(
        "ownerReferences",
        OWNER_REFERENCE,
        "Objects this one depends on; at most one of them is the managing controller.",
        "uid",
    ),
    F("resourceVersion", STRING, "An opaque version, for optimistic concurrency and watches. Read-only."),
    F("selfLink", STRING, "Deprecated and never set."),
    F("uid", STRING, "Unique in time and space; set by the server. Read-only."),
)
LIST_META = define(
    META + "ListMeta",
    "Metadata of a list: its version and the token to fetch the next page.",
    F("continue", STRING, "Set when the list is paged: pass it back to get the next page."),
    F("remainingItemCount", INT64, "How many items the pages after this one hold."),
    F("resourceVersion", STRING, "The version of the list: watch from here to follow changes."),
    F("selfLink", STRING, "Deprecated and never set."),
    F(
        "shardInfo",
        define(META + "ShardInfo", "Which shard of a sharded list this is. (The lab keeps it as given.)", open=True),
        "The shard of a sharded list.",
    ),
)
LABEL_SELECTOR_REQUIREMENT = define(
    META + "LabelSelectorRequirement",
    "A key, an operator and values: one condition of a label selector.",
    Field("key", STRING, "The label key the condition applies to.", required=True, patch="merge", key="key"),
    F("operator", STRING, "In, NotIn, Exists or DoesNotExist.", required=True),
    atomic("values", STRING, "Values for In and NotIn (not empty); empty for Exists and DoesNotExist."),
)
LABEL_SELECTOR = define(
    META + "LabelSelector",
    "Selects objects by their labels; the conditions are ANDed. An empty selector selects everything.",
    atomic("matchExpressions", LABEL_SELECTOR_REQUIREMENT, "Conditions on labels."),
    F("matchLabels", STRING_MAP, "Labels that must be present with these values (each an In condition)."),
    map_type="atomic",
)
CONDITION = define(
    META + "Condition",
    "One aspect of an object's current state.",
    F("lastTransitionTime", TIME, "When the condition last changed status.", required=True),
    F("message", STRING, "A human-readable account of the transition.", required=True),
    F("observedGeneration", INT64, "The metadata.generation the condition was set for."),
    F("reason", STRING, "A CamelCase reason for the last transition.", required=True),
    F("status", STRING, "True, False or Unknown.", required=True, enum=("False", "True", "Unknown")),
    F("type", STRING, "The condition's type, in CamelCase.", required=True),
)
STATUS_CAUSE = define(
    META + "StatusCause",
    "One cause of an error: a field and what is wrong with it.",
    F("field", STRING, "The field at fault, as a path (spec.ports[0].port)."),
    F("message", STRING, "What is wrong, for humans."),
    F("reason", STRING, "A machine-readable cause (FieldValueInvalid ...)."),
)
STATUS_DETAILS = define(
    META + "StatusDetails",
    "More about an error: the object and the causes.",
    atomic("causes", STATUS_CAUSE, "The causes, one per field at fault."),
    F("group", STRING, "The group of the object."),
    F("kind", STRING, "The kind of the object."),
    F("name", STRING, "The name of the object."),
    F("retryAfterSeconds", INT32, "How long a client should wait before retrying."),
    F("uid", STRING, "The UID of the object."),
)
STATUS = define(
    META + "Status",
    "The result of a call that returns no object, and every error.",
    F("apiVersion", STRING, "Always v1."),
    F("code", INT32, "The HTTP status code."),
    F("details", STATUS_DETAILS, "More about the error."),
    F("kind", STRING, "Always Status."),
    F("message", STRING, "What happened, for humans."),
    F("metadata", LIST_META, "Standard list metadata."),
    F("reason", STRING, "A machine-readable reason (NotFound, Invalid, AlreadyExists ...)."),
    F("status", STRING, "Success or Failure."),
    gvk=(("", "v1", "Status"),),
)
PRECONDITIONS = define(
    META + "Preconditions",
    "What must hold for a delete to proceed.",
    F("resourceVersion", STRING, "The object's resourceVersion must be this."),
    F("uid", STRING, "The object's uid must be this."),
)


def delete_options(group_versions: list[tuple[str, str]]) -> None:
    """DeleteOptions, served in every group-version (as the real server registers it)."""
    define(
        META + "DeleteOptions",
        "Options of a delete: dry run, grace period, preconditions, propagation.",
        F("apiVersion", STRING, "The API version."),
        atomic("dryRun", STRING, 'All: validate and answer, store nothing. The only value is "All".'),
        F("gracePeriodSeconds", INT64, "Seconds before the object is deleted; 0 deletes at once."),
        F("ignoreStoreReadErrorWithClusterBreakingPotential", BOOL, "Delete an object that cannot be read."),
        F("kind", STRING, "Always DeleteOptions."),
        F("orphanDependents", BOOL, "Deprecated: use propagationPolicy."),
        F("preconditions", PRECONDITIONS, "Must hold, or the delete fails with 409."),
        F("propagationPolicy", STRING, "Orphan, Background or Foreground: what happens to dependents."),
        gvk=tuple((g, v, "DeleteOptions") for g, v in group_versions),
    )


def _api_version_field() -> Field:
    return Field("apiVersion", STRING, "The versioned schema of this object (group/version, or v1 for the core group).")


def _kind_field() -> Field:
    return Field("kind", STRING, "The REST resource this object represents, in CamelCase.")


def kind(
    package: str, group: str, version: str, name: str, doc: str, *fields: Field, listed: bool = True, open: bool = False
) -> Definition:
    """A served kind: apiVersion, kind and metadata, then its own fields; and its List type.
    ``open``: members beyond the fields declared are kept, unchecked."""
    root = define(
        package + name,
        doc,
        _api_version_field(),
        _kind_field(),
        F("metadata", OBJECT_META, "Standard object metadata.", **({"required": True} if name == "Event" else {})),
        *fields,
        gvk=((group, version, name),),
        open=open,
    )
    if not listed:
        return root
    define(
        package + name + "List",
        f"A list of {name} objects.",
        _api_version_field(),
        Field("items", list_of(root.ref()), f"The {name} objects.", required=True),
        _kind_field(),
        F("metadata", LIST_META, "Standard list metadata."),
        gvk=((group, version, name + "List"),),
    )
    return root
