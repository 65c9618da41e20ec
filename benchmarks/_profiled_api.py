"""``python -m benchmarks._profiled_api OUT -m MODULE ARGS…``: run MODULE with an on-demand profiler.

SIGUSR1 starts a cProfile on the CPU time of the thread that runs Python (``time.thread_time``),
SIGUSR2 stops it and writes the stats to OUT: the profile covers only the window the driver
chooses, not start-up. Not ``process_time``: that clock also counts the CPU of other threads
(obstore's tokio workers), which cProfile would charge to whatever Python function was running.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time
from types import FrameType


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.stderr.write(__doc__.split("\n\n")[0] + "\n")
        raise SystemExit(2)
    output, module, args = sys.argv[1], sys.argv[3], sys.argv[4:]
    profiler = cProfile.Profile(time.thread_time)

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(output)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
