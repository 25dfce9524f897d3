"""Settings of a long-running hub process (web server, worker) that are not the hub's own."""
from __future__ import annotations

import gc

# Python's collector runs a young-generation pass every 700 allocations. A worker draining a
# batch allocates hundreds of thousands of ORM states and rows, none of them cyclic garbage,
# and with the default the drain spends much of its time walking them (measure with
# benchmarks/e2e.py); a pass every 50,000 allocations still frees the rare cycle in a batch.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Collect less often, and never walk the objects loaded at start-up again."""
    gc.collect()
    gc.freeze()  # modules, settings, mappings: alive for the whole process
    gc.set_threshold(*GC_THRESHOLDS)
