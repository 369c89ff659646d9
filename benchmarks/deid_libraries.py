"""gmai's de-identification (gmai.data.deid) against three PyPI de-identifiers, on the same inputs.

Measured per candidate, on the adversarial shelf of tests/data/adversarial_dicom.py (synthetic, 9 readable files)
and on every row of Table E.1-1 (the edition in src/gmai/data/ps3.15-table-e1-1.csv) planted one at a time:

- planted header markers left in the de-identified dataset (saved with its file meta and preamble);
- Table E.1-1 entries whose planted value is gone (or remapped), at the top level and two sequences deep;
- milliseconds per file (on the shelf without its three invalid values, which crash one library):
  datasets decoded and copied outside the timing, 3 interleaved rounds, median.

The libraries are not project dependencies: install them beside the venv for this script only, e.g.
``pip install --no-deps --target /tmp/deidlibs dicognito==0.19.0 deid==0.4.13 dicom-anonymizer==2.1.0``
and run ``PYTHONPATH=src:/tmp/deidlibs python benchmarks/deid_libraries.py``. A library that cannot be
imported is reported as such. Prints a table and writes benchmarks/results/deid_libraries.json.
"""

from __future__ import annotations

import copy
import io
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))  # the adversarial shelf and the coverage check

import pydicom  # noqa: E402
from adversarial_dicom import MARKERS, write_shelf  # noqa: E402

from gmai.data import deid  # noqa: E402

NOT_HEADER = ("MKRBT", "MKRBP")  # pixel text; BodyPartExamined (CS, judged by the vocabulary downstream)


_DEIDENTIFY = deid.deidentify  # _coverage swaps deid.deidentify for each candidate


def _gmai(ds):
    return _DEIDENTIFY(ds, deid.DeidOptions(b"b" * 32))


def _dicognito():
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="benchmark")

    def run(ds):
        if not hasattr(ds, "file_meta"):  # dicognito needs one; the table check plants bare datasets
            from pydicom.dataset import FileMetaDataset

            ds.file_meta = FileMetaDataset()
        anonymizer.anonymize(ds)
        return ds

    return run


def _dicom_anonymizer():
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset, initialize_actions

    actions = initialize_actions("dicomfields_2026c")

    def run(ds):
        anonymize_dataset(ds, base_rules_gen=lambda: dict(actions), delete_private_tags=True)
        return ds

    return run


def _pydicom_deid():
    from deid.dicom import replace_identifiers

    def run(ds):
        return replace_identifiers([ds], save=False, remove_private=True)[0]

    return run


CANDIDATES = {"gmai.data.deid": lambda: _gmai, "dicognito 0.19.0": _dicognito,
              "dicom-anonymizer 2.1.0 (2026c)": _dicom_anonymizer, "deid 0.4.13 (default recipe)": _pydicom_deid}


def _markers_left(ds) -> list[str]:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    data = (buffer.getvalue() + (getattr(ds, "preamble", None) or b"")).upper()
    return sorted({m[:5] for m in MARKERS if not m.startswith(NOT_HEADER) and m.encode() in data})


def _coverage(run) -> dict:
    import test_deid

    saved = deid.deidentify
    deid.deidentify = lambda ds, options=None: run(ds)
    try:
        return test_deid.coverage()
    finally:
        deid.deidentify = saved


def main() -> None:
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        write_shelf(Path(tmp) / "shelf")
        with deid.quiet_pydicom():
            decoded = [pydicom.dcmread(p) for p in sorted((Path(tmp) / "shelf").rglob("*.dcm"))
                       if not p.name.endswith("truncated.dcm")]
            for ds in decoded:  # decode every element now, outside the timing
                for _ in ds.iterall():
                    pass
    valid_only = [copy.deepcopy(ds) for ds in decoded]
    for ds in valid_only:  # the same files without the three planted invalid values (UI, DA, AS)
        for tag in (0x00080020, 0x00101010, 0x00200052):
            if tag in ds:
                del ds[tag]
    runs, results = {}, {}
    for name, make in CANDIDATES.items():
        try:
            runs[name] = make()
        except ImportError as error:
            results[name] = {"error": f"not importable: {error}"}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(3):  # interleaved rounds
        for name, run in runs.items():
            entry = results.setdefault(name, {})
            for label, inputs_ in (("adversarial", decoded), ("valid values only", valid_only)):
                inputs = [copy.deepcopy(ds) for ds in inputs_]
                start = time.perf_counter()
                try:
                    with deid.quiet_pydicom():
                        outputs = [run(ds) for ds in inputs]
                except Exception as error:  # noqa: BLE001  (reported, the others still run)
                    entry[f"{label}: error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                    continue
                if label == "valid values only":
                    times[name].append((time.perf_counter() - start) * 1000 / len(inputs))
                entry[f"{label}: markers_left"] = sorted({m for ds in outputs for m in _markers_left(ds)})
    for name, run in runs.items():
        try:
            with deid.quiet_pydicom():
                results[name]["table_coverage"] = _coverage(run)
        except Exception as error:  # noqa: BLE001
            results[name]["table_coverage_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        if times[name]:
            results[name]["ms_per_file_rounds"] = [round(t, 3) for t in times[name]]
            results[name]["ms_per_file_median"] = round(statistics.median(times[name]), 3)
    header_markers = sorted({m[:5] for m in MARKERS if not m.startswith(NOT_HEADER)})
    report = {"files": len(decoded), "header_marker_kinds": len(header_markers), "table_entries": len(deid.table()),
              "load_average": os.getloadavg(), "results": results,
              "note": "busy shared machine (2 cores, ~7 jobs): times are relative, not quiet-machine numbers"}
    print(f"{len(decoded)} files, {len(header_markers)} kinds of planted header marker, load {os.getloadavg()}")
    print(f"{'candidate':32} {'left: adversarial':>18} {'left: valid only':>17} {'E.1-1 top':>10} "
          f"{'E.1-1 nested':>13} {'ms/file':>8}")

    def cell(r: dict, label: str, width: int) -> str:
        return f"{'crash':>{width}}" if f"{label}: error" in r else f"{len(r[label + ': markers_left']):>{width}}"

    for name, r in results.items():
        if "error" in r:
            print(f"{name:32} {r['error']}")
            continue
        cov = r.get("table_coverage")
        top = f"{cov['top-level']['handled']:>6}/{cov['top-level']['total']}" if cov else f"{'crash':>10}"
        nested = f"{cov['nested (depth 2)']['handled']:>8}/{cov['nested (depth 2)']['total']}" if cov else f"{'crash':>13}"
        ms = f"{r['ms_per_file_median']:>8.2f}" if "ms_per_file_median" in r else f"{'-':>8}"
        print(f"{name:32} {cell(r, 'adversarial', 18)} {cell(r, 'valid values only', 17)} {top} {nested} {ms}")
    out = ROOT / "benchmarks" / "results" / "deid_libraries.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
