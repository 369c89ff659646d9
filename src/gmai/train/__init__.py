"""gmai.train: recipe dataclasses, data mixture, packing, the three-stage trainer.

OpenMP's default busy-wait makes multi-threaded CPU training collapse (10x+ slower) as soon as another
process competes for the cores; passive waiting costs nothing when the machine is idle. It only takes
effect if set before torch starts its thread pool, hence here, before any torch import.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
