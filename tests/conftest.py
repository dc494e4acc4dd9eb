import os

import torch

# Under pytest-xdist every worker is a torch process; with the default one thread per core,
# two workers on two cores spin against each other (measured: a notebook run took 90 s
# instead of 15 s). One intra-op thread per worker keeps the cores busy with real work.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
