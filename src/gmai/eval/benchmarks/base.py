"""The benchmark item type, lazy images, the loader registry, and shared helpers."""

from __future__ import annotations

import base64
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gmai.eval.scoring import YES, NO, normalize_text


class MissingBenchmarkFile(FileNotFoundError):
    """A benchmark file is not where the loader looked: says what to fetch and where to put it."""


class ImageLoadError(RuntimeError):
    """An item's image is missing or cannot be decoded (counted as a failed item, never skipped)."""


class UnknownSplit(ValueError):
    """A split name the benchmark's release does not have: the message lists the valid ones."""


class Loaded(list):
    """A loader's items (a plain list) plus ``failures``: one ``{"qid", "reason"}`` per release row that
    cannot be scored (no option matches the gold, the gold is withheld, ...). Such rows are never
    silently dropped: reports count and list them, and the benchmark goes on without them."""

    def __init__(self, items=(), failures=None):
        super().__init__(items)
        self.failures: list[dict[str, str]] = list(failures or [])

    def fail(self, qid: Any, reason: str) -> None:
        self.failures.append({"qid": str(qid), "reason": reason})


@dataclass
class ImageRef:
    """A lazy image: a file path, encoded bytes (parquet), or a base64 cell of a TSV row (``tsv`` file,
    the row's byte ``offset``, the ``column`` index): read and decoded on demand, so a benchmark's
    images are held in memory one batch at a time, never all at once."""

    path: str | None = None
    data: bytes | None = None
    name: str = ""  # what the image is called in the source (for messages and galleries)
    tsv: str | None = None
    offset: int = 0
    column: int = -1

    @classmethod
    def from_base64(cls, text: str, name: str = "") -> "ImageRef":
        return cls(data=base64.b64decode(text), name=name)

    def describe(self) -> str:
        return self.path or self.name or "<inline image>"

    def load(self, max_side: int = 0):
        """The image as RGB; with ``max_side`` > 0 a longer side above it is downscaled exactly as
        ``gmai data build --max-side`` does (LANCZOS, reducing_gap 2.0), so a model trained on a build
        sees evaluation images prepared the same way."""
        from PIL import Image, UnidentifiedImageError

        try:
            if self.data is not None:
                image = Image.open(io.BytesIO(self.data))
            elif self.tsv:
                image = Image.open(io.BytesIO(base64.b64decode(read_tsv_row(self.tsv, self.offset)[self.column])))
            elif self.path:
                if not Path(self.path).is_file():
                    raise ImageLoadError(f"missing image file: {self.path}")
                image = Image.open(self.path)
            else:
                raise ImageLoadError(f"no image data for {self.name or 'item'}")
            image.load()
        except (OSError, UnidentifiedImageError, ValueError, IndexError) as err:
            raise ImageLoadError(f"cannot decode image {self.describe()}: {err}") from err
        image = image.convert("RGB")
        if max_side > 0 and max(image.size) > max_side:
            scale = max_side / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        return image


@dataclass
class BenchItem:
    """One benchmark question.

    ``answer`` is the gold: "yes"/"no" text for closed questions, free text for open ones, the
    option letter for multiple choice (``options`` maps letters to texts). ``answer_type`` is the
    dataset's own type (closed | open | choice); scoring rules may re-derive it (see scoring).
    """

    qid: str
    question: str
    answer: str
    answer_type: str
    images: list[ImageRef] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    benchmark: str = ""
    split: str = "test"
    organ: str = ""
    modality: str = ""
    question_type: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def load_images(self, max_side: int = 0) -> list:
        return [ref.load(max_side) for ref in self.images]

    def breakdown(self) -> dict[str, str]:
        return {"answer_type": self.answer_type, "organ": self.organ, "modality": self.modality,
                "question_type": self.question_type}


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    loader: Callable[..., list[BenchItem]]
    description: str
    fetch: str  # what to download and how to lay it out
    splits: tuple[str, ...] = ("test",)
    has_train: bool = False


REGISTRY: dict[str, BenchmarkSpec] = {}


