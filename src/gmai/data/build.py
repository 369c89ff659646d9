"""``gmai data build``: sources -> records -> quality -> generation -> output folder.

How it stays parallel, resumable and byte-identical whatever the worker count:

1. Every source enumerates its items (cheap, deterministic order); the flat list of
   (source, item) is cut into chunks whose size depends only on the item count.
2. Workers process whole chunks: load -> per-record checks -> hashes -> leakage (order-free)
   -> text generation with a seed derived from the item's identity -> PNG written under a
   content-addressed name. Each chunk's result is committed atomically to ``OUT/.build/parts``.
3. A rerun with the same plan skips committed chunks (resume after a kill loses and duplicates
   nothing). One sequential pass in item order does what depends on order (exact/near dedup, ids)
   and writes the outputs; it streams: chunk i is assembled as soon as chunks 0..i are committed,
   while the workers go on with later chunks, into ``OUT/.build/assembly``, moved into place at the
   end. Nothing written depends on the worker count, chunk completion order or the clock.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gmai.data import write as W
from gmai.data.deid import DeidOptions, keyed_hash, new_secret, use_options
from gmai.data.generate import SUBSETS, Generator, get_generator
from gmai.data.quality import Deduper, LeakageIndex, QualityConfig, check_record, phash, pixel_md5
from gmai.data.records import Record, Reject
from gmai.data.sources import get_source, parse_spec
from gmai.data.sources._common import OptionError

JOURNAL = ".build"
PLAN_VERSION = 2  # 2: part entries carry their source index ("src"); refs are keyed at assembly
THREE_D_KINDS = {"nifti"}
# the DICOM readers: their parts depend on the de-identification secret (UID remap), and their adapters key
# refs with it already (kept as they are at assembly)
SECRET_KINDS = {"dicom", "dicom-seg", "rtstruct"}


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    path: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> SourceSpec:
        kind, path, options = parse_spec(spec)
        return cls(kind, str(path), options)

    def label(self) -> str:
        """How outputs name a source: kind and dataset name, never its path (paths can name patients)."""
        name = self.options.get("name", "")
        return f"{self.kind}:{name}" if name else self.kind


RUN_ONLY_FIELDS = ("workers", "out", "keep_journal", "plots", "engine", "ray_address")


@dataclass
class BuildConfig:
    sources: list[SourceSpec]
    out: Path
    workers: int = 1
    generator: str = "template"
    generator_options: dict[str, Any] = field(default_factory=dict)
    exclude_benchmarks: list[str] = field(default_factory=list)
    seed: int = 0
    quality: QualityConfig = field(default_factory=QualityConfig)
    png_compress_level: int = 1
    max_side: int = 512  # longer images are downscaled (aspect kept) before writing; training uses 336
    keep_journal: bool = False
    plots: bool = True  # the card's PNG chart (~1.5 s of matplotlib text layout)
    # keys the DICOM UID remap and the hashed refs; random per build unless the user keeps one
    # (--deid-secret-file). Never written out: the fingerprint holds only an HMAC check of it.
    deid_secret: bytes = field(default_factory=new_secret, repr=False)
    # PS3.15 Options on (gmai.data.deid.OPTIONS names, e.g. "retain_uids"); none by default
    deid_options: tuple[str, ...] = ()
    engine: str = "local"  # "local" (process pool) or "ray" (Ray Data, gmai.data.engine_ray): same output
    ray_address: str | None = None  # --engine ray: a running cluster ("auto", "HOST:PORT"); None starts one

    def __post_init__(self) -> None:  # checked (unknown names, full with modified dates) and in one order
        self.deid_options = DeidOptions.with_options(self.deid_secret, self.deid_options).enabled()

    def fingerprint(self) -> str:
        """Everything that changes the output (not the workers or engine running it, not the output folder)."""
        data = {k: v for k, v in asdict(self).items() if k not in RUN_ONLY_FIELDS + ("deid_secret",)}
        if any(s.kind in SECRET_KINDS for s in self.sources):  # their refs and UIDs depend on the secret:
            data["deid_secret_check"] = keyed_hash(self.deid_secret, "journal check")  # resume with the same one
        data["version"] = PLAN_VERSION
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class BuildResult:
    out: Path
    stats: dict[str, Any]
    chunks_total: int
    chunks_reused: int
    seconds: float

    @property
    def records_read(self) -> int:
        return int(self.stats["records_loaded"])


class BuildInterrupted(RuntimeError):
    """Raised by the test hook ``stop_after_chunks`` to simulate a run killed midway."""


# ------------------------------------------------------------------------------------------------
# Per-process state (set once per worker; fork shares the parent's copy)

_STATE: dict[str, Any] = {}


def _init_worker(config: BuildConfig, leakage: LeakageIndex | None) -> None:
    _STATE.pop("png", None)
    _STATE["config"] = config
    _STATE["out"] = str(config.out)
    _STATE["leakage"] = leakage
    _STATE["generator"] = None
    use_options(DeidOptions.with_options(config.deid_secret, config.deid_options))


def _generator() -> Generator:
    if _STATE.get("generator") is None:
        config: BuildConfig = _STATE["config"]
        options = dict(config.generator_options)
        if config.generator == "llm":
            options.setdefault("seed", config.seed)
            # the rate limit is for the whole build: each worker process gets its share
            options["rate"] = float(options.get("rate", 2.0)) / max(1, config.workers)
        _STATE["generator"] = get_generator(config.generator, options)
    return _STATE["generator"]


def item_seed(seed: int, spec: SourceSpec, item: Any, index: int) -> int:
    """A record's seed from what it *is* (source, item, position in the item), never from who ran it or where
    the data lives: the source's folder name, not its absolute path, so a copy elsewhere (another checkout, CI)
    gets the same texts."""
    key = f"{seed}|{spec.kind}|{_folder_name(spec.path)}|{item!r}|{index}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


@functools.lru_cache(maxsize=256)  # one per source: a Path per record showed in profiles
def _folder_name(path: str) -> str:
    return Path(path).name


# Reused: json.dumps with options builds a new encoder on every call (the bytes are the same).
_ANNOTATION_ENCODER = json.JSONEncoder(sort_keys=True, default=repr)


def annotation_key(record: Record) -> str:
    data = {k: getattr(record, k) for k in ("task", "labels", "boxes", "mask_facts", "qa", "report", "conversations")}
    return hashlib.sha1(_ANNOTATION_ENCODER.encode(data).encode()).hexdigest()


def _is_synthetic(record: Record) -> bool:
    return bool(record.meta.get("synthetic")) or "synthetic" in record.source.lower()


def _drop_alpha(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., :3])  # alpha carries nothing medical
    return image


def _channels_equal(image: np.ndarray) -> bool:
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def _for_output(image: np.ndarray, max_side: int) -> np.ndarray:
    """The pixels written to PNG: grey when all channels agree (3x smaller), longer side <= max_side."""
    if image.ndim == 3 and _channels_equal(image[::7, ::7]) and _channels_equal(image):  # cheap sample first
        image = np.ascontiguousarray(image[..., 0])
    if max_side <= 0 or max(image.shape[:2]) <= max_side:
        return image
    from PIL import Image

    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0))


def process_record(record: Record, spec: SourceSpec, seed: int) -> tuple[str, dict[str, Any]]:
    """One record -> ("record", entry) or ("reject", reject dict). Never raises for bad data."""
    config: BuildConfig = _STATE["config"]
    reason = check_record(record, config.quality)
    if reason:
        return "reject", Reject(record.ref, record.source, reason, "quality").to_json()
    image = _drop_alpha(record.image)  # hashes are of the pixels as read
    md5, value = pixel_md5(image), phash(_side_by_side(record.images) if record.images else image)
    leakage: LeakageIndex | None = _STATE.get("leakage")
    if leakage is not None and record.split == "train":
        hit = leakage.match(md5, value)
        for frame in record.images if not hit else []:  # every image of a multi-image record, one by one
            hit = hit or leakage.match(pixel_md5(_drop_alpha(frame)), phash(_drop_alpha(frame)))
        if hit:
            return "reject", Reject(record.ref, record.source, f"matches benchmark image {hit}", "leakage").to_json()
    generator = _generator()
    try:
        samples = generator.generate(record, random.Random(seed))
    except Exception as error:  # a generator bug must not take the build down; it is reported
        return "reject", Reject(record.ref, record.source, f"generator failed: {type(error).__name__}",
                                "generate").to_json()
    if not samples:
        return "reject", Reject(record.ref, record.source, "no text could be generated (no label, box, modality,"
                                " Q&A, report or conversation)", "generate").to_json()
    if record.images:  # several images shown together (a volume as slices): one PNG each, listed in order
        frames = [_drop_alpha(frame) for frame in record.images]
        relpath: str | list[str] = [_write_image(record.source, pixel_md5(f), f, config) for f in frames]
        md5 = hashlib.md5("".join(Path(p).stem for p in relpath).encode()).hexdigest()  # the sequence's identity
    else:
        relpath = _write_image(record.source, md5, image, config)
    dim = "3d" if spec.kind in THREE_D_KINDS or record.meta.get("dim") == "3d" else "2d"
    entry = {
        "ref": record.ref, "source": record.source, "kind": spec.kind, "split": record.split, "task": record.task,
        "modality": record.modality, "department": record.department, "organ": record.organ,
        "labels": [str(x) for x in record.labels], "dim": dim, "md5": md5, "phash": value, "image": relpath,
        "annotation": annotation_key(record), "synthetic": _is_synthetic(record),
        "samples": [s.to_json() for s in samples],
    }
    return "record", entry


def _write_image(source: str, md5: str, image: np.ndarray, config: BuildConfig) -> str:
    relpath = W.image_relpath(source, md5)
    target = os.path.join(_STATE["out"], relpath)  # a plain string: pathlib costs show at one call per image
    if not os.path.exists(target):
        data = W.encode_png(_for_output(image, config.max_side), config.png_compress_level)
        W.write_atomic(target, data)
        if (written := _STATE.get("png")) is not None:  # single process: the assembler embeds these in Parquet
            written[relpath] = data
    return relpath


def _side_by_side(frames: list[np.ndarray]) -> np.ndarray:
    """A multi-image record's frames in one row: its perceptual hash is of the sequence, not of one slice
    (which may look like a slice of another dataset's volume without the sequence repeating anything)."""
    frames = [_drop_alpha(f) for f in frames]
    if len({f.shape for f in frames}) != 1:
        return frames[0]
    return np.concatenate(frames, axis=1)


def _image_paths(entry: dict[str, Any]) -> list[str]:
    """A kept record's image files: one path, or a list for a multi-image record."""
    return list(entry["image"]) if isinstance(entry["image"], list) else [entry["image"]]


def _load_item(spec: SourceSpec, item: Any) -> list[Record | Reject]:
    try:
        outputs = list(get_source(spec.kind).load(Path(spec.path), item, spec.options))
    except Exception as error:  # adapters should not raise; if one does, the item is reported, not lost
        # the error text may hold file names: the reject names the item (keyed by the assembler) and the error type
        return [Reject(f"item {item!r}", spec.label(), f"adapter error: {type(error).__name__}")]
    return [_with_source_name(output, spec.kind) for output in outputs]


def _with_source_name(output: Record | Reject, kind: str) -> Record | Reject:
    """A source without ``name=`` (and no public default of its adapter) is named by its kind, never by
    its folder or file name: those can name a patient (see ``sources._common.dataset_name``)."""
    if output.source:
        return output
    if isinstance(output, Reject):
        return replace(output, source=kind)
    output.source = kind
    return output


@functools.lru_cache(maxsize=64)
def _source_roots(path: str) -> tuple[str, ...]:
    """The spellings of a source's folder (of its file's folder, for a one-file source) that refs start with."""
    base = Path(path)
    base = base.parent if base.is_file() else base
    roots = {str(base), os.path.abspath(base), str(base.resolve())}
    return tuple(sorted((r for r in roots if r not in ("", ".", os.sep)), key=len, reverse=True))


def source_relative(spec: SourceSpec, ref: str) -> str:
    """An adapter's ref relative to its source (what is hashed: the same wherever the data lives)."""
    for root in _source_roots(spec.path):
        if ref.startswith(root + os.sep):
            return ref[len(root) + 1:]
    return ref


def output_ref(secret: bytes, spec: SourceSpec, ref: str) -> str:
    """The ref written out: ``KIND-HMAC(secret, ref relative to the source)``, never a path or file name.

    A trailing position (``#slice=12``) stays as it is. Whoever keeps the build's secret
    (``--deid-secret-file``) maps a ref back by hashing candidate relative refs
    (``keyed_hash(secret, "ref\\0" + relative_ref)``); nobody else can."""
    if spec.kind in SECRET_KINDS and _KEYED_REF.match(ref) and ref.startswith(f"{spec.kind}-"):
        return ref  # keyed by its DICOM adapter already (an item it failed on before keying it is keyed below)
    suffix = _POSITION.search(ref)  # a slice's or frame's number says nothing about anyone: it stays readable
    base, position = (ref[: suffix.start()], suffix.group()) if suffix else (ref, "")
    return f"{spec.kind}-{keyed_hash(secret, 'ref' + chr(0) + source_relative(spec, base))}{position}"


_POSITION = re.compile(r"#[a-z_]+=(?:[a-z_]+:)?[0-9,\-]+$")  # "#slice=12", "#slice=4-6,9", "#volume=slices:2,5,8"
_KEYED_REF = re.compile(r"^[a-z-]+-[0-9a-f]{16}(" + _POSITION.pattern + ")?$")  # KIND-HMAC, maybe with a position
_NAME_SPLIT = re.compile(r"[/\\#:?=\[\]]")


def scrub_reason(reason: str, spec: SourceSpec, ref: str) -> str:
    """A reject reason without the source's folder or the names in the record's path.

    The adapters word their reasons by rule; this is the net under them, for an error text that
    quotes a path (a library's message, say)."""
    for root in _source_roots(spec.path):
        reason = reason.replace(root, "<source>")
    names = set()
    for part in _NAME_SPLIT.split(source_relative(spec, ref)) + [Path(spec.path).name]:
        names.update({part, part.split(".")[0]})
    for name in sorted(names, key=len, reverse=True):
        if len(name) >= 4 and not name.isdigit():
            reason = reason.replace(name, "<name>")
    return reason


def process_units(units: list[tuple[int, Any]]) -> dict[str, Any]:
    """Load and process (source index, item) units in order: the part {"entries", "generation"} of a chunk.

    Both engines call this in their workers (the local pool through ``process_chunk``, Ray through
    ``gmai.data.engine_ray``), so a chunk's part does not depend on the engine.
    """
    config: BuildConfig = _STATE["config"]
    entries: list[tuple[str, dict[str, Any]]] = []
    generator = _generator()
    before = Counter(generator.stats)
    for source_index, item in units:
        spec = config.sources[source_index]
        for k, output in enumerate(_load_item(spec, item)):
            if isinstance(output, Reject):
                kind, entry = "reject", output.to_json()
            else:
                kind, entry = process_record(output, spec, item_seed(config.seed, spec, item, k))
            entry["src"] = source_index  # the assembler keys the ref with the secret (``_anonymise``)
            entries.append((kind, entry))
    generation = Counter(generator.stats)
    generation.subtract(before)
    return {"entries": entries, "generation": dict(+generation)}


def commit_part(out: Path, index: int, part: dict[str, Any]) -> None:
    """Commit a chunk's part to the journal (atomic: a rerun sees the whole part or none)."""
    W.write_atomic(_part_path(out, index), pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))


