"""Benchmark loaders, one module per benchmark, registered by name.

    from gmai.eval.benchmarks import load_benchmark, list_benchmarks
    items = load_benchmark("vqa-rad", "../shared/data/vqa-rad", split="test")

Nothing is downloaded: a missing file raises :class:`MissingBenchmarkFile` naming what to fetch and
where to put it.
"""

from __future__ import annotations

from pathlib import Path

from gmai.eval.benchmarks import (gmai_heldout, gmai_mmbench, medxpertqa, mmmu, omnimedvqa, pathvqa,  # noqa: F401
                                  pmc_vqa, slake, vqa_rad)
from gmai.eval.benchmarks.base import (REGISTRY, BenchItem, BenchmarkSpec, ImageLoadError, ImageRef,
                                       MissingBenchmarkFile)


def list_benchmarks() -> list[str]:
    return sorted(REGISTRY)


def get_spec(name: str) -> BenchmarkSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(list_benchmarks())}")
    return REGISTRY[name]


def default_split(name: str) -> str:
    return get_spec(name).splits[0]


def load_benchmark(name: str, path: str | Path, split: str | None = None, **options) -> list[BenchItem]:
    """Items of one split of a benchmark, read from a local ``path``."""
    spec = get_spec(name)
    items = spec.loader(path, split=split or spec.splits[0], **options)
    seen: set[str] = set()
    for item in items:
        if item.qid in seen:  # the prediction cache and reports key on qid
            raise ValueError(f"{name} at {path}: duplicate question id {item.qid!r}")
        seen.add(item.qid)
    return items


__all__ = ["REGISTRY", "BenchItem", "BenchmarkSpec", "ImageLoadError", "ImageRef", "MissingBenchmarkFile",
           "default_split", "get_spec", "list_benchmarks", "load_benchmark"]
