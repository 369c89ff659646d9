#!/usr/bin/env bash
# One-command GPU check (needs one CUDA GPU; NOT run in this repository's CPU sessions):
#   bash benchmarks/gpu_check.sh [WORK_DIR]
# Stage III of gmai-vl-7b on ~1B-parameter random-weight folders in the released formats (Qwen2.5-Instruct LM,
# CLIP ViT-L/14-336), bf16 + SDPA (then flash attention 2 if installed), FSDP2 on one GPU: the trainer's own
# (gmai.train.sharding), the mechanism tests/train/test_train_fsdp.py runs with 2 CPU processes.
# Prints tokens/s, peak memory and MFU; writes benchmarks/results/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-/tmp/gmai-gpu-check}"
PY="${PYTHON:-python}"
ACC="${ACCELERATE:-accelerate}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'gpu_check needs a CUDA GPU'"
[ -d "$WORK/lm" ] || "$PY" benchmarks/gpu_check.py prepare "$WORK"
"$ACC" launch --config_file recipes/accelerate/fsdp.yaml --num_processes 1 --mixed_precision bf16 \
    benchmarks/gpu_check.py run "$WORK" --steps "${STEPS:-20}" --attn sdpa
if "$PY" -c "import flash_attn" 2>/dev/null; then
  "$ACC" launch --config_file recipes/accelerate/fsdp.yaml --num_processes 1 --mixed_precision bf16 \
      benchmarks/gpu_check.py run "$WORK" --steps "${STEPS:-20}" --attn flash_attention_2
fi
