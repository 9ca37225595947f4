"""QueueSelector without Redis: strict priority order, and weighted picks in proportion to the
weights (a seeded RNG, so the counts are exact and the test cannot flake)."""

from __future__ import annotations

import random
from collections import Counter

from asynq_aio.server.queues import QueueSelector


def test_strict_priority_is_by_weight_then_name() -> None:
    sel = QueueSelector({"low": 1, "critical": 6, "default": 3, "also3": 3}, strict=True)
    assert [sel.order() for _ in range(3)] == [["critical", "also3", "default", "low"]] * 3


def test_weighted_first_picks_follow_the_weights() -> None:
    sel = QueueSelector({"critical": 6, "default": 3, "low": 1}, strict=False, rng=random.Random(7))
    rounds = 20_000
    first = Counter(sel.order()[0] for _ in range(rounds))
    for queue, weight in (("critical", 6), ("default", 3), ("low", 1)):
        share = first[queue] / rounds
        assert abs(share - weight / 10) < 0.02, (queue, share)


def test_every_round_lists_every_queue_once() -> None:
    sel = QueueSelector({"a": 5, "b": 1, "c": 1}, strict=False, rng=random.Random(1))
    for _ in range(1000):
        assert sorted(sel.order()) == ["a", "b", "c"]


def test_ignoring_the_weights_would_fail_the_proportion_check() -> None:
    """The check above has teeth: equal weights give shares the 6:3:1 bound rejects."""
    sel = QueueSelector({"critical": 1, "default": 1, "low": 1}, strict=False, rng=random.Random(7))
    first = Counter(sel.order()[0] for _ in range(20_000))
    assert abs(first["critical"] / 20_000 - 0.6) > 0.2


def test_a_single_queue_needs_no_draw() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    assert QueueSelector({"only": 4}, strict=False, rng=rng).order() == ["only"]
    assert rng.getstate() == state


def test_order_among_lists_only_those_queues_in_the_same_order_rules() -> None:
    sel = QueueSelector({"critical": 6, "default": 3, "low": 1, "idle": 9}, strict=True)
    assert sel.order({"low", "critical"}) == ["critical", "low"]
    assert sel.order(set()) == []
    weighted = QueueSelector(
        {"critical": 6, "default": 3, "low": 1, "idle": 9}, strict=False, rng=random.Random(2)
    )
    rounds = 20_000
    first = Counter(weighted.order({"critical", "default", "low"})[0] for _ in range(rounds))
    assert "idle" not in first  # a queue left out is never drawn, and the others keep their shares
    for queue, weight in (("critical", 6), ("default", 3), ("low", 1)):
        assert abs(first[queue] / rounds - weight / 10) < 0.02, (queue, first[queue] / rounds)


def test_a_thousand_queues_are_ordered_with_every_queue_once() -> None:
    weights = {f"tenant{i}": 1 + i % 5 for i in range(1000)}
    order = QueueSelector(weights, strict=False, rng=random.Random(4)).order()
    assert sorted(order) == sorted(weights)
