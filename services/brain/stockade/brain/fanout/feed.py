"""One node's feed: its current model, generation number and a bounded history of deltas.

The feed advances by applying each delta to its own model (`stockade.model.apply` returns a
new model and never mutates the old one), so a session can keep a reference to the model it
last sent at no cost beyond what differs, and coalesce with ``diff(sent_model, feed.model)``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from stockade.model import NodeDelta, NodeModel, apply


class NodeFeed:
    """Generations of one node's model, numbered from 1 by this brain process (its epoch)."""

    def __init__(self, node: str, model: NodeModel, history: int) -> None:
        self.node = node
        self.generation = 1
        self.model = model
        self.first_generation = 1  # the generation this feed started at (a full model)
        # (generation reached, delta from generation - 1): the window in which a returning
        # agent can catch up with steps instead of a snapshot.
        self.history: deque[tuple[int, NodeDelta]] = deque(maxlen=history)
        self._digest: tuple[int, str] | None = None
        self._listeners: set[Callable[[], None]] = set()

    def advance(self, delta: NodeDelta) -> int:
        self.model = apply(self.model, delta)
        self.generation += 1
        self.history.append((self.generation, delta))
        for wake in list(self._listeners):
            wake()
        return self.generation

    def digest(self) -> str:
        """The current model's digest, computed once per generation."""
        if self._digest is None or self._digest[0] != self.generation:
            self._digest = (self.generation, self.model.digest())
        return self._digest[1]

    def steps_since(self, generation: int) -> list[NodeDelta] | None:
        """The deltas from ``generation`` to the current one, or None when out of the window."""
        if generation == self.generation:
            return []
        if generation > self.generation or not self.history:
            return None
        oldest_base = self.history[0][0] - 1
        if generation < oldest_base:
            return None
        return [d for g, d in self.history if g > generation]

    def listen(self, wake: Callable[[], None]) -> None:
        self._listeners.add(wake)

    def unlisten(self, wake: Callable[[], None]) -> None:
        self._listeners.discard(wake)
