"""Perceptual dedup: how the cost of ``quality.HashIndex`` grows from 10k to 1M synthetic pHashes.

The build's near-duplicate pass (``Deduper``) asks, for every record in item order, for the closest
earlier kept hash within 4 bits (``near``) and then adds it (``add``). This script times exactly that
sequence on synthetic 64-bit hashes, for:

- ``mih``: the index the build uses, multi-index hashing with 3 substrings of ~22 bits probed at radius 1;
- ``bands``: plain exact banding (5 bands of ~13 bits: the pigeonhole split for d=4, the index before);
- ``pairs``: numpy comparison of every pair (popcount of XOR), the cost the issue rules out, at 10k only.

All three find the same neighbours: at 10k the script checks that the first two return exactly what the
all-pairs comparison returns for every query. The hashes are synthetic: 90% uniform random, 10% copies of
an earlier hash with 0-6 bits flipped (so there are hits and near misses). Real pHashes are not uniform
(bits correlate), which makes bucket sizes less even than here. Each size runs in its own process (its
peak RSS is reported); the table goes to stdout and JSON to results/phash_lsh.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import peak_rss_mb  # noqa: E402
DISTANCE = 4


def synthetic_hashes(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    values |= rng.integers(0, 2, n, dtype=np.uint64)  # all 64 bits
    copies = np.flatnonzero(rng.random(n) < 0.10)
    copies = copies[copies > 0]
    for i in copies:
        value = int(values[rng.integers(0, i)])
        for bit in rng.choice(64, size=int(rng.integers(0, 7)), replace=False):
            value ^= 1 << int(bit)
        values[i] = np.uint64(value)
    return [int(v) for v in values]


def run_index(values: list[int], parts: int | None) -> tuple[float, list]:
    from gmai.data.quality import HashIndex

    index = HashIndex(DISTANCE, parts=parts)
    answers = []
    start = time.perf_counter()
    for i, value in enumerate(values):
        answers.append(index.near(value, exclude_group=str(i % 3)))  # 3 sources: same-source pairs are skipped
        index.add((), value, str(i), group=str(i % 3))
    return time.perf_counter() - start, answers


def run_pairs(values: list[int]) -> tuple[float, list]:
    """Every earlier hash compared, vectorised: the same answers as ``near`` (closest, first added wins ties)."""
    array = np.array(values, dtype=np.uint64)
    groups = np.arange(len(values)) % 3
    answers: list = []
    start = time.perf_counter()
    for i in range(len(values)):
        if i == 0:
            answers.append(None)
            continue
        distances = np.bitwise_count(array[:i] ^ array[i]).astype(np.int64)
        distances[groups[:i] == groups[i]] = 99
        best = int(np.argmin(distances))  # first index of the minimum
        answers.append((str(best), int(distances[best])) if distances[best] <= DISTANCE else None)
    return time.perf_counter() - start, answers


def one(method: str, n: int) -> dict:
    values = synthetic_hashes(n)
    if method == "pairs":
        seconds, answers = run_pairs(values)
    else:
        seconds, answers = run_index(values, parts=DISTANCE + 1 if method == "bands" else None)
    row = {"method": method, "hashes": n, "seconds": round(seconds, 3), "us_per_hash": round(1e6 * seconds / n, 2),
           "near_found": sum(a is not None for a in answers),
           "peak_rss_mib": round(peak_rss_mb(), 1)}
    if method != "pairs" and n <= 10_000:  # exactness: the same answers as comparing every pair
        row["same_as_all_pairs"] = answers == run_pairs(values)[1]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--bands-max", type=int, default=100_000, help="largest size for plain banding")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "phash_lsh.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        methods = ["mih"] + (["bands"] if n <= args.bands_max else []) + (["pairs"] if n <= 10_000 else [])
        for method in methods:
            done = subprocess.run([sys.executable, __file__, "--one", method, str(n)], env=env, check=True,
                                  capture_output=True, text=True)
            rows.append(json.loads(done.stdout))
            print(json.dumps(rows[-1]), flush=True)
    result = {"distance": DISTANCE, "rows": rows, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
              "python": platform.python_version(),
              "note": "synthetic hashes; measured on a shared machine under load (see load_average)"}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'method':>6} {'hashes':>9} {'seconds':>9} {'us/hash':>8} {'near':>7} {'RSS MiB':>8}")
    for row in rows:
        print(f"{row['method']:>6} {row['hashes']:>9} {row['seconds']:>9.2f} {row['us_per_hash']:>8.1f} "
              f"{row['near_found']:>7} {row['peak_rss_mib']:>8.0f}")
    print(f"load average {os.getloadavg()}: a busy shared machine, not a quiet-machine number")


if __name__ == "__main__":
    main()
