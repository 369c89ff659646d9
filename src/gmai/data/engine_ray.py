"""``gmai data build --engine ray``: the build's per-chunk work on a Ray cluster, through Ray Data.

The same pipeline as the local process pool, distributed:

- The source listing (``plan_items``, cut by ``chunk_units``: the same chunks as the local engine) becomes
  a Ray Dataset, one row per chunk holding its pickled (source, item) units.
- ``map_batches`` runs ``build.process_units`` on the workers: decode, windowing, slicing, mask facts, QC,
  hashes, de-identification (inside the adapters), the leakage check against the benchmark hashes, text
  generation, PNGs written under content-addressed names. One implementation of each step, shared
  with the local engine. Each worker commits the chunk's part to ``OUT/.build/parts`` itself.
- The driver streams the parts into the same ``_Assembler`` as the local engine: exact and perceptual
  dedup (band-indexed pHash, ``quality.HashIndex``) run once over all partitions in item order, then
  ids, JSONL, Parquet, rejects, stats, card and plots. So the samples and rejects are the same records as
  ``--engine local`` writes, whatever the cluster size, node failures or task completion order.

Written for a cluster: workers get everything through the task arguments (build config, benchmark
hashes) and read sources / write outputs by path, so ``OUT`` and the source paths must be on storage every
node mounts at the same path (NFS, Lustre, a cloud bucket through FUSE). Nothing is read from the
driver's memory or disk by a worker.

Faults:
- A task lost with its node is retried by Ray; a chunk's part is written atomically and its content does
  not depend on who wrote it, so a retry can neither lose nor duplicate records.
- A chunk whose task keeps failing (a decoder that kills its worker process, say) is skipped by Ray Data
  (``max_errored_blocks``) and redone one item per task; an item that still fails becomes a reject
  (stage "read") naming the item, and the build goes on.
- A killed driver leaves the committed parts on the output storage; the rerun keeps every part made by
  the same plan (``build._prepare_journal``) and only runs the rest.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import pickle
import socket
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from gmai.data import build as B
from gmai.data.records import Reject

if TYPE_CHECKING:
    from gmai.data.quality import LeakageIndex

TASK_RETRIES = 3  # per chunk task: node losses are retried; a chunk that fails more is redone item by item
LOCAL_OBJECT_STORE = 256 << 20  # bytes, for a cluster we start ourselves: parts are small (no pixels)


class RayEngineError(RuntimeError):
    """The Ray engine cannot run (ray not installed, cluster unreachable): a one-line message for the CLI."""


# ------------------------------------------------------------------------------------------------
# The cluster


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise RayEngineError(f"--engine ray needs Ray Data: pip install 'gmai[ray]' ({error})") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when HOST:PORT does not answer (ray.init would retry for a minute)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RayEngineError(f"--ray-address {address!r} must look like HOST:PORT (or 'auto')")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as error:
        raise RayEngineError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None


@contextmanager
def cluster(config: B.BuildConfig, log: Callable[[str], None]) -> Iterator[Any]:
    """Connect to ``config.ray_address``, or start a local cluster of ``config.workers`` CPUs.

    A connection made here is closed here; one the caller already holds (``ray.init`` before the build)
    is used as it is and left open.
    """
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    quiet = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    try:
        if config.ray_address:
            check_reachable(config.ray_address)
            ray.init(address=config.ray_address, **quiet)
        else:
            ray.init(num_cpus=config.workers, object_store_memory=LOCAL_OBJECT_STORE, **quiet)
    except RayEngineError:
        raise
    except Exception as error:  # ConnectionError, or whatever this Ray version raises for a bad cluster
        where = config.ray_address or "a local cluster"
        raise RayEngineError(f"cannot start Ray on {where}: {type(error).__name__}: {error}") from None
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = int(ray.cluster_resources().get("CPU", 0))
        log(f"ray engine: {cpus} CPUs on {len(nodes)} node(s) ({config.ray_address or 'local cluster'})")
        yield ray
    finally:
        ray.shutdown()


# ------------------------------------------------------------------------------------------------
# Worker side


def _worker_state(config: B.BuildConfig, leakage: LeakageIndex | None, token: str) -> None:
    """Set the build's per-process state once per worker process and build (Ray reuses worker processes)."""
    if B._STATE.get("token") != token:
        B._init_worker(config, leakage)
        B._STATE["token"] = token
        gc.freeze()  # as the local engine's forked workers: imported modules stay out of the collector's scans


def process_chunks(batch: dict[str, np.ndarray], config: B.BuildConfig, leakage: LeakageIndex | None,
                   token: str) -> dict[str, np.ndarray]:
    """Ray Data batch of chunk rows -> their parts, each committed to the journal by this worker."""
    _worker_state(config, leakage, token)
    parts = []
    for index, units in zip(batch["index"], batch["units"]):
        part = B.process_units(pickle.loads(units))
        B.commit_part(config.out, int(index), part)
        parts.append(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))
    return {"index": np.asarray(batch["index"], dtype=np.int64), "part": np.array(parts, dtype=object)}


