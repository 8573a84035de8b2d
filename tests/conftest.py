"""Suite-wide settings: one torch thread per test process.

Tests are correctness checks on small inputs; with two threads on a shared 2-core machine the
thread pools of concurrent processes thrash (tests 20-40x slower) and CPU reductions can add in
a timing-dependent order. Benchmarks, not tests, measure multi-threaded speed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a core dependency
    pass
