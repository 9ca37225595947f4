"""Which queue to fetch from next: weighted random (Asynq's default) or strict priority."""

from __future__ import annotations

import random


class QueueSelector:
    """Orders the queues for each fetch round: by weight with ``strict``, else a weighted random draw."""

    def __init__(self, weights: dict[str, int], *, strict: bool, rng: random.Random | None = None) -> None:
        self._weights = dict(weights)
        self._strict = strict
        self._rng = rng or random.Random()
        self._by_priority = sorted(self._weights, key=lambda q: (-self._weights[q], q))

    @property
    def queues(self) -> list[str]:
        """The queue names, in the order the weights were given."""
        return list(self._weights)

    def order(self) -> list[str]:
        """All queues in the order to try them this round.

        Weighted: a draw without replacement, each pick proportional to weight among those left, so a
        queue with weight 6 comes first six times as often as one with weight 1 when both have work.
        """
        if self._strict or len(self._weights) == 1:
            return list(self._by_priority)
        left = dict(self._weights)
        out: list[str] = []
        while left:
            total = sum(left.values())
            pick = self._rng.uniform(0, total)
            acc = 0.0
            chosen = next(iter(left))
            for q, w in left.items():
                acc += w
                if pick <= acc:
                    chosen = q
                    break
            out.append(chosen)
            del left[chosen]
        return out
