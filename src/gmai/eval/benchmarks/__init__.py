"""Benchmark loaders, one module per benchmark, registered by name.

    from gmai.eval.benchmarks import load_benchmark, list_benchmarks
    items = load_benchmark("vqa-rad", "../shared/data/vqa-rad", split="test")

Each loader reads its benchmark's release as it is distributed (file names, split names, columns).
Nothing is downloaded: a missing file raises :class:`MissingBenchmarkFile` naming what to fetch and
where to put it; a split the release does not have raises :class:`UnknownSplit` listing the valid ones.
Rows that cannot be scored are in the result's ``failures`` (see :class:`Loaded`).
"""

from __future__ import annotations

from pathlib import Path

from gmai.eval.benchmarks import (gmai_heldout, gmai_mmbench, medxpertqa, mmmu, omnimedvqa, pathvqa,  # noqa: F401
                                  pmc_vqa, slake, vqa_rad)
from gmai.eval.benchmarks.base import (REGISTRY, BenchItem, BenchmarkSpec, ImageLoadError, ImageRef, Loaded,
                                       MissingBenchmarkFile, UnknownSplit, check_split)


def list_benchmarks() -> list[str]:
    return sorted(REGISTRY)


def get_spec(name: str) -> BenchmarkSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(list_benchmarks())}")
    return REGISTRY[name]


def default_split(name: str) -> str:
    return get_spec(name).splits[0]


def load_benchmark(name: str, path: str | Path, split: str | None = None, **options) -> Loaded:
    """Items of one split of a benchmark, read from a local ``path`` (a list, with ``.failures``)."""
    spec = get_spec(name)
    split = check_split(name, split or spec.splits[0], spec.splits)
    items = spec.loader(path, split=split, **options)
    items = _scorable(items if isinstance(items, Loaded) else Loaded(items))
    seen: set[str] = set()
    for item in items:
        if item.qid in seen:  # the prediction cache and reports key on qid
            raise ValueError(f"{name} at {path}: duplicate question id {item.qid!r}")
        seen.add(item.qid)
    return items


def unscorable_reason(item: BenchItem) -> str | None:
    """Why an item cannot be scored, or None: no gold answer (withheld, as in GMAI-MMBench TEST and MMMU
    test), or a multiple-choice gold that is not one of the item's options."""
    gold = item.answer.strip()
    if not gold or gold == "?":
        return "no gold answer in this release (withheld or empty)"
    if item.answer_type == "choice" and item.options and gold not in item.options:
        return f"gold {gold!r} is not one of the options {sorted(item.options)}"
    return None


def _scorable(items: Loaded) -> Loaded:
    """Rows that cannot be scored move to ``failures`` with their reason; the rest stay in order."""
    kept = Loaded(failures=items.failures)
    for item in items:
        reason = unscorable_reason(item)
        if reason is None:
            kept.append(item)
        else:
            kept.fail(item.qid, reason)
    return kept


__all__ = ["REGISTRY", "BenchItem", "BenchmarkSpec", "ImageLoadError", "ImageRef", "Loaded", "MissingBenchmarkFile",
           "UnknownSplit", "default_split", "get_spec", "list_benchmarks", "load_benchmark"]
