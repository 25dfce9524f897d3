"""Settings of a long-running hub process (web server, worker) that are not the hub's own."""
from __future__ import annotations

import gc

# Python's collector runs a young-generation pass every 700 allocations. A worker draining a
# batch allocates hundreds of thousands of ORM states and rows, none of them cyclic garbage,
# and the default spent ~20 % of the drain walking them (benchmarks/e2e.py); a pass every
# 50,000 allocations costs next to nothing and still frees the rare cycle within a batch.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Collect less often, and never walk the objects loaded at start-up again."""
    gc.collect()
    gc.freeze()  # modules, settings, mappings: alive for the whole process
    gc.set_threshold(*GC_THRESHOLDS)
