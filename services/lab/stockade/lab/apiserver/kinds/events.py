"""Events (core v1): the checks the real server makes on them, and ``kubectl get events`` columns.

As ``legacyValidateEvent`` does for the core API: an Event about a namespaced object lives in that
object's namespace; one about a cluster-scoped object in ``default`` (or no namespace). With
``eventTime`` set (the newer recorders) the reporting fields, action and reason are required, and
the lengths are bounded.
"""

from __future__ import annotations

from ..fielderrors import FieldError, InvalidError, invalid, required
from .base import Cell, Column, KindBehaviour, Obj, since

REASON_LIMIT = 128
ACTION_LIMIT = 128
REPORTING_INSTANCE_LIMIT = 128
NOTE_LIMIT = 1024  # message, for Events with eventTime


def _text(obj: Obj, key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def check_event(obj: Obj) -> list[FieldError]:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    involved = obj.get("involvedObject")
    if not isinstance(involved, dict):
        involved = {}
    inv_ns = involved.get("namespace") or ""
    errors: list[FieldError] = []
    if not obj.get("eventTime"):
        if (inv_ns and namespace != inv_ns) or (not inv_ns and namespace not in ("", "default")):
            errors.append(invalid("involvedObject.namespace", inv_ns, "does not match event.namespace"))
        return errors
    if not inv_ns and namespace not in ("default", "kube-system"):
        errors.append(invalid("involvedObject.namespace", inv_ns, "does not match event.namespace"))
    if not _text(obj, "reportingComponent"):
        errors.append(required("reportingComponent"))
    if not _text(obj, "reportingInstance"):
        errors.append(required("reportingInstance"))
    elif len(_text(obj, "reportingInstance")) > REPORTING_INSTANCE_LIMIT:
        errors.append(invalid("reportingInstance", "", f"can have at most {REPORTING_INSTANCE_LIMIT} characters"))
    for key, limit in (("action", ACTION_LIMIT), ("reason", REASON_LIMIT)):
        if not _text(obj, key):
            errors.append(required(key))
        elif len(_text(obj, key)) > limit:
            errors.append(invalid(key, "", f"can have at most {limit} characters"))
    if len(_text(obj, "message")) > NOTE_LIMIT:
        errors.append(invalid("message", "", f"can have at most {NOTE_LIMIT} characters"))
    return errors


class EventBehaviour(KindBehaviour):
    def _check(self, obj: Obj) -> None:
        errors = check_event(obj)
        if errors:
            raise InvalidError("Event", obj["metadata"]["name"], errors)

    def on_create(self, obj: Obj) -> None:
        self._check(obj)

    def on_update(self, obj: Obj, old: Obj) -> None:
        self._check(obj)

    def columns(self) -> list[Column]:
        return [
            ("Last Seen", "string", "Time when this Event was last observed.", 0),
            ("Type", "string", "Type of this event (Normal, Warning).", 0),
            ("Reason", "string", "A short, machine understandable string for the transition.", 0),
            ("Object", "string", "The object this Event is about.", 0),
            ("Subobject", "string", "The part of the object the Event is about (involvedObject.fieldPath).", 1),
            ("Source", "string", "The component reporting this event.", 1),
            ("Message", "string", "A human-readable description of the status of this operation.", 0),
            ("First Seen", "string", "Time when this Event was first observed.", 1),
            ("Count", "string", "The number of times this event has occurred.", 1),
            ("Name", "string", "Name must be unique within a namespace.", 1),
        ]

    def cells(self, obj: Obj) -> list[Cell]:
        """As the real printer (``printEvent``), wide: the server prints every column."""
        involved = obj.get("involvedObject") or {}
        first = since(obj.get("firstTimestamp")) if obj.get("firstTimestamp") else since(obj.get("eventTime"))
        last = since(obj.get("lastTimestamp")) if obj.get("lastTimestamp") else first
        count = obj.get("count") or 0
        series = obj.get("series")
        if isinstance(series, dict):
            last, count = since(series.get("lastObservedTime")), series.get("count") or 0
        elif not count:
            count = 1  # singleton events of the newer API carry no count
        kind, name = str(involved.get("kind") or "").lower(), involved.get("name") or ""
        source = obj.get("source") or {}
        component = source.get("component") or _text(obj, "reportingComponent")
        instance = source.get("host") or _text(obj, "reportingInstance")
        return [
            last,
            _text(obj, "type"),
            _text(obj, "reason"),
            f"{kind}/{name}" if name else kind,
            str(involved.get("fieldPath") or ""),
            f"{component}, {instance}" if instance else component,
            _text(obj, "message").strip(),
            first,
            int(count),
            obj["metadata"]["name"],
        ]
