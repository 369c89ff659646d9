#!/usr/bin/env bash
# The benchmark tables of the README and of issue #16, one run each, at their default settings, every one in
# >= 3 interleaved rounds (each script keeps every round, the medians and the load averages in its JSON).
# Run it on a QUIET machine (nothing else running): the JSONs record the load averages, and a 1-minute load
# above 0.25 per CPU is flagged "BUSY" in them.
#
#     bash benchmarks/run_all.sh            # from the repository root, after `make install`
#
# Expected durations on a quiet 2-core machine, estimated from the CPU seconds of one busy run of each on
# 2026-12-05 (the busy wall times, at load 9-18 on 2 CPUs, in brackets; see benchmarks/README.md):
#   train_throughput   3 rounds x (gmai, TRL defaults, TRL best), 480 samples   ~5-6 min  (busy: ~37 min)
#   eval_throughput    3 rounds x 64 VQA-RAD questions, 16 and 64 new tokens    ~2-3 min  (busy: 15.5 min)
#   data_engine        3 rounds x (engine, bare) x (1, 2 workers), 8 CT volumes ~2-3 min  (busy: 18.3 min)
#   grpo_step          3 rounds x (TRL stock, gmai) x 4 steps, + TRL defaults   ~2-3 min  (busy: 23.0 min)
# in all ~12-15 minutes. The default sizes fit that; more rounds or samples would not. The per-op profile of
# training (train_throughput.py --op-profile, ~2 min more) is left out: op shares hardly depend on the load.
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
