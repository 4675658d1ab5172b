"""Named fault points for crash tests: `fault(point)` does nothing unless the environment asks.

`SYNTHDATA_FAULT=POINT:kill` makes the process SIGKILL itself when it reaches `fault("POINT")`;
`SYNTHDATA_FAULT=POINT:enospc` raises `OSError(ENOSPC)` there. Any other point, or no variable,
is a no-op costing one environment lookup.
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "SYNTHDATA_FAULT"


def fault(point: str) -> None:
    """Crash here (kill, or a disk-full error) when SYNTHDATA_FAULT names this point."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, action = wanted.partition(":")
    if name != point:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), point)
