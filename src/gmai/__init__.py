"""gmai: an open toolkit for general medical vision-language models (GMAI-VL and GMAI-VL-R1).

OpenMP's default busy-wait makes multi-threaded CPU torch collapse (10x+ slower) as soon as another
process competes for the cores (training, the server's batches, GRPO rollouts); passive waiting costs
nothing on an idle machine. It only takes effect if set before torch starts its thread pool, hence
here, before any gmai module imports torch.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