def process_chunk(index: int, units: list[tuple[int, Any]], keep: bool = False) -> tuple[int, int, dict | None]:
    """Process one chunk and commit its part file. Returns (chunk index, entries, the part if ``keep``).

    ``keep`` is for the single-process build: its assembler takes the part from memory instead of
    reading back the file it was just written to (the same data; the file is still what a rerun resumes from).
    """
    part = process_units(units)
    commit_part(_STATE["config"].out, index, part)
    return index, len(part["entries"]), part if keep else None


def _part_path(out: Path, index: int) -> Path:
    return out / JOURNAL / "parts" / f"{index:06d}.pkl"


# ------------------------------------------------------------------------------------------------
# Planning


def plan_items(config: BuildConfig) -> tuple[list[tuple[int, Any]], list[dict[str, str]]]:
    """All (source index, item) in order, plus a reject for each source that cannot be listed."""
    units: list[tuple[int, Any]] = []
    failures: list[dict[str, str]] = []
    for source_index, spec in enumerate(config.sources):
        try:
            items = list(get_source(spec.kind).items(Path(spec.path), spec.options))
        except OptionError:
            raise  # a mistyped option is the command's fault, not the data's: stop with its message
        except Exception as error:
            failures.append(Reject(spec.label(), spec.kind, _listing_reason(spec, error)).to_json())
            continue
        units.extend((source_index, item) for item in items)
    return units, failures


