"""The benchmark item type, lazy images, the loader registry, and shared helpers."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gmai.eval.scoring import YES, NO, normalize_text


class MissingBenchmarkFile(FileNotFoundError):
    """A benchmark file is not where the loader looked: says what to fetch and where to put it."""


class ImageLoadError(RuntimeError):
    """An item's image is missing or cannot be decoded (counted as a failed item, never skipped)."""


@dataclass
class ImageRef:
    """A lazy image: a file path, or encoded bytes (parquet / base64 TSV), decoded on demand."""

    path: str | None = None
    data: bytes | None = None
    name: str = ""  # what the image is called in the source (for messages and galleries)

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
            elif self.path:
                if not Path(self.path).is_file():
                    raise ImageLoadError(f"missing image file: {self.path}")
                image = Image.open(self.path)
            else:
                raise ImageLoadError(f"no image data for {self.name or 'item'}")
            image.load()
        except (OSError, UnidentifiedImageError, ValueError) as err:
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
    """HF dataset layout: ``data/<split>-00000-of-00001-*.parquet`` (or at the top level)."""
    aliases = {"val": "validation", "dev": "validation"}
    split = aliases.get(split, split)
    found = []
    for folder in (root / "data", root):
        found = sorted(folder.glob(f"{split}-*.parquet")) + sorted(folder.glob(f"{split}.parquet"))
        if found:
            break
    return found


def load_json(path: Path, name: str) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: {path} is not valid JSON: {err}") from err
