"""Planning embedding batches by token count, so that batches carry (almost) no padding."""

from __future__ import annotations

# The fixed cost of one forward pass, in padded tokens' worth of compute: fitted for
# all-MiniLM-L6-v2 on 2 CPU cores over batches of 1-16 texts of 48-240 tokens (~10 ms per batch
# against ~0.11 ms per token). It only decides how much padding is worth one more batch;
# larger models make it smaller, not wrong.
BATCH_OVERHEAD_TOKENS = 90


def plan_batches(token_counts: list[int], *, max_batch: int,
                 overhead_tokens: float = BATCH_OVERHEAD_TOKENS) -> list[list[int]]:
    """Split texts into batches of at most ``max_batch`` that cost the least compute.

    A batch costs ``overhead + size × its longest text`` (every text is padded to the
    longest). Texts are sorted by token count and cut where padding would cost more than
    another batch: an exact dynamic programme over the sorted order, O(n × max_batch).
    Returns lists of indices into ``token_counts``, shortest texts first.
    """
    order = sorted(range(len(token_counts)), key=token_counts.__getitem__)
    lengths = [token_counts[i] for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest plan for the first j sorted texts
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[j - 1]
        for i in range(max(0, j - max_batch), j):
            cost = best[i] + overhead_tokens + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    batches, j = [], n
    while j > 0:
        batches.append(order[cut[j]:j])
        j = cut[j]
    return batches[::-1]