def register(name: str, description: str, fetch: str, splits: tuple[str, ...] = ("test",),
             has_train: bool = False):
    def wrap(fn):
        REGISTRY[name] = BenchmarkSpec(name, fn, description, fetch, splits, has_train)
        return fn
    return wrap


def missing(name: str, path: Path, what: str) -> MissingBenchmarkFile:
    spec = REGISTRY.get(name)
    hint = spec.fetch if spec else ""
    return MissingBenchmarkFile(f"{name}: {what} not found under {path}. {hint}")


def require_dir(name: str, path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise missing(name, p, "the benchmark folder")
    return p


def check_split(name: str, split: str, valid: tuple[str, ...] | dict) -> str:
    """``split`` itself when the release has it, else :class:`UnknownSplit` naming the valid ones."""
    if split not in valid:
        raise UnknownSplit(f"{name}: unknown split {split!r}; this release has: {', '.join(valid)}")
    return split


def closed_or_open(answer: str) -> str:
    """The type for datasets without one: closed when the gold is yes/no."""
    return "closed" if normalize_text(answer) in (YES, NO) else "open"


def read_parquet_rows(files: list[Path]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for f in sorted(files):
        try:
            rows.extend(pq.read_table(f).to_pylist())
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise ValueError(f"cannot read parquet file {f}: {err}") from err
    return rows


def parquet_image(value: Any, name: str) -> ImageRef:
    """The HF ``Image`` feature as stored in parquet: {"bytes": ..., "path": ...}."""
    if isinstance(value, dict) and value.get("bytes"):
        return ImageRef(data=value["bytes"], name=value.get("path") or name)
    if isinstance(value, dict) and value.get("path"):
        return ImageRef(path=value["path"], name=name)
    if isinstance(value, (bytes, bytearray)):
        return ImageRef(data=bytes(value), name=name)
    return ImageRef(name=name)  # no data: loading raises ImageLoadError, counted as a failure


def find_split_parquet(root: Path, split: str) -> list[Path]:
    """HF dataset layout: ``data/<split>-00000-of-0000N-*.parquet`` shards (or at the top level)."""
    found = []
    for folder in (root / "data", root):
        found = sorted(folder.glob(f"{split}-*.parquet")) + sorted(folder.glob(f"{split}.parquet"))
        if found:
            break
    return found


def jsonl_rows(path: str | Path):
    """(line number, row) for each non-blank line of a JSONL file; a line that is not JSON is a
    ValueError naming the file and the line. The one JSONL reader of eval and rl."""
    import json

    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not valid JSON ({err.msg})") from None


def load_json(path: Path, name: str) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: {path} is not valid JSON: {err}") from err


class _NoGlobals(pickle.Unpickler):
    """Unpickles plain containers only: a release pickle that names any class or function is refused,
    so reading one cannot run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain lists/dicts/strings are read")


def load_plain_pickle(path: Path, name: str) -> Any:
    try:
        with path.open("rb") as fh:
            return _NoGlobals(fh).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(f"{name}: cannot read {path}: {err}") from err


class _CountingLines:
    """Decoded lines of a binary file that remember the byte position after the last line handed out
    (``csv.reader`` pulls exactly the lines of one record at a time, so this is where the next starts)."""

    def __init__(self, fh):
        self.fh, self.pos = fh, fh.tell()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.fh.readline()
        if not line:
            raise StopIteration
        self.pos += len(line)
        return line.decode("utf-8")


def _tsv_reader(lines: _CountingLines):
    import csv
    import sys

    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's default limit
    return csv.reader(lines, delimiter="\t")


def iter_tsv_rows(path: str | Path):
    """(header, then (byte offset, cells) per record) of a TSV, streamed: one record in memory at a time."""
    with open(path, "rb") as fh:
        lines = _CountingLines(fh)
        reader = _tsv_reader(lines)
        header = next(reader, None)
        if header is None:
            return
        yield header
        start = lines.pos
        for record in reader:
            yield start, record
            start = lines.pos


def read_tsv_row(path: str | Path, offset: int) -> list[str]:
    """The cells of the TSV record that starts at byte ``offset``."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        record = next(_tsv_reader(_CountingLines(fh)), None)
    if record is None:
        raise ValueError(f"no TSV record at byte {offset} of {path}")
    return record
