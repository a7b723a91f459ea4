"""Measuring memory in tests and benchmarks."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any


def peak_bytes(fn: Callable[..., Any], *args: Any) -> int:
    """Return the peak bytes Python allocated (tracemalloc, numpy included) during one call of ``fn``, result included."""
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
