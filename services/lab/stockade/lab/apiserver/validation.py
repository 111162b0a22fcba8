"""Metadata validation, as the real API server's ``ValidateObjectMeta`` does it (422 Invalid).

Names (a DNS-1123 label for namespaces, a DNS-1035 label for Services, a DNS-1123 subdomain for
the rest), label keys and values, annotation keys and their total size. The messages are
apimachinery's (``IsQualifiedName``, ``IsValidLabelValue``, ``IsDNS1123Subdomain`` ...), so a
client that shows them (``kubectl``) shows the real text; one ``details.causes[]`` entry each.
"""

from __future__ import annotations

import re
from typing import Any

from .fielderrors import FieldError, InvalidError, invalid, too_long
from .resources import STORAGE_VIEW

_QUALIFIED_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED = re.compile(f"^{_QUALIFIED_FMT}\\Z")
_QUALIFIED_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
)
_LABEL_VALUE_FMT = f"({_QUALIFIED_FMT})?"
_LABEL_VALUE = re.compile(f"^{_LABEL_VALUE_FMT}\\Z")
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(f"^{_DNS1123_LABEL_FMT}\\Z")
_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_SUBDOMAIN_FMT = f"{_DNS1123_LABEL_FMT}(\\.{_DNS1123_LABEL_FMT})*"
_SUBDOMAIN = re.compile(f"^{_SUBDOMAIN_FMT}\\Z")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
_DNS1035_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035 = re.compile(f"^{_DNS1035_FMT}\\Z")
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
    "start with an alphabetic character, and end with an alphanumeric character"
)
ANNOTATIONS_LIMIT = 256 * 1024  # bytes of keys and values together


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """apimachinery's RegexError, spacing and all."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    return msg + " (e.g. " + " or ".join(f"'{e}', " for e in examples) + f"regex used for validation is '{fmt}')"


def max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def dns1123_label(value: str) -> list[str]:
    out = [max_len(63)] if len(value) > 63 else []
    if not _DNS1123_LABEL.match(value):
        out.append(regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return out


def dns1123_subdomain(value: str) -> list[str]:
    out = [max_len(253)] if len(value) > 253 else []
    if not _SUBDOMAIN.match(value):
        out.append(regex_error(_SUBDOMAIN_MSG, _SUBDOMAIN_FMT, "example.com"))
    return out


def dns1035_label(value: str) -> list[str]:
    out = [max_len(63)] if len(value) > 63 else []
    if not _DNS1035.match(value):
        out.append(regex_error(_DNS1035_MSG, _DNS1035_FMT, "my-name", "abc-123"))
    return out


def qualified_name(value: str) -> list[str]:
    """A label or annotation key: an optional DNS-subdomain prefix and '/', then a name of <= 63."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        out: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        out = (
            ["prefix part must be non-empty"] if not prefix else [f"prefix part {m}" for m in dns1123_subdomain(prefix)]
        )
    else:
        return [
            "a qualified name "
            + regex_error(_QUALIFIED_MSG, _QUALIFIED_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        out.append("name part must be non-empty")
    elif len(name) > 63:
        out.append(f"name part {max_len(63)}")
    if not _QUALIFIED.match(name):
        out.append("name part " + regex_error(_QUALIFIED_MSG, _QUALIFIED_FMT, "MyName", "my.name", "123-abc"))
    return out


def label_value(value: str) -> list[str]:
    out = [max_len(63)] if len(value) > 63 else []
    if not _LABEL_VALUE.match(value):
        out.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return out


def path_segment_name(value: str) -> list[str]:
    """apimachinery's ``IsValidPathSegmentName``: RBAC objects' names (``system:discovery``)."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


_NAME_RULES = {
    "namespaces": dns1123_label,
    "services": dns1035_label,
    **dict.fromkeys(("clusterroles", "clusterrolebindings", "roles", "rolebindings"), path_segment_name),
}


def name_errors(storage: str, name: str) -> list[FieldError]:
    rule = _NAME_RULES.get(storage, dns1123_subdomain)
    return [invalid("metadata.name", name, m) for m in rule(name)]


def label_errors(labels: dict[str, Any], path: str = "metadata.labels") -> list[FieldError]:
    out: list[FieldError] = []
    for key, value in labels.items():
        out += [invalid(path, key, m) for m in qualified_name(key)]
        out += [invalid(path, value, m) for m in label_value(value or "")]
    return out


def annotation_errors(annotations: dict[str, Any]) -> list[FieldError]:
    out: list[FieldError] = []
    size = 0
    for key, value in annotations.items():
        out += [invalid("metadata.annotations", key, m) for m in qualified_name(key.lower())]
        size += len(key) + len(value or "")
    if size > ANNOTATIONS_LIMIT:
        out.append(too_long("metadata.annotations", ANNOTATIONS_LIMIT))
    return out


def check_metadata(storage: str, obj: dict[str, Any]) -> None:
    """Raise InvalidError (422) for what ValidateObjectMeta refuses. The types are checked before
    (``decoding.check_types``), so labels and annotations are string maps or absent here."""
    meta = obj["metadata"]
    name = meta["name"]
    errs = name_errors(storage, name)
    errs += label_errors(meta.get("labels") or {})
    errs += annotation_errors(meta.get("annotations") or {})
    if errs:
        view = STORAGE_VIEW[storage]
        raise InvalidError(view.kind, name, errs, group=view.group)
