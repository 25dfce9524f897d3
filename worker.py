"""RQ worker entry: `python worker.py` (the same as `hub worker`)."""
from hub.cli import main

if __name__ == "__main__":
    main(["worker"])
