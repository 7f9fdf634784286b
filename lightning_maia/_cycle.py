"""Values drawn evenly: a shuffled pass over all of them, then another, and so on.

The designers vary the attributes a prompt or a retrieval leaves free with it, so that a batch
of images covers every value about equally often instead of at the mercy of independent draws.

>>> import numpy as np
>>> cycle = Cycle(["red", "blue", "green"], np.random.default_rng(0))
>>> sorted(cycle.next() for _ in range(3))  # one full pass before any value repeats
['blue', 'green', 'red']
>>> cycle.next(exclude=["red"]) != "red"
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Cycle:
    """Values drawn evenly: a shuffled pass over all of them, then another, and so on."""

    def __init__(self, values: Sequence[str], rng: np.random.Generator) -> None:
        self.values = list(values)
        self.rng = rng
        self.queue: list[str] = []

    def next(self, exclude: Sequence[str] = (), include: Sequence[str] | None = None) -> str:
        """The next value outside ``exclude`` (and inside ``include``), if any value is."""

        def fits(value: str) -> bool:
            return value not in exclude and (include is None or value in include)

        for _ in range(2):
            for position in range(len(self.queue) - 1, -1, -1):
                if fits(self.queue[position]):
                    return self.queue.pop(position)
            self.queue = [self.values[i] for i in self.rng.permutation(len(self.values))]
        return self.queue.pop()


__all__ = ["Cycle"]
