"""The errors the API reports: a Status object with an HTTP code (kept apart so every module can raise them)."""

from __future__ import annotations

from typing import Any

from .resources import STORAGE_VIEW

Obj = dict[str, Any]


class ApiError(Exception):
    """A failure the API reports as a Status object with an HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        out: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            out["details"] = self.details
        return out


def not_found(storage: str, name: str) -> ApiError:
    view = STORAGE_VIEW[storage]
    return ApiError(
        404, "NotFound", f'{storage} "{name}" not found', {"name": name, "group": view.group, "kind": storage}
    )
