"""Everything the data engine writes: images, JSONL, Parquet, rejects, statistics, card, plots.

Layout of a build folder ``OUT``::

    OUT/MM-Caption.jsonl, MM-Instruct.jsonl, MM-Percept.jsonl   training split (LLaVA/XTuner JSONL)
    OUT/heldout/<split>/<subset>.jsonl                           val/test records, kept apart
    OUT/images/<source>/<md5>.png                                PNG, path relative to OUT in "image"
                                                                 (a list of paths for a multi-image row)
    OUT/parquet/<subset>/<split>-00000-of-0000N.parquet          same rows, image bytes embedded
    OUT/rejects.jsonl                                            every input that did not make it, and why
    OUT/stats.json, OUT/README.md (dataset card), OUT/plots/*.png

Every JSONL row: ``{"id", "image", "conversations", "subset", "split", "source", ...metadata}``
with ids ``<2d|3d>#<task>#<modality>#<source>#<n>`` as in GMAI-VL-5.5M. Nothing here depends on the
worker count or the wall clock, so two builds of the same inputs are byte-identical.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gmai.data.generate import SUBSETS

ROW_FIELDS = ("id", "image", "conversations", "subset", "split", "source", "modality", "department", "organ",
              "task", "labels", "format", "templates", "question_type", "answer_type", "answer", "options",
              "generator", "ref")
LIST_FIELDS = {"labels", "templates", "options"}
TASK_CODES = {"classification": "cls", "segmentation": "seg", "detection": "det", "vqa": "vqa", "report": "rep",
              "perception": "per", "conversation": "conv", "volume": "vol"}
PARQUET_ROWS_PER_SHARD = 2000
PARQUET_ROW_GROUP_ROWS = 100  # rows buffered before a row group is written (at a chunk's end)


# ------------------------------------------------------------------------------------------------
# Files


def write_atomic(path: Path | str, data: bytes) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half a file behind."""
    folder, name = os.path.split(os.fspath(path))  # plain strings: called once per image, pathlib costs show
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    try:  # a bare descriptor: open()'s file and buffer objects cost more than the write of a whole PNG
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:  # the folder is made only when missing: one image per call, most folders exist
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 HxW / HxWx3 / HxWx4 -> PNG bytes. Level 1: ~3x faster than 6 for ~10% larger files."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


@functools.lru_cache(maxsize=4096)  # a build has a handful of sources/modalities, named on every sample
def slug(text: str) -> str:
    """Lower-case, safe for file names and the '#'-separated ids."""
    return re.sub(r"[^a-z0-9.+-]+", "-", text.strip().lower()).strip("-") or "unknown"


def image_relpath(source: str, md5: str) -> str:
    return f"images/{slug(source)}/{md5}.png"


@functools.lru_cache(maxsize=4096)
def _id_prefix(dim: str, task: str, modality: str, source: str) -> str:
    return f"{dim}#{TASK_CODES.get(task, slug(task))}#{slug(modality)}#{slug(source)}#"


def sample_id(dim: str, task: str, modality: str, source: str, n: int) -> str:
    return f"{_id_prefix(dim, task, modality, source)}{n}"


def jsonl_path(out: Path, subset: str, split: str) -> Path:
    return out / f"{subset}.jsonl" if split == "train" else out / "heldout" / split / f"{subset}.jsonl"


# One encoder for every row: json.dumps with any option builds a new encoder per call (same bytes either way).
ROW_ENCODER = json.JSONEncoder(ensure_ascii=False)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [ROW_ENCODER.encode(row) for row in rows]
    write_atomic(path, ("\n".join(lines) + "\n").encode() if lines else b"")
    return len(lines)


# ------------------------------------------------------------------------------------------------
# Parquet


def _features() -> Any:
    from datasets import Features, Image, List, Value

    columns: dict[str, Any] = {}
    for name in ROW_FIELDS:
        if name == "image":
            columns[name] = Image()
        elif name == "conversations":
            columns[name] = List({"from": Value("string"), "value": Value("string")})
        elif name in LIST_FIELDS:
            columns[name] = List(Value("string"))
        else:
            columns[name] = Value("string")
    columns["images"] = List(Value("string"))  # every image of a multi-image row (a volume as slices); else []
    return Features(columns)


