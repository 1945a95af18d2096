"""``python -m dbtool.core.server --area PATH``: how clients start a detached server.

With ``DBTOOL_SERVER_PROFILE=FILE`` in its environment the server's main thread (the event loop:
connections, requests, the writer's groups) runs under cProfile, and its statistics are written
to FILE when it stops (read them with ``python -m pstats FILE``), timed by the thread's CPU clock
(wall time would count the moments the kernel gave the CPU to a client woken by a send): how
benchmarks find where the server's CPU goes.
"""

import os
import sys

from .app import main

profile_to = os.environ.get("DBTOOL_SERVER_PROFILE")
if profile_to:
    import cProfile
    import time

    profiler = cProfile.Profile(time.thread_time)
    try:
        code = profiler.runcall(main)
    finally:
        profiler.dump_stats(profile_to)
    sys.exit(code)
sys.exit(main())
