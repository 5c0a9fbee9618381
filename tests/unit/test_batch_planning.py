"""Planning embedding batches by token count: every text once, least padded compute."""

from __future__ import annotations

import itertools
import random

import pytest

from tasks.core.batching import plan_batches


def plan_cost(counts: list[int], batches: list[list[int]], overhead: float) -> float:
    return sum(overhead + len(b) * max(counts[i] for i in b) for b in batches)


def brute_force_cost(counts: list[int], max_batch: int, overhead: float) -> float:
    """Cheapest cut of the sorted texts into consecutive batches, by trying every cut."""
    lengths = sorted(counts)
    n, best = len(lengths), float("inf")
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        if max(sizes) <= max_batch:
            best = min(best, sum(overhead + (b - a) * lengths[b - 1] for a, b in zip(bounds, bounds[1:])))
    return best


@pytest.mark.parametrize("seed", range(25))
def test_plan_is_a_partition_and_optimal(seed):
    rng = random.Random(seed)
    counts = [rng.choice([rng.randint(5, 40), rng.randint(100, 200)]) for _ in range(rng.randint(1, 11))]
    max_batch = rng.randint(1, 6)
    batches = plan_batches(counts, max_batch=max_batch, overhead_tokens=40)
    assert sorted(i for b in batches for i in b) == list(range(len(counts)))
    assert all(1 <= len(b) <= max_batch for b in batches)
    assert plan_cost(counts, batches, 40) == pytest.approx(brute_force_cost(counts, max_batch, 40))


def test_equal_lengths_fill_whole_batches():
    assert sorted(len(b) for b in plan_batches([150] * 40, max_batch=16)) == [8, 16, 16]


def test_an_outlier_gets_its_own_batch_rather_than_padding_the_rest():
    counts = [20] * 10 + [190]
    batches = plan_batches(counts, max_batch=16)
    assert batches == [list(range(10)), [10]]


def test_shortest_first_and_empty_input():
    counts = [190, 5, 170, 6]
    batches = plan_batches(counts, max_batch=2)
    assert [[counts[i] for i in b] for b in batches] == [[5, 6], [170, 190]]
    assert plan_batches([], max_batch=16) == []
