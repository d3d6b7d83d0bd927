"""Processes that must not outlive the one that started them: torchrun ranks, curation pool workers.

Killing a launcher with SIGKILL gives it no chance to stop its children, and a child in a session of its own (as
torchrun starts its ranks) is not reached by killing the process group either. So each child asks the kernel to
SIGKILL it when its parent dies (Linux's PR_SET_PDEATHSIG), and checks that its parent is still the one it was
started by, in case the parent died before the request was made.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>


def die_with_parent(parent_pid: int, what: str = "the parent process") -> None:
    """SIGKILL this process when its parent dies; exit at once (status 1) when `parent_pid` is no longer its parent.

    The signal comes when the parent *thread* that started this process exits: start children from a thread that
    lives as long as the parent (torchrun's agent and our pools start them from the main thread)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(error)}")
    if os.getppid() != parent_pid:
        print(f"{what} (pid {parent_pid}) is gone; exiting", file=sys.stderr, flush=True)
        os._exit(1)
