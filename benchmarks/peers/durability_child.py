"""The process that gets killed: logs 3 scalars a step at a steady rate until SIGKILL.

    python durability_child.py TOOL RUN_DIR PROGRESS_FILE RATE

After each `log()` returns, the number of steps logged so far is written into the first 8
bytes of PROGRESS_FILE (memory-mapped, so the parent sees it without any flush of ours). The
loop is paced at RATE steps/s; a tool slower than that logs as fast as it can.
"""

from __future__ import annotations

import mmap
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters import ADAPTERS
from common import metric_values


def main(argv: list[str]) -> int:
    tool, run_dir, progress_file, rate = argv[0], Path(argv[1]), argv[2], float(argv[3])
    adapter = ADAPTERS[tool]()
    adapter.start(run_dir)
    with open(progress_file, "r+b") as handle:
        shared = mmap.mmap(handle.fileno(), 8)
        start = time.perf_counter()
        step = 0
        while True:  # runs until the parent kills this process
            adapter.log(step, metric_values(step))
            step += 1
            shared[:8] = struct.pack("<q", step)
            wait = start + step / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
