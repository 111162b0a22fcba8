"""Namespaces: the ``kubectl get namespaces`` columns (NAME STATUS AGE)."""

from __future__ import annotations

from .base import AGE_COLUMN, NAME_COLUMN, Cell, Column, KindBehaviour, Obj, age


class NamespaceBehaviour(KindBehaviour):
    def columns(self) -> list[Column]:
        return [NAME_COLUMN, ("Status", "string", "The status of the namespace", 0), AGE_COLUMN]

    def cells(self, obj: Obj) -> list[Cell]:
        return [obj["metadata"]["name"], str((obj.get("status") or {}).get("phase") or ""), age(obj)]
