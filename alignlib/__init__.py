"""alignlib: the helper package of the notebook course on reward models and REINFORCE."""

import os as _os

import torch as _torch

# Two physical cores here: one intra-op thread per core, no oversubscription.
if "OMP_NUM_THREADS" not in _os.environ:
    _torch.set_num_threads(max(1, min(_torch.get_num_threads(), _os.cpu_count() or 1)))

__version__ = "0.1.0"