def process_one_unit(config: B.BuildConfig, leakage: LeakageIndex | None, token: str,
                     unit: tuple[int, Any]) -> dict[str, Any]:
    """One (source index, item) on its own (a task of the isolation pass)."""
    _worker_state(config, leakage, token)
    return B.process_units([unit])


# ------------------------------------------------------------------------------------------------
# Driver side


def run_chunks_ray(config: B.BuildConfig, leakage: LeakageIndex | None, chunks: list[list[tuple[int, Any]]],
                   todo: list[int], assembler: Any, show: bool, stop_after: int | None,
                   log: Callable[[str], None]) -> None:
    """Run the ``todo`` chunks on Ray and feed their parts to ``assembler`` as they arrive."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with cluster(config, log) as ray, _data_context(ray, len(todo)):
        if not todo:
            return
        token = uuid.uuid4().hex
        # the LLM generator splits its request rate by the worker count: on Ray that is the cluster's CPUs
        # (the worker count changes nothing else in what a worker does, nor the output)
        config = dataclasses.replace(config, workers=max(1, int(ray.cluster_resources().get("CPU", 1))))
        rows = [{"index": i, "units": pickle.dumps(chunks[i], protocol=pickle.HIGHEST_PROTOCOL)} for i in todo]
        with warnings.catch_warnings():  # Ray 2.60 has no named parameter for max_retries yet, only the
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated ray_remote_args
            dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                process_chunks, batch_size=1, batch_format="numpy", zero_copy_batch=True,
                fn_kwargs={"config": config, "leakage": leakage, "token": token},
                num_cpus=1, max_retries=TASK_RETRIES)  # Ray Data's default (-1) retries a crashing chunk forever
        columns = (TextColumn("[bold]building (ray)"), BarColumn(), MofNCompleteColumn(), TextColumn("items"),
                   TimeRemainingColumn())
        with Progress(*columns, disable=not show) as bar:
            task = bar.add_task("build", total=sum(len(chunks[i]) for i in todo))
            seen: set[int] = set()
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for index, part in zip(batch["index"], batch["part"]):
                    index = int(index)
                    if index in seen:  # a retried task's second copy of a chunk already assembled
                        continue
                    seen.add(index)
                    assembler.committed(index, pickle.loads(part))
                    bar.advance(task, len(chunks[index]))
                    if stop_after is not None and len(seen) >= stop_after:
                        raise B.BuildInterrupted(f"stopped after {len(seen)} chunks (test hook)")
            failed = [i for i in todo if i not in seen]
            if failed:
                log(f"ray engine: {len(failed)} chunk(s) failed; redoing them one item per task")
                for index in failed:
                    part = _isolate(ray, config, leakage, token, chunks[index])
                    B.commit_part(config.out, index, part)
                    assembler.committed(index, part)
                    bar.advance(task, len(chunks[index]))


@contextmanager
def _data_context(ray: Any, chunks: int) -> Iterator[None]:
    """Ray Data settings for one build, restored afterwards (the caller's session may go on using Ray Data)."""
    context = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = context.enable_progress_bars, context.max_errored_blocks, logger.level
    context.enable_progress_bars = False  # ours, the same as the local engine's
    context.max_errored_blocks = chunks  # a failing chunk is skipped by Ray Data and redone item by item
    logger.setLevel(logging.CRITICAL)  # its INFO lines would break the bar; a skipped chunk ends up in rejects
    try:
        yield
    finally:
        context.enable_progress_bars, context.max_errored_blocks = saved[:2]
        logger.setLevel(saved[2])


def _isolate(ray: Any, config: B.BuildConfig, leakage: LeakageIndex | None, token: str,
             units: list[tuple[int, Any]]) -> dict[str, Any]:
    """A failed chunk's part, one task per unit: a unit whose task fails becomes a reject naming it."""
    remote = ray.remote(num_cpus=1, max_retries=1)(process_one_unit)
    refs = [remote.remote(config, leakage, token, unit) for unit in units]
    entries: list[tuple[str, dict[str, Any]]] = []
    generation: Counter = Counter()
    for (source_index, item), ref in zip(units, refs):
        try:
            part = ray.get(ref)
        except Exception as error:  # the worker died (WorkerCrashedError) or raised: the item is reported
            spec = config.sources[source_index]
            cause = getattr(error, "cause", None) or error  # a RayTaskError wraps what the task raised
            reason = f"worker failed on this item: {type(cause).__name__}"  # its text may quote a path
            reject = Reject(f"item {item!r}", spec.label(), reason).to_json()
            entries.append(("reject", {**reject, "src": source_index}))  # keyed by the assembler
            continue
        entries.extend(part["entries"])
        generation.update(part["generation"])
    return {"entries": entries, "generation": dict(generation)}

