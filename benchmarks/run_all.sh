#!/usr/bin/env bash
# The benchmark tables of the README and of issue #16, one run each, at their default settings, every one in
# >= 3 interleaved rounds (each script keeps every round, the medians and the load averages in its JSON).
# Run it on a QUIET machine (nothing else running): each JSON records the CPU that other processes used while it
# ran, and marks the run BUSY above 10% of the machine's CPU (benchmarks/measure.py).
#
#     bash benchmarks/run_all.sh            # from the repository root, after `make install`
#
# Measured on a quiet 2-core machine (2026-12-05, results/run_all_quiet_run2_2026-12-05.txt):
#   train_throughput   3 rounds x (gmai, TRL defaults, TRL best), 480 samples   274 s
#   eval_throughput    3 rounds x 64 VQA-RAD questions, 16 and 64 new tokens    102 s
#   data_engine        3 rounds x (engine, bare) x (1, 2 workers), 8 CT volumes  91 s
#   grpo_step          3 rounds x (TRL stock, gmai) x 4 steps, + TRL defaults   113 s
# in all ~10 minutes. The per-op profile of training (train_throughput.py --op-profile, ~2 min more) is left out:
# op shares hardly depend on the load.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
export PYTHONPATH=${PYTHONPATH:-$PWD/src}

step() {  # name, then the command; prints the load before and the duration after
    local name=$1; shift
    echo "== $name (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
    local start=$SECONDS
    "$@"
    echo "== $name took $((SECONDS - start)) s (load after: $(cut -d' ' -f1-3 /proc/loadavg))"
}

step train_throughput "$PY" benchmarks/train_throughput.py --rounds 3
step eval_throughput "$PY" benchmarks/eval_throughput.py --max-new-tokens 16,64 --rounds 3
step data_engine "$PY" benchmarks/data_engine.py --repeats 3
step grpo_step "$PY" benchmarks/grpo_step.py --steps 4 --repeats 3 --threads 1 --json benchmarks/results/grpo_step.json
