"""Suite-wide settings. Tests use small tensors: one intra-op thread is faster there, and it keeps runs that
share the machine's two cores (pytest, the subprocesses the end-to-end tests start) from spinning against
each other, which made torch up to 30x slower here."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by the subprocesses of the end-to-end tests
torch.set_num_threads(1)