def _listing_reason(spec: SourceSpec, error: Exception) -> str:
    """The listing error without the source's path in it (a path can name a patient)."""
    text = str(error).replace(str(Path(spec.path).resolve()), "<source>").replace(spec.path, "<source>")
    return f"cannot list source: {type(error).__name__}: {text}"


def chunk_units(units: list[tuple[int, Any]]) -> list[list[tuple[int, Any]]]:
    """Chunk size from the item count only (about 64 chunks, 1-32 items each): workers never change it."""
    size = max(1, min(32, -(-len(units) // 64)))
    return [units[i:i + size] for i in range(0, len(units), size)]


def _prepare_journal(config: BuildConfig, units: list[tuple[int, Any]], nchunks: int,
                     leakage: LeakageIndex | None) -> None:
    """Keep committed parts only when they were made by exactly this plan (inputs, options, benchmark images)."""
    journal = config.out / JOURNAL
    benchmark = sorted(leakage.index.md5) if leakage else []
    plan = {"fingerprint": config.fingerprint(), "chunks": nchunks,
            "items": hashlib.sha256(repr(units).encode()).hexdigest(),
            "benchmark": hashlib.sha256(repr(benchmark).encode()).hexdigest()}
    plan_file = journal / "plan.json"
    same = False
    if plan_file.exists():
        try:
            same = json.loads(plan_file.read_text()) == plan
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            shutil.rmtree(journal)
    if not same:
        # Images are skipped when their file exists, which is only safe within one plan: a previous build
        # into this folder may have used another max_side or PNG level.
        _remove_unreferenced_images(config.out, keep=set())
    (journal / "parts").mkdir(parents=True, exist_ok=True)
    W.write_atomic(plan_file, json.dumps(plan, sort_keys=True).encode())


def _committed(out: Path, index: int) -> bool:
    path = _part_path(out, index)
    if not path.exists():
        return False
    try:
        pickle.loads(path.read_bytes())
        return True
    except Exception:  # a corrupt part (cannot happen with atomic writes, but disks lie) is redone
        return False


# ------------------------------------------------------------------------------------------------
# Running


def run_build(config: BuildConfig, *, progress: bool = True, stop_after_chunks: int | None = None,
              log: Callable[[str], None] = print) -> BuildResult:
    with _frozen_heap():
        return _run_build(config, progress, stop_after_chunks, log)


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Exclude the objects alive before the build (imported libraries: ~10^5) from garbage collection.

    A full collection would otherwise rescan all of them every few hundred records (~60 ms each time),
    and forked workers would copy the pages the scan touches. Left alone if the caller froze already.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run_build(config: BuildConfig, progress: bool, stop_after_chunks: int | None,
               log: Callable[[str], None]) -> BuildResult:
    start = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    leakage = None
    if config.exclude_benchmarks:
        leakage = LeakageIndex.from_folders(config.exclude_benchmarks, config.quality.leak_distance, config.workers)
        log(f"leakage check: {leakage.images} benchmark images hashed from {len(leakage.folders)} folder(s)")
    units, list_failures = plan_items(config)
    chunks = chunk_units(units)
    _prepare_journal(config, units, len(chunks), leakage)
    todo = [i for i in range(len(chunks)) if not _committed(config.out, i)]
    reused = len(chunks) - len(todo)
    if reused:
        log(f"resuming: {reused} of {len(chunks)} chunks already committed")
    assembler = _Assembler(config, len(chunks), list_failures)
    try:
        for index in sorted(set(range(len(chunks))) - set(todo)):
            assembler.committed(index)
        if config.engine == "ray":
            from gmai.data.engine_ray import run_chunks_ray

            run_chunks_ray(config, leakage, chunks, todo, assembler, progress, stop_after_chunks, log)
        else:
            _run_chunks(config, leakage, chunks, todo, assembler, progress, stop_after_chunks)
        stats = assembler.finish(leakage)
    except BaseException:
        assembler.abandon()  # the committed parts stay: a rerun resumes from them
        raise
    if not config.keep_journal:
        shutil.rmtree(config.out / JOURNAL, ignore_errors=True)
    return BuildResult(config.out, stats, len(chunks), reused, time.perf_counter() - start)


def _mp_context() -> Any:
    """fork where it exists (Linux): workers start instantly and share already-imported adapters.

    Pinned because Python 3.14 changes the default to forkserver.
    """
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else methods[0])


def _run_chunks(config: BuildConfig, leakage: LeakageIndex | None, chunks: list[list[tuple[int, Any]]],
                todo: list[int], assembler: _Assembler, show: bool, stop_after: int | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]building"), BarColumn(), MofNCompleteColumn(), TextColumn("items"),
               TimeRemainingColumn())
    total_items = sum(len(chunks[i]) for i in todo)
    with Progress(*columns, disable=not show or not todo) as bar:
        task = bar.add_task("build", total=total_items)
        done = 0
        if config.workers <= 1:
            _init_worker(config, leakage)
            _STATE["png"] = {}
            for index in todo:
                _, _, part = process_chunk(index, chunks[index], keep=True)
                assembler.images.offer(_STATE["png"])  # the PNGs just written: no read-back for Parquet
                _STATE["png"].clear()
                assembler.committed(index, part)
                bar.advance(task, len(chunks[index]))
                done += 1
                if stop_after is not None and done >= stop_after:
                    raise BuildInterrupted(f"stopped after {done} chunks (test hook)")
            return
        with ProcessPoolExecutor(max_workers=config.workers, mp_context=_mp_context(), initializer=_init_worker,
                                 initargs=(config, leakage)) as pool:
            futures = [pool.submit(process_chunk, index, chunks[index]) for index in todo]
            for future in as_completed(futures):
                index, _, _ = future.result()
                assembler.committed(index)  # assembles what is next in line while the workers go on
                bar.advance(task, len(chunks[index]))
                done += 1
                if stop_after is not None and done >= stop_after:
                    for pending in futures:
                        pending.cancel()
                    raise BuildInterrupted(f"stopped after {done} chunks (test hook)")


# ------------------------------------------------------------------------------------------------
# Assembly (sequential, in item order, streamed while workers run)


class _Assembler:
    """Turns committed parts into the outputs, chunk by chunk in item order.

    Chunk i is assembled (dedup, ids, JSONL lines, Parquet row groups) as soon as chunks 0..i are all
    committed, so with several workers the main process does it while later chunks are still being
    processed, and only the last chunk and the closing writes remain after the workers finish.
    Everything goes to ``OUT/.build/assembly`` first and is moved into place by ``finish``, so a build
    killed midway leaves no half-written outputs; a rerun assembles again from chunk 0 (from the parts:
    nothing is recomputed). What is written depends only on the parts and their order.
    """

    def __init__(self, config: BuildConfig, nchunks: int, list_failures: list[dict[str, str]]) -> None:
        self.config, self.nchunks = config, nchunks
        self.staging = config.out / JOURNAL / "assembly"
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        self.dedup = Deduper(config.quality.near_dup_distance)
        self.images = W.ImageBytes(config.out)  # shared: each PNG is read once for all subsets it is in
        self.jsonl: dict[tuple[str, str], Any] = {}  # (subset, split) -> open staging file
        self.parquet: dict[tuple[str, str], W.ParquetShards] = {}
        self.rejects: list[dict[str, str]] = list(list_failures)
        self.kept: list[dict[str, Any]] = []  # kept records' entries, without their samples
        self.records_loaded = 0
        self.generation: Counter = Counter()
        self.templates: Counter = Counter()
        self.ids: Counter = Counter()
        self.samples: Counter = Counter()  # (subset, split, format, generator) -> rows
        self.done: set[int] = set()
        self.in_memory: dict[int, dict[str, Any]] = {}
        self.next = 0
        for subset in SUBSETS:  # the training JSONL files exist even when empty
            self._writers(subset, "train")

    # ---------------------------------------------------------------- streaming
    def committed(self, index: int, part: dict[str, Any] | None = None) -> None:
        """Chunk ``index`` is committed: assemble every chunk that is now next in line.

        ``part`` (optional) is the chunk's part as it was just written, saving the read-back.
        """
        self.done.add(index)
        if part is not None:
            self.in_memory[index] = part
        while self.next in self.done:
            self._feed(self.next)
            self.next += 1

    def _feed(self, index: int) -> None:
        part = self.in_memory.pop(index, None) or pickle.loads(_part_path(self.config.out, index).read_bytes())
        self.generation.update(part["generation"])
        for kind, entry in part["entries"]:
            entry = self._anonymise(entry)
            if kind == "reject":
                self.rejects.append(entry)
                self.records_loaded += entry["stage"] != "read"  # a record that failed a later check
                continue
            self.records_loaded += 1
            self._add_record(entry)
        for shards in self.parquet.values():
            shards.end_chunk()

    def _anonymise(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The one place a ref becomes an output ref: every row, reject and dedup reason uses this one.

        Keyed here, not in the workers, so the journal's parts do not depend on the secret (a resumed
        build with another secret keys every ref with that one)."""
        index = entry.pop("src", None)
        if index is None:  # a source that could not be listed: its ref is its label already
            return entry
        spec, original = self.config.sources[index], entry["ref"]
        entry = {**entry, "ref": output_ref(self.config.deid_secret, spec, original)}
        if "reason" in entry:
            entry["reason"] = scrub_reason(entry["reason"], spec, original)
        return entry

    def _writers(self, subset: str, split: str) -> tuple[Any, W.ParquetShards]:
        key = (subset, split)
        if key not in self.jsonl:
            path = self.staging / W.jsonl_path(Path(), subset, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.jsonl[key] = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 (closed in finish)
            self.parquet[key] = W.ParquetShards(self.staging / "parquet" / subset, split, self.images)
        return self.jsonl[key], self.parquet[key]

    def _add_record(self, entry: dict[str, Any]) -> None:
        reason = self.dedup.check(entry["md5"], entry["phash"], entry["source"], entry["annotation"], entry["ref"])
        if reason:
            self.rejects.append(Reject(entry["ref"], entry["source"], reason, "dedup").to_json())
            return
        samples = entry.pop("samples")
        self.kept.append(entry)
        prefix = (entry["dim"], entry["task"], entry["modality"], entry["source"])
        split = entry["split"]
        for sample in samples:
            self.ids[prefix] += 1
            row = {
                "id": W.sample_id(*prefix, self.ids[prefix]), "image": entry["image"],
                "conversations": sample["conversations"], "subset": sample["subset"], "split": split,
                "source": entry["source"], "modality": entry["modality"], "department": entry["department"],
                "organ": entry["organ"], "task": entry["task"], "labels": entry["labels"],
                "format": sample["format"], "templates": sample["templates"],
                "question_type": sample["question_type"], "answer_type": sample["answer_type"],
                "answer": sample["answer"], "options": sample["options"], "generator": sample["generator"],
                "ref": entry["ref"],
            }
            jsonl, parquet = self._writers(sample["subset"], split)
            jsonl.write(W.ROW_ENCODER.encode(row) + "\n")
            parquet.add(row)
            self.samples[(sample["subset"], split, sample["format"], sample["generator"])] += 1
            for template in sample["templates"]:  # Counter.update's Mapping check costs more than a 2-4 item loop
                self.templates[template] += 1

    # ---------------------------------------------------------------- closing
    def abandon(self) -> None:
        """Close the staging files of a build that stopped midway (they are redone by the next run)."""
        for handle in self.jsonl.values():
            handle.close()
        for shards in self.parquet.values():
            shards.abandon()

    def finish(self, leakage: LeakageIndex | None) -> dict[str, Any]:
        if self.next != self.nchunks:
            raise RuntimeError(f"assembly stopped at chunk {self.next} of {self.nchunks}")
        config, out = self.config, self.config.out
        for key in sorted(self.jsonl):
            self.jsonl[key].close()
            self.parquet[key].close()
        for stale in ("heldout", "parquet", "plots"):
            shutil.rmtree(out / stale, ignore_errors=True)
        for subset in SUBSETS:
            os.replace(self.staging / W.jsonl_path(Path(), subset, "train"), W.jsonl_path(out, subset, "train"))
        for folder in ("heldout", "parquet"):  # made only when they have rows
            if (self.staging / folder).is_dir():
                os.replace(self.staging / folder, out / folder)
        stats = _statistics(config, self, leakage)
        # With more than one core, the chart (~1 s of matplotlib) is drawn by a forked side process meanwhile.
        side = config.workers > 1 and config.plots and _mp_context().get_start_method() == "fork"
        plotter = _side_process(W.write_plots, out, stats) if side else None
        W.write_jsonl(out / "rejects.jsonl", self.rejects)
        _remove_unreferenced_images(out, {p for e in self.kept for p in _image_paths(e)})
        if plotter is not None:
            _join(plotter, out / "plots")
            plots = sorted(str(p.relative_to(out)) for p in (out / "plots").glob("*.png"))
        else:
            plots = W.write_plots(out, stats) if config.plots else []
        W.write_card(out, stats, plots)
        W.write_atomic(out / "stats.json", (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode())
        shutil.rmtree(self.staging, ignore_errors=True)
        return stats


def _side_process(target: Callable[..., Any], *args: Any) -> Any:
    process = _mp_context().Process(target=target, args=args)
    process.start()
    return process


def _join(process: Any, what: Path) -> None:
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"writing {what} failed (exit code {process.exitcode})")


_OUR_IMAGE = re.compile(r"^([0-9a-f]{32}\.png|\..+\.\d+\.tmp)$")  # <md5>.png, or write_atomic debris


def _remove_unreferenced_images(out: Path, keep: set[str]) -> None:
    """Images of deduplicated records, and leftovers of killed runs, must not stay behind.

    Only files named the way this module names them are touched, in case OUT/images holds anything else.
    """
    folder = out / "images"
    if not folder.is_dir():
        return
    # os.walk with plain strings: one directory listing per folder, no Path object per image
    for here, _, names in os.walk(folder, topdown=False):  # a folder's subfolders come before it
        relative = os.path.relpath(here, out)
        for name in names:
            path = os.path.join(here, name)
            if _OUR_IMAGE.match(name) and os.path.join(relative, name) not in keep and os.path.isfile(path):
                os.unlink(path)
        if here != str(folder) and not os.listdir(here):
            os.rmdir(here)


def _count(values: list[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def _sum_by(counts: Counter, key: Callable[[tuple[str, ...]], str]) -> dict[str, int]:
    total: Counter = Counter()
    for k, n in counts.items():
        total[key(k)] += n
    return dict(sorted(total.items()))


def _statistics(config: BuildConfig, state: _Assembler, leakage: LeakageIndex | None) -> dict[str, Any]:
    read_rejects = sum(1 for r in state.rejects if r["stage"] == "read")
    inputs = state.records_loaded + read_rejects
    by_subset_split: dict[str, dict[str, int]] = {}
    for (subset, split), n in _sum_by(state.samples, lambda k: k[:2]).items():
        by_subset_split.setdefault(subset, {})[split] = n
    kept = state.kept
    synthetic = sorted({e["source"] for e in kept if e["synthetic"]})
    leak_rejects = sum(1 for r in state.rejects if r["stage"] == "leakage")
    return {
        "generator": config.generator, "seed": config.seed,
        "sources": [s.label() for s in config.sources],
        "deid_options": list(DeidOptions.with_options(config.deid_secret, config.deid_options).enabled()),
        "inputs": inputs, "records_loaded": state.records_loaded, "records_kept": len(kept),
        "rejects": len(state.rejects), "accounting_ok": inputs == len(kept) + len(state.rejects),
        "samples": sum(state.samples.values()),
        "samples_by_subset": _sum_by(state.samples, lambda k: k[0]),
        "samples_by_subset_split": by_subset_split,
        "samples_by_format": _sum_by(state.samples, lambda k: k[2]),
        "samples_by_generator": _sum_by(state.samples, lambda k: k[3]),
        "records_by_split": _count([e["split"] for e in kept]),
        "records_by_modality": _count([e["modality"] for e in kept]),
        "records_by_department": _count([e["department"] or "(none)" for e in kept]),
        "records_by_task": _count([f"{e['dim']} {e['task']}" for e in kept]),
        "records_by_source": _count([e["source"] for e in kept]),
        "synthetic_sources": synthetic,
        "real_sources": sorted({e["source"] for e in kept} - set(synthetic)),
        "templates": W.template_distribution(state.templates),
        "generation": dict(sorted(state.generation.items())),
        "rejects_by_stage": _count([r["stage"] for r in state.rejects]),
        "rejects_by_reason": _count([f"{r['stage']}: {W.reason_kind(r['reason'])}" for r in state.rejects]),
        "leakage": {
            # folder names only: a benchmark's absolute path names the machine and user that ran the build
            "folders": [Path(f).name for f in leakage.folders] if leakage else [],
            "benchmark_images": leakage.images if leakage else 0,
            "unreadable": leakage.unreadable if leakage else [], "excluded": leak_rejects,
            "phash_distance": config.quality.leak_distance,
        },
    }


# ------------------------------------------------------------------------------------------------
# Configuration files


CONFIG_KEYS = {"sources", "generator", "generator_options", "exclude_benchmarks", "seed", "max_side", "engine",
               "ray_address", "deid_options"}


def load_config_file(path: Path) -> dict[str, Any]:
    """YAML: ``sources: [{kind, path, options: {...}} | "KIND:PATH?..."]`` plus any build option."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with a 'sources' list")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(CONFIG_KEYS)}")
    specs = []
    for entry in data.get("sources", []) or []:
        if isinstance(entry, str):
            specs.append(SourceSpec.parse(entry))
        elif isinstance(entry, dict) and "kind" in entry and "path" in entry:
            get_source(str(entry["kind"]))
            options = {str(k): ",".join(map(str, v)) if isinstance(v, list) else str(v)
                       for k, v in (entry.get("options") or {}).items()}
            specs.append(SourceSpec(str(entry["kind"]), str(entry["path"]), options))
        else:
            raise ValueError(f"{path}: each source needs 'kind' and 'path' (or a KIND:PATH string), got {entry!r}")
    data["sources"] = specs
    return data


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))
