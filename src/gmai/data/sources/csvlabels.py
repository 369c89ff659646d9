"""``csv``: a CSV of image paths and labels (``path,label``; header required).

Accepted column names: ``path``/``image``/``file``/``filename`` and ``label``/``labels``/``class``.
Several labels in one cell are separated by ``|`` or ``;`` (multi-label). Optional columns
``split``, ``modality``, ``organ`` override the options per row. Paths are relative to the CSV's
folder, or to the ``root`` option. The label vocabulary is the ``classes`` option (labels outside
it are rejected as unknown) or else every label in the file.
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from pathlib import Path

from gmai.data.imaging import ImageReadError, read_image
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import (
    limit_items,
    make_record,
    normalise_modality,
    parse_classes_option,
    record_fields,
    reject,
)

_PATH_COLUMNS = ("path", "image", "file", "filename", "image_path")
_LABEL_COLUMNS = ("label", "labels", "class", "diagnosis")


@lru_cache(maxsize=4)
def _rows(path: str, mtime_ns: int) -> tuple[tuple[dict[str, str], ...], str, str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        path_col = next((columns[c] for c in _PATH_COLUMNS if c in columns), None)
        label_col = next((columns[c] for c in _LABEL_COLUMNS if c in columns), None)
        if path_col is None or label_col is None:
            raise ValueError(
                f"{path}: needs a header with a path column ({'/'.join(_PATH_COLUMNS)}) "
                f"and a label column ({'/'.join(_LABEL_COLUMNS)}); got {reader.fieldnames}"
            )
        rows = tuple({k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader)
    return rows, path_col.strip().lower(), label_col.strip().lower()


def _table(path: Path) -> tuple[tuple[dict[str, str], ...], str, str]:
    return _rows(str(path.resolve()), path.stat().st_mtime_ns)


def _split_labels(cell: str) -> list[str]:
    return [x.strip() for x in re.split(r"[|;]", cell) if x.strip()]


@register("csv")
class CsvLabelsSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[int]:
        if not path.is_file():
            raise FileNotFoundError(f"csv source {path} is not a file")
        rows, _, _ = _table(path)
        return limit_items(list(range(len(rows))), options)

    @staticmethod
    def load(path: Path, item: int, options: dict[str, str]) -> list[Record | Reject]:
        rows, path_col, label_col = _table(path)
        row = rows[item]
        per_row = {k: row[k] for k in ("split", "organ") if row.get(k)}
        if row.get("modality"):
            per_row["modality"] = normalise_modality(row["modality"])
        fields = record_fields(path, {**options, **per_row})
        root = Path(options["root"]) if options.get("root") else path.parent
        if not row.get(path_col):
            return [reject(f"{path}:row {item + 2}", fields["source"], "empty image path")]
        file = root / row[path_col]
        labels = _split_labels(row.get(label_col, ""))
        if not labels:
            return [reject(file, fields["source"], f"empty label ({path.name} row {item + 2})")]
        allowed = parse_classes_option(options)
        unknown = [label for label in labels if allowed and label not in allowed]
        if unknown:
            return [
                reject(
                    file,
                    fields["source"],
                    f"unknown label(s) {unknown} ({path.name} row {item + 2}); classes={','.join(allowed)}",
                )
            ]
        try:
            image = read_image(file)
        except ImageReadError as err:
            return [reject(file, fields["source"], err.reason)]
        vocabulary = parse_classes_option(options) or sorted(
            {label for r in rows for label in _split_labels(r.get(label_col, ""))}
        )
        return [make_record(image, file, fields, "classification", labels=labels, label_set=vocabulary)]