class ImageBytes:
    """The PNG files' bytes for the Parquet shards, each file read once for all subsets while they fit.

    Every record's samples land in several subsets (caption, instruct, percept), so without a shared
    cache every image would be read from disk once per subset. Past ``limit`` bytes the cache starts
    over (memory stays bounded on large builds; the output does not depend on it).
    """

    def __init__(self, out: Path, limit: int = 256 << 20) -> None:
        self.out, self.limit, self.size = out, limit, 0
        self.cache: dict[str, bytes] = {}

    def __call__(self, relpath: str) -> bytes:
        data = self.cache.get(relpath)
        if data is None:
            data = (self.out / relpath).read_bytes()
            self._keep(relpath, data)
        return data

    def offer(self, files: dict[str, bytes]) -> None:
        """Bytes of files this process has just written (the same bytes as on disk): saves reading them back."""
        for relpath, data in files.items():
            self._keep(relpath, data)

    def _keep(self, relpath: str, data: bytes) -> None:
        if self.size + len(data) > self.limit:
            self.cache.clear()
            self.size = 0
        self.cache[relpath] = data
        self.size += len(data)


# PNG bytes are already deflated: Snappy over them saves <1% and costs about as much as writing the table.
# The dictionary encoding stays on: it stores an image once per row group however many samples share it.
def _leaf_paths(name: str, kind: Any) -> list[str]:
    """Parquet column paths of an Arrow field ('image.bytes', 'conversations.list.element.from', ...)."""
    import pyarrow as pa

    if pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        return [p for f in fields for p in _leaf_paths(f"{name}.{f.name}", f.type)]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _leaf_paths(f"{name}.list.element", kind.value_type)
    return [name]


def _parquet_compression(schema: Any) -> dict[str, str]:
    """Snappy for every column but the PNG bytes (a per-column dict leaves unnamed columns uncompressed)."""
    paths = [p for field in schema for p in _leaf_paths(field.name, field.type)]
    return {p: "none" if p == "image.bytes" else "snappy" for p in paths}


