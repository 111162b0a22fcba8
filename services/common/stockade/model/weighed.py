"""A least-recently-used cache bounded by what its entries weigh, not by how many there are.

``functools.lru_cache(maxsize=N)`` bounds entries, but some caches of the brain and the agent
hold values (or keys) of any size: one ipBlock expands to one CIDR or to 65,536, an address set
has one element or 65,536. N entries may be kilobytes or gigabytes, and what deleted policies
and departed pods made stays until pushed out. ``weighed_lru(budget, weight)`` keeps at most
``budget`` in total ``weight(key args, result)`` (each entry's weight: roughly how many strings
or numbers it holds, plus `ENTRY` for keeping it at all); a result heavier than the whole budget
is returned and not kept. Like ``lru_cache``, exceptions are not cached, and ``cache_clear()``
and ``cache_info()`` are there. Thread-safe: the brain's engine runs on a worker thread and
dry-runs compile engines of their own; the agent applies from a thread pool.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

ENTRY = 4  # the weight of keeping an entry at all (its key, its slot in the order)


class CacheInfo(NamedTuple):
    currsize: int  # entries held
    weight: int  # what they weigh in all
    budget: int


class WeighedLru(Generic[P, R]):
    def __init__(self, fn: Callable[P, R], budget: int, weight: Callable[[tuple[Any, ...], R], int]) -> None:
        self._fn = fn
        self.budget = budget
        self._weight = weight
        self._held: OrderedDict[Hashable, tuple[R, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key: Hashable = (args, tuple(sorted(kwargs.items()))) if kwargs else args
        hit = self._held.get(key)  # a hit takes no lock: each step is atomic under the GIL
        if hit is not None:
            try:
                self._held.move_to_end(key)
            except KeyError:  # pushed out by another thread just now
                pass
            return hit[0]
        value = self._fn(*args, **kwargs)  # unlocked: it may call other cached functions
        weight = ENTRY + self._weight(args, value)
        if weight <= self.budget:
            with self._lock:
                if key not in self._held:
                    self._held[key] = (value, weight)
                    self._total += weight
                    while self._total > self.budget:
                        _, (_, gone) = self._held.popitem(last=False)
                        self._total -= gone
        return value

    def cache_clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._total = 0

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(len(self._held), self._total, self.budget)


def weighed_lru(
    budget: int, weight: Callable[[tuple[Any, ...], Any], int]
) -> Callable[[Callable[P, R]], WeighedLru[P, R]]:
    """Decorate a function of hashable arguments with a `WeighedLru` of ``budget``."""

    def wrap(fn: Callable[P, R]) -> WeighedLru[P, R]:
        return WeighedLru(fn, budget, weight)

    return wrap
