"""Peak memory of loading and evaluating a large GMAI-MMBench-style TSV: streamed vs one batch.

The TSV is synthetic (random-noise PNGs, base64 in the ``image`` column, the release's VAL header),
about ``--gb`` GB. Each measurement runs in a fresh Python process and reports its peak RSS
(``ru_maxrss``) above the same process's RSS after imports:

- ``scan``: ``load_benchmark("gmai-mmbench", ...)`` alone: rows parsed one at a time, images kept as
  file offsets (the like-for-like time against ``whole_file``: both read every row, neither decodes);
- ``stream``: the scan, then every item's image read and decoded batch by batch (``--batch-size``) as
  the evaluation runner does, each batch dropped before the next;
- ``one_batch``: the first ``--batch-size`` rows read in full, their base64 decoded and images decoded,
  all held at once: what one batch costs;
- ``whole_file``: the previous loader's approach (every row of the TSV read into memory with
  ``csv.DictReader``), for reference.

Target: stream <= 2x one_batch. Rounds are interleaved (>= 3). Numbers measured on a shared machine
say so with its load averages.

    python benchmarks/eval_tsv_memory.py [--gb 1.0] [--batch-size 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "eval_tsv_memory.json"
HEADER = ["index", "question", "A", "B", "C", "D", "E", "answer", "image", "category", "l2-category", "modality",
          "clinical VQA task", "department", "perceptual granularity"]

PRELUDE = """
import resource, sys, time
from PIL import Image
import gmai.eval.benchmarks as B
from gmai.eval.benchmarks.base import read_tsv_row
def rss_mb():
    with open('/proc/self/statm') as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = rss_mb()
t0 = time.perf_counter()
"""

MODES = {
    "scan": """
items = B.load_benchmark('gmai-mmbench', sys.argv[1])
n = len(items)
""",
    "stream": """
items = B.load_benchmark('gmai-mmbench', sys.argv[1])
n = 0
for i in range(0, len(items), BATCH):
    batch = [im for it in items[i:i + BATCH] for im in it.load_images()]
    n += len(batch)
    del batch
""",
    "one_batch": """
import base64, io
from gmai.eval.benchmarks.base import iter_tsv_rows
rows = iter_tsv_rows(sys.argv[1] + '/GMAI_mm_bench_VAL.tsv')
header = next(rows)
col = header.index('image')
held, offsets = [], {}
for k, (offset, cells) in enumerate(rows):
    if k == BATCH:
        break
    offsets[cells[0]] = offset
    text = cells[col] if len(cells[col]) > 64 else read_tsv_row(sys.argv[1] + '/GMAI_mm_bench_VAL.tsv',
                                                                offsets[cells[col]])[col]
    data = base64.b64decode(text)
    image = Image.open(io.BytesIO(data)).convert('RGB')
    held.append((cells, text, data, image))
n = len(held)
""",
    "whole_file": """
import csv
csv.field_size_limit(sys.maxsize)
with open(sys.argv[1] + '/GMAI_mm_bench_VAL.tsv', newline='', encoding='utf-8') as fh:
    rows = list(csv.DictReader(fh, delimiter='\\t'))
n = len(rows)
""",
}

EPILOGUE = """
print(json.dumps({'base_mb': base, 'peak_mb': peak_mb(), 'delta_mb': peak_mb() - base, 'n': n,
                  'seconds': time.perf_counter() - t0}))
"""


def write_tsv(folder: Path, gb: float, side: int = 512) -> dict:
    """A GMAI-MMBench VAL-layout TSV of ~gb GB: random-noise PNGs (incompressible), every 10th row a short
    reference to an earlier row's image as in the release."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(4):  # a few distinct images, reused (generation time, not the measurement)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
        encoded.append(base64.b64encode(buf.getvalue()).decode())
    path = folder / "GMAI_mm_bench_VAL.tsv"
    target, written, rows = gb * 2**30, 0, 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(HEADER) + "\n")
        while written < target:
            image = str(rows - 1) if rows % 10 == 9 else encoded[rows % 4]
            line = "\t".join([str(rows), f"Synthetic question {rows}?", "x", "y", "z", "", "", "B", image, "c",
                              "l2", "CT", "Organ Recognition", "Radiology", "image level"]) + "\n"
            fh.write(line)
            written += len(line)
            rows += 1
    return {"path": str(path), "bytes": path.stat().st_size, "rows": rows, "image_px": f"{side}x{side}",
            "image_b64_bytes": len(encoded[0])}


def measure(mode: str, folder: Path, batch_size: int) -> dict:
    code = PRELUDE + f"BATCH = {batch_size}\nimport json\n" + MODES[mode] + EPILOGUE
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gmai-tsv-") as tmp:
        tsv = write_tsv(Path(tmp), args.gb)
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        for _ in range(args.rounds):  # interleaved rounds
            for mode in MODES:
                runs[mode].append(measure(mode, Path(tmp), args.batch_size))
    load_after = os.getloadavg()
    summary = {m: {"peak_delta_mb_max": max(r["delta_mb"] for r in rs), "seconds_median": sorted(
        r["seconds"] for r in rs)[len(rs) // 2]} for m, rs in runs.items()}
    ratio = summary["stream"]["peak_delta_mb_max"] / summary["one_batch"]["peak_delta_mb_max"]
    result = {"benchmark": "eval_tsv_memory", "data": "synthetic (random-noise PNGs)", "tsv": tsv,
              "batch_size": args.batch_size, "rounds": args.rounds, "runs": runs, "summary": summary,
              "stream_over_one_batch": round(ratio, 3), "target": "stream <= 2x one batch", "holds": ratio <= 2.0,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "loadavg_before": load_before, "loadavg_after": load_after,
                          "note": "shared machine (other jobs running): not quiet-machine numbers"},
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"synthetic TSV: {tsv['bytes'] / 2**30:.2f} GiB, {tsv['rows']} rows; batch {args.batch_size}; "
          f"load avg {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"{'mode':<12}{'peak RSS above imports (MiB, max of rounds)':>46}{'s (median)':>12}")
    for mode, s in summary.items():
        print(f"{mode:<12}{s['peak_delta_mb_max']:>46.1f}{s['seconds_median']:>12.1f}")
    print(f"stream / one batch = {ratio:.2f} (target <= 2: {'holds' if ratio <= 2 else 'does NOT hold'}); "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
