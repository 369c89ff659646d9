"""``csv``: a CSV of image paths and labels (``path,label``; header required).

Accepted column names: ``path``/``image``/``file``/``filename`` and ``label``/``labels``/``class``.
Several labels in one cell are separated by ``|`` or ``;`` (multi-label). Optional columns
``split``, ``modality``, ``organ`` override the options per row. Paths are relative to the CSV's
folder, or to the ``root`` option. The label vocabulary is the ``classes`` option (labels outside
it are rejected as unknown) or else every label in the file.

Multi-label tables with one column per finding (CheXpert, MIMIC-CXR-JPG): ``label_columns=A,B,...``
names the columns, read in CheXpert's convention: ``1`` positive, ``0`` negative, ``-1`` uncertain,
blank not mentioned (``1.0``/``0.0``/``-1.0`` as the released CSVs write them). ``uncertain=ignore``
(default; CheXpert's U-Ignore), ``positive`` (U-Ones) or ``negative`` (U-Zeros) sets what an uncertain
label becomes in the record's label vector (``meta.findings``); ``blank=negative`` (default) or
``ignore`` does the same for blanks. A ``No Finding`` column, if listed, is the "no finding" label.
Questions are asked only about what the table states: an uncertain finding is never the answer "no"
nor a distractor, whatever the policy (U-Zeros maps it to 0 for a classifier's label vector; the table
still does not say it is absent), and "which findings are present?" is asked only when every finding of
the image is determined.
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
    OptionError,
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
def _rows(path: str, mtime_ns: int, multi: bool = False) -> tuple[tuple[dict[str, str], ...], str, str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        path_col = next((columns[c] for c in _PATH_COLUMNS if c in columns), None)
        label_col = next((columns[c] for c in _LABEL_COLUMNS if c in columns), None)
        if multi and path_col is not None:
            label_col = label_col or ""
        if path_col is None or label_col is None:
            raise ValueError(
                f"{path}: needs a header with a path column ({'/'.join(_PATH_COLUMNS)}) "
                f"and a label column ({'/'.join(_LABEL_COLUMNS)}); got {reader.fieldnames}"
            )
        rows = tuple({k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader)
    return rows, path_col.strip().lower(), label_col.strip().lower()


def _table(path: Path, multi: bool = False) -> tuple[tuple[dict[str, str], ...], str, str]:
    return _rows(str(path.resolve()), path.stat().st_mtime_ns, multi)


def _split_labels(cell: str) -> list[str]:
    return [x.strip() for x in re.split(r"[|;]", cell) if x.strip()]


@register("csv")
class CsvLabelsSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[int]:
        if not path.is_file():
            raise FileNotFoundError(f"csv source {path} is not a file")
        columns = _label_columns(options)
        rows, _, _ = _table(path, bool(columns))
        if columns:
            _check_policies(options)
            missing = [c for c in columns if rows and c.lower() not in rows[0]]
            if missing:
                raise OptionError(f"{path}: label_columns {missing} are not columns of the table")
        return limit_items(list(range(len(rows))), options)

    @staticmethod
    def load(path: Path, item: int, options: dict[str, str]) -> list[Record | Reject]:
        if _label_columns(options):
            return _load_multilabel(path, item, options)
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
            return [reject(file, fields["source"], f"empty label (row {item + 2})")]
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


# --------------------------------------------------------------------------------------------
# Multi-label tables (one column per finding, CheXpert's 1 / 0 / -1 / blank)

_POLICIES = {"uncertain": ("ignore", "positive", "negative"), "blank": ("negative", "ignore")}
_NO_FINDING = "no finding"


def _label_columns(options: dict[str, str]) -> list[str]:
    return [c.strip() for c in options.get("label_columns", "").split(",") if c.strip()]


def _check_policies(options: dict[str, str]) -> tuple[str, str]:
    chosen = []
    for key, allowed in _POLICIES.items():
        value = options.get(key, allowed[0]).strip().lower()
        if value not in allowed:
            raise OptionError(f"option {key}={value!r}: expected one of {', '.join(allowed)}")
        chosen.append(value)
    return chosen[0], chosen[1]


def _state(cell: str) -> str | None:
    """A CheXpert cell -> "positive" / "negative" / "uncertain" / "blank"; None when unreadable."""
    text = cell.strip()
    if not text:
        return "blank"
    try:
        value = float(text)
    except ValueError:
        return None
    return {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}.get(value)


def findings_of_row(row: dict[str, str], columns: list[str], uncertain: str, blank: str) -> tuple[dict, list[str]]:
    """(facts, problems): facts = {"findings": {name: 1|0|None} after the policies, "positive": [...],
    "negative": [...] (stated 0, or blank under blank=negative: usable as "no" answers and distractors),
    "uncertain": [...] (as written, -1), "no_finding": True/False/None}."""
    findings: dict[str, int | None] = {}
    positive, negative, unsure, problems = [], [], [], []
    no_finding = None
    for column in columns:
        state = _state(row.get(column.lower(), ""))
        if state is None:
            problems.append(f"{column}={row.get(column.lower())!r}")
            continue
        if state == "uncertain":
            unsure.append(column)
        value = {"positive": 1, "negative": 0, "blank": 0 if blank == "negative" else None,
                 "uncertain": {"positive": 1, "negative": 0, "ignore": None}[uncertain]}[state]
        if column.lower() == _NO_FINDING:
            no_finding = None if state == "uncertain" else value == 1 if value is not None else None
            continue
        findings[column] = value
        if value == 1:
            positive.append(column)
        elif value == 0 and state != "uncertain":  # an uncertain finding is never stated absent
            negative.append(column)
    return {"findings": findings, "positive": positive, "negative": negative, "uncertain": unsure,
            "no_finding": no_finding}, problems


def _load_multilabel(path: Path, item: int, options: dict[str, str]) -> list[Record | Reject]:
    rows, path_col, _ = _table(path, True)
    row = rows[item]
    columns = _label_columns(options)
    uncertain, blank = _check_policies(options)
    fields = record_fields(path, {**options, **{k: row[k] for k in ("split", "organ") if row.get(k)}})
    root = Path(options["root"]) if options.get("root") else path.parent
    where = f"{path.name} row {item + 2}"
    if not row.get(path_col):
        return [reject(f"{path}:row {item + 2}", fields["source"], "empty image path")]
    file = root / row[path_col]
    facts, problems = findings_of_row(row, columns, uncertain, blank)
    if problems:
        return [reject(file, fields["source"], f"label cells not 1/0/-1/blank ({where}): {', '.join(problems)}")]
    if not facts["positive"] and not facts["negative"] and not facts["no_finding"]:
        return [reject(file, fields["source"], f"no finding stated positive or negative ({where}; uncertain="
                                               f"{uncertain}, blank={blank})")]
    try:
        image = read_image(file)
    except ImageReadError as err:
        return [reject(file, fields["source"], err.reason)]
    labels = facts["positive"] or (["No Finding"] if facts["no_finding"] else [])
    vocabulary = [c for c in columns if c.lower() != _NO_FINDING]
    meta = {"findings": facts["findings"], "findings_positive": facts["positive"],
            "findings_negative": facts["negative"], "findings_uncertain": facts["uncertain"],
            "no_finding": facts["no_finding"], "uncertain_policy": uncertain, "blank_policy": blank}
    return [make_record(image, file, fields, "classification", labels=labels, label_set=vocabulary, meta=meta)]
