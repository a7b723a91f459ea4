"""Seeds derived from the config seed and the job (fold, epoch, sample); torch-free."""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """Return a 63-bit seed that is a pure function of ``keys`` (e.g. seed, fold, epoch)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))
