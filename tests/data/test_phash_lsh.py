"""Perceptual-dedup index (quality.HashIndex, multi-index hashing): exact, i.e. the same answers as all pairs."""

from __future__ import annotations

import numpy as np
import pytest

from gmai.data.quality import HashIndex, hamming


def _hashes(n: int, seed: int) -> list[int]:
    """Random 64-bit values, a third of them earlier values with 0..distance+2 bits flipped (hits and near misses)."""
    rng = np.random.default_rng(seed)
    values: list[int] = []
    for i in range(n):
        if i and rng.random() < 0.33:
            value = values[int(rng.integers(0, i))]
            for bit in rng.choice(64, size=int(rng.integers(0, 7)), replace=False):
                value ^= 1 << int(bit)
        else:
            value = int(rng.integers(0, 2**62)) << 2 | int(rng.integers(0, 4))
        values.append(value)
    return values


def _all_pairs(values: list[int], groups: list[str], distance: int) -> list:
    answers: list = []
    for i, value in enumerate(values):
        best = None
        for j in range(i):
            d = hamming(value, values[j])
            if groups[j] != groups[i] and d <= distance and (best is None or d < best[1]):
                best = (str(j), d)
        answers.append(best)
    return answers


@pytest.mark.parametrize("distance", [0, 1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("parts", [None, "bands"])
def test_index_answers_exactly_what_all_pairs_answer(distance, parts):
    values = _hashes(600, seed=distance)
    groups = [str(i % 3) for i in range(len(values))]
    index = HashIndex(distance, parts=distance + 1 if parts == "bands" else None)
    answers = []
    for i, (value, group) in enumerate(zip(values, groups)):
        answers.append(index.near(value, exclude_group=group))
        index.add((), value, str(i), group=group)
    assert answers == _all_pairs(values, groups, distance)
    assert sum(a is not None for a in answers) >= 10  # the comparison has hits to get wrong


def test_default_split_probes_substrings_of_about_22_bits():
    index = HashIndex(4)
    assert [mask.bit_length() for _, mask in index._spans] == [22, 22, 20]
    with pytest.raises(ValueError, match="radius"):
        HashIndex(4, parts=1)
