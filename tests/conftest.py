import os

import torch

# The networks here are small: one thread avoids OpenMP oversubscription when the 2-core CI machine (or a developer)
# runs anything beside the tests; it changes no result, only speed.
torch.set_num_threads(int(os.environ.get("FLOSS_TEST_THREADS", "1")))