class ParquetShards:
    """The rows of one (subset, split) streamed into Parquet shards as they are assembled.

    Shards hold at most PARQUET_ROWS_PER_SHARD rows; within a shard, buffered rows become a row group
    when ``end_chunk`` finds at least PARQUET_ROW_GROUP_ROWS of them (and when a shard fills). Row groups
    of ~100 rows are what ``datasets`` itself writes for image columns, and they let the build write
    Parquet while workers are still busy instead of all at the end. The layout depends only on the row
    sequence and where chunks end, never on timing, so the bytes do not depend on the worker count.

    Shards are written as ``<folder>/<split>-<k>.parquet`` and only get their final
    ``<split>-<k>-of-<n>.parquet`` names in ``close`` (n is known once the last row is in).
    """

    def __init__(self, folder: Path, split: str, images: ImageBytes) -> None:
        self.folder, self.split, self.images = folder, split, images
        self.rows: list[dict[str, Any]] = []  # buffered rows, turned into columns when a row group is written
        self.shard_rows = 0  # rows already written to the open shard
        self.staged: list[Path] = []
        self.writer: Any = None

    def add(self, row: dict[str, Any]) -> None:
        """Buffer one row (a dict with every ROW_FIELDS key; it must not be changed afterwards)."""
        self.rows.append(row)

    def end_chunk(self) -> None:
        if len(self.rows) >= PARQUET_ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        while self.rows:
            take = min(len(self.rows), PARQUET_ROWS_PER_SHARD - self.shard_rows)
            head, self.rows = self.rows[:take], self.rows[take:]
            # one list per column at once: cheaper than appending 19 values for every row as it arrives
            columns = {name: [row[name] for row in head] for name in ROW_FIELDS}
            columns["images"] = [list(v) if isinstance(v, list) else [] for v in columns["image"]]
            columns["image"] = [v[0] if isinstance(v, list) else v for v in columns["image"]]  # the first one
            self._write_group(columns)
            if self.shard_rows == PARQUET_ROWS_PER_SHARD:
                self.writer.close()
                self.writer, self.shard_rows = None, 0

    def _write_group(self, columns: dict[str, list[Any]]) -> None:
        import pyarrow.parquet as pq

        schema = _arrow_schema()
        if self.writer is None:
            path = self.folder / f".{self.split}-{len(self.staged):05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.staged.append(path)
            self.writer = pq.ParquetWriter(path, schema, compression=_parquet_compression(schema))
        self.writer.write_table(_arrow_table(schema, columns, self.images), row_group_size=len(columns["id"]))
        self.shard_rows += len(columns["id"])

    def abandon(self) -> None:
        """Close the open shard of a build that stopped midway (its staged files are redone by the next run)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def close(self) -> list[Path]:
        """Write what is buffered, close, and give the shards their final names. Returns their paths."""
        self.flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        count = len(self.staged)
        final = [self.folder / f"{self.split}-{k:05d}-of-{count:05d}.parquet" for k in range(count)]
        for staged, path in zip(self.staged, final):
            os.replace(staged, path)
        return final


@functools.cache
def _arrow_schema() -> Any:
    """The Arrow schema of the ``datasets`` features (built once per process: it is the same every time)."""
    return _features().arrow_schema


def _arrow_table(schema: Any, columns: dict[str, list[Any]], images: ImageBytes) -> Any:
    """Column lists -> Arrow table, one typed array per column (no per-row dicts, no type inference)."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        values = columns[field.name]
        if field.name == "image":  # HF Image feature: struct<bytes, path>
            kinds = list(field.type)
            arrays.append(pa.StructArray.from_arrays(
                [_binary_array([images(v) for v in values], kinds[0].type), pa.array(values, kinds[1].type)],
                fields=kinds))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _binary_array(values: list[bytes], kind: Any) -> Any:
    """The same Arrow array as ``pa.array(values, kind)`` for a binary column, built from one joined buffer.

    ``pa.array`` appends the PNGs one by one into a growing buffer (~2x the copying); the column is
    the bulk of a row group's bytes. Above 2 GiB (int32 offsets) it is left to ``pa.array``.
    """
    import pyarrow as pa

    lengths = np.fromiter(map(len, values), np.int64, len(values))
    total = int(lengths.sum())
    if kind != pa.binary() or total >= 1 << 31:
        return pa.array(values, kind)
    offsets = np.zeros(len(values) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


# ------------------------------------------------------------------------------------------------
# Statistics, card, plots


def reason_kind(reason: str) -> str:
    """'image too small (20x20 px, ...)' -> 'image too small': groups rejects for the card."""
    text = re.sub(r"\(.*?\)|\[.*?\]|'[^']*'|\"[^\"]*\"", "", reason)
    text = re.split(r" of | for |:", text)[0]
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return " ".join(text.split())[:80] or "unspecified"


def template_distribution(counts: Counter) -> dict[str, dict[str, Any]]:
    """Per template family: uses, number of variants seen, and the share of the most used one."""
    families: dict[str, Counter] = {}
    for template_id, n in counts.items():
        family, _, _ = template_id.rpartition(".")
        families.setdefault(family or template_id, Counter())[template_id] = n
    table = {}
    for family in sorted(families):
        uses = families[family]
        total = sum(uses.values())
        top_id, top_n = max(sorted(uses.items()), key=lambda kv: kv[1])
        table[family] = {"uses": total, "variants_used": len(uses), "max_share": round(top_n / total, 4),
                         "most_used": top_id, "counts": dict(sorted(uses.items()))}
    return table


def _table(title: str, counts: dict[str, int], header: str = "value") -> list[str]:
    total = sum(counts.values()) or 1
    lines = [f"### {title}", "", f"| {header} | count | share |", "|---|---:|---:|"]
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {key or '(none)'} | {n} | {100 * n / total:.1f}% |")
    return lines + [""]


def _deid_line(options: list[str]) -> str:
    """Which PS3.15 Options the DICOM de-identification ran with (each one lets more of the header through)."""
    from gmai.data.deid import EDITION, OPTIONS

    on = ", ".join(f"{OPTIONS[name][2]} (`{name}`)" for name in options) or "none"
    return f"- DICOM de-identification: PS3.15 {EDITION} Table E.1-1 Basic Profile; Options on: **{on}**"


def write_card(out: Path, stats: dict[str, Any], plots: list[str]) -> None:
    configs = ["---", "configs:"]
    for subset, splits in sorted(stats["samples_by_subset_split"].items()):
        configs += [f"- config_name: {subset}", "  data_files:"]
        for split in sorted(splits):
            configs += [f"  - split: {split}", f"    path: parquet/{subset}/{split}-*.parquet"]
    configs += ["---", ""]
    synthetic = stats["synthetic_sources"]
    lines = configs + [
        "# Dataset card: grounded medical image-text data (gmai data engine)", "",
        "Built by `gmai data build` following the GMAI-VL-5.5M recipe: every specialist-dataset sample is",
        "normalised to one record `<image, modality, labels, department, boxes, mask facts, source, split>` and the",
        f"text is generated *from the annotation* (generator: `{stats['generator']}`, seed {stats['seed']}).", "",
        f"- inputs: **{stats['inputs']}** (records read + read failures); kept records: **{stats['records_kept']}**;"
        f" rejects: **{stats['rejects']}** (inputs = kept + rejects: {stats['accounting_ok']})",
        f"- samples: **{stats['samples']}** in {len(stats['samples_by_subset'])} subsets",
        f"- synthetic sources: {', '.join(synthetic) if synthetic else 'none'}"
        + (" - **these images are computer-generated phantoms, not patient data**" if synthetic else ""),
        f"- real (non-synthetic) sources: {', '.join(stats['real_sources']) or 'none'}",
        _deid_line(stats.get("deid_options", [])), "",
        "## Layout", "",
        "- `<subset>.jsonl`: training split, LLaVA/XTuner JSONL (`id`, `image` relative to this folder, `conversations`,"
        " metadata). Ids: `<2d|3d>#<task>#<modality>#<source>#<n>`.",
        "- `heldout/<split>/<subset>.jsonl`: records whose source split is val/test - excluded from training;"
        " single-turn Q&A rows carry `answer_type` (open/closed/choice) and the gold `answer` for evaluation.",
        "- `parquet/<subset>/<split>-*.parquet`: the same rows with the PNG bytes embedded;"
        " `datasets.load_dataset(\"parquet\", data_dir=\"parquet/MM-Caption\")` or `load_dataset(OUT, \"MM-Caption\")`.",
        "- `images/<source>/<md5 of pixels>.png`; `rejects.jsonl` (ref, source, reason, stage); `stats.json`.",
        "- Boxes are written `<box>[[x1,y1,x2,y2]]</box>`, coordinates normalised to [0, 1] with 3 decimals.", "",
        "## Counts", "",
    ]
    lines += _table("Samples by subset", stats["samples_by_subset"], "subset")
    split_rows = {f"{s} / {sp}": n for s, d in stats["samples_by_subset_split"].items() for sp, n in d.items()}
    lines += _table("Samples by subset and split", split_rows, "subset / split")
    lines += _table("Records by split", stats["records_by_split"], "split")
    lines += _table("Records by modality", stats["records_by_modality"], "modality")
    lines += _table("Records by department", stats["records_by_department"], "department")
    lines += _table("Records by source task", stats["records_by_task"], "task")
    lines += _table("Records by source", stats["records_by_source"], "source")
    lines += _table("Samples by format", stats["samples_by_format"], "format")
    lines += ["## Template usage", "",
              "Share of the most used phrasing within each template family (lower = more varied).", "",
              "| family | uses | variants used | most used | max share |", "|---|---:|---:|---|---:|"]
    for family, row in stats["templates"].items():
        lines.append(f"| {family} | {row['uses']} | {row['variants_used']} | {row['most_used']} | {row['max_share']:.2f} |")
    lines += ["", "## Generation", ""]
    lines += _table("Samples by generator (passthrough = the dataset's own text; template-fallback = LLM reply"
                    " failed verification)", stats["samples_by_generator"], "generator")
    if stats["generation"]:
        lines += ["Generator events (LLM requests, cache hits, verification failures by kind, fallbacks):", "",
                  "```", json.dumps(stats["generation"], indent=1, sort_keys=True), "```", ""]
    lines += ["## Rejects", ""]
    lines += _table("By stage", stats["rejects_by_stage"], "stage")
    lines += _table("By reason", stats["rejects_by_reason"], "reason")
    leak = stats["leakage"]
    lines += ["## Leakage check", ""]
    if leak["folders"]:
        lines += [f"Benchmark folders: {', '.join(leak['folders'])} ({leak['benchmark_images']} images hashed,"
                  f" {len(leak['unreadable'])} unreadable).",
                  f"**{leak['excluded']} training records excluded** because their image matches a benchmark image"
                  " (MD5 of decoded pixels, or perceptual hash within "
                  f"{leak['phash_distance']} bits); each is listed in `rejects.jsonl` with stage `leakage`.", ""]
    else:
        lines += ["No benchmark folder was given (`--exclude-benchmark`): no leakage check was run.", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    write_atomic(out / "README.md", "\n".join(lines).encode())


def write_plots(out: Path, stats: dict[str, Any]) -> list[str]:
    """One PNG with a bar chart per distribution (one figure: savefig dominates the cost)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = {
        "records by modality": stats["records_by_modality"], "records by department": stats["records_by_department"],
        "records by source task": stats["records_by_task"], "records by split": stats["records_by_split"],
        "samples by subset": stats["samples_by_subset"], "samples by format": stats["samples_by_format"],
        "rejects by reason": stats["rejects_by_reason"],
        "template families: max share": {k: v["max_share"] for k, v in stats["templates"].items()},
    }
    charts = {name: counts for name, counts in charts.items() if counts}
    if not charts:
        return []
    rows = [sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:25] for c in charts.values()]
    heights = [0.22 * len(r) + 0.6 for r in rows]
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, sum(heights) + 0.5), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, name, items in zip(axes[:, 0], charts, rows):
        ax.barh([str(k)[:48] or "(none)" for k, _ in items][::-1], [v for _, v in items][::-1], color="#4477aa")
        ax.set_title(name, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    # fixed margins: tight_layout measured every label and cost more than drawing the chart
    fig.subplots_adjust(left=0.42, right=0.97, top=1 - 0.35 / fig.get_figheight(), bottom=0.25 / fig.get_figheight(),
                        hspace=0.9)
    path = out / "plots" / "distributions.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72, metadata={"Software": None})
    plt.close(fig)
    return [str(path.relative_to(out))]
