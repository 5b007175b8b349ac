"""Another process holding a file open, as a second explorer, a notebook or a backup tool would."""

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def held_open(db: Path):
    """A DuckDB file held open read-only by another process for the duration of the block."""
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time\nc = duckdb.connect({str(db)!r}, read_only=True)\n"
                               "print('open', flush=True)\ntime.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        yield
    finally:
        holder.kill()
        holder.wait()
