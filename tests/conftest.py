import os

import torch
from hypothesis import settings

# Tests are many small tensor ops: one intra-op thread per worker avoids oversubscribing the
# two cores that CI has (pytest-xdist runs one worker per core).
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")

# In CI the property tests replay the same examples every run (a failure there is reproducible
# from the log); locally they explore new ones each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
