"""Whether a process of this machine is still running: the one check behind stale run locks and the leftovers of
killed runs."""

from __future__ import annotations

import os


def pid_alive(pid: object) -> bool:
    """True when `pid` (an int > 0) names a running process on this machine, or one we may not signal (it exists);
    False for anything else, including a pid that is gone."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
