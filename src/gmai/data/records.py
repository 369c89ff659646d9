"""The normalised record: the only contract between sources, quality control and generators.

The paper normalises every sample of every specialist dataset to
``<image, modality, label, department, bbox (optional)>``. We keep the same idea with a few more
fields that the text generators need (mask-derived facts, VQA pairs, reports).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

TASKS = ("classification", "segmentation", "detection", "vqa", "report", "perception", "conversation", "volume")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in normalised [0, 1] coordinates (x1 < x2, y1 < y2)."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    def rounded(self, ndigits: int = 3) -> list[float]:
        return [round(v, ndigits) for v in (self.x1, self.y1, self.x2, self.y2)]


@dataclass(frozen=True)
class MaskFacts:
    """What a segmentation mask says about one label, in words a caption can use."""

    label: str
    box: Box  # tight bounding box of all components, normalised
    area_fraction: float  # foreground pixels / image pixels
    centroid: tuple[float, float]  # (x, y), normalised
    location: str  # coarse phrase: "left upper", "central", ...
    components: int  # connected-component count


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    answer_type: str = "open"  # "open" | "closed" | "choice"


@dataclass
class Record:
    """One image with everything its annotation says.

    ``image`` is a 2-D (grayscale) or HxWx3 uint8 array, already windowed/normalised for display.
    ``ref`` names the input it came from (file path, plus slice index or frame for volumes); the build
    writes it out only as a keyed hash (``gmai.data.build.output_ref``), never as a path.
    """

    image: np.ndarray
    ref: str
    source: str  # dataset name, e.g. "synthetic-lesion-cls" or "vqa-rad"
    task: str  # one of TASKS: the source task the annotation came from
    modality: str  # "CT", "MR", "X-ray", "ultrasound", "fundus", "pathology", ...
    split: str = "train"
    labels: list[str] = field(default_factory=list)
    label_set: list[str] = field(default_factory=list)  # the dataset's whole label vocabulary
    department: str = ""
    organ: str = ""
    boxes: list[Box] = field(default_factory=list)
    mask_facts: list[MaskFacts] = field(default_factory=list)
    qa: list[QAPair] = field(default_factory=list)
    report: str = ""
    conversations: list[dict[str, str]] = field(default_factory=list)  # LLaVA passthrough
    meta: dict[str, Any] = field(default_factory=dict)
    # A sequence of images shown together (a volume as N slices, task "volume"); ``image`` is then the first.
    images: list[np.ndarray] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """Everything but the pixels, JSON-ready (for manifests, LLM prompts, caches)."""
        d = asdict(self)
        d.pop("image")
        d["image_shape"] = list(self.image.shape)
        if d.pop("images"):
            d["images_shape"] = [list(im.shape) for im in self.images]
        return d


@dataclass(frozen=True)
class Reject:
    """An input that did not become a record, and why. Every input ends up a Record or a Reject."""

    ref: str
    source: str
    reason: str
    stage: str = "read"  # "read" | "quality" | "dedup" | "leakage" | "generate"

    def to_json(self) -> dict[str, str]:
        return asdict(self)
