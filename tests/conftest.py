import os

import torch

# Tests are many small tensor ops: one intra-op thread per worker avoids oversubscribing the
# two cores that CI has (pytest-xdist runs one worker per core).
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")
