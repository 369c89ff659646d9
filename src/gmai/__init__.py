"""gmai: an open toolkit for general medical vision-language models (GMAI-VL and GMAI-VL-R1).

OpenMP's default busy-wait makes multi-threaded CPU torch collapse (10x+ slower) as soon as another
process competes for the cores (training, the server's batches, GRPO rollouts); passive waiting costs
nothing on an idle machine. It only takes effect if set before torch starts its thread pool, hence
here, before any gmai module imports torch.
"""

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The source checkout's committed benchmark results, which the demo's report quotes (the R1 sweep, the longer
# training run); an installed package has no benchmarks/ folder, and the readers say so.
BENCHMARK_RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"

__version__ = "0.1.0"
