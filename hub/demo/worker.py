"""An RQ worker on the inbox queue only (`python -m hub.demo.worker`).

`hub demo` runs it beside a regular `hub worker`: each simulated day waits for its inbox
drain, which must not queue behind a push that waits for a fuller batch or for a tool's
rate limit.
"""
from __future__ import annotations

from rq import Queue, SimpleWorker

from hub.context import make_hub, use_hub


def main() -> None:
    hub = make_hub()
    use_hub(hub)
    queue = Queue("inbox", connection=hub.queues.connection)
    SimpleWorker([queue], connection=hub.queues.connection).work()


if __name__ == "__main__":
    main()
