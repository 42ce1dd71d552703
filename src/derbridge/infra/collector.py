"""The garbage collector's pace in a serving process.

CPython looks for reference cycles every 700 new container objects (dicts, lists, models) and sweeps
older generations every 10 of those passes. A request body of bulk size — an OpenADR report of 10,000
resources, 5,000 enrollment resources, a batch of bridge messages — makes a few hundred thousand
containers that all live until the answer is written, so with the defaults the collector walked the
growing structure over and over within one request: parsing and validating one 10,000-resource report
took 585 ms with the defaults and 145 ms with a young generation of 100,000 (``model_dump`` 177 → 61 ms;
measured on this project's 2-core machine, ``docs/performance.md``). Cycles are still collected, only
less often; the memory they may hold meanwhile is a few megabytes.

:func:`serving_pace` is what a serving process (``derbridge up``, ``derbridge serve``, the embedded
system of the demo and the benchmarks) runs with.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SERVING_THRESHOLDS = (100_000, 50, 100)
"""Young-generation allocations between collections, then young passes per middle one and middle passes
per full one (CPython's defaults: 700, 10, 10). A full pass also waits until a quarter of the heap is new."""

_lock = threading.Lock()
_depth = 0
_before: tuple[int, ...] = ()


@contextmanager
def serving_pace() -> Iterator[None]:
    """Collect at :data:`SERVING_THRESHOLDS` while inside. Entries may overlap (two embedded systems, a
    lifespan in a test): the first sets the pace, the last one out restores what was there before."""
    global _depth, _before
    with _lock:
        if _depth == 0:
            _before = gc.get_threshold()
            gc.set_threshold(*SERVING_THRESHOLDS)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_before)
