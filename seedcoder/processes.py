"""How our processes start and end: torchrun ranks, curation pool workers.

Processes that must not outlive the one that started them. Killing a launcher with SIGKILL gives it no chance to
stop its children, and a child in a session of its own (as torchrun starts its ranks) is not reached by killing the
process group either. So each child asks the kernel to SIGKILL it when its parent dies (Linux's PR_SET_PDEATHSIG),
and checks that its parent is still the one it was started by, in case the parent died before the request was made.

Processes that ran torch.distributed end without interpreter finalization (`init_process_group`, `exit_process`).
gloo's worker threads outlive `destroy_process_group` (DTensor's sharding caches keep the group alive) and can still
be dropping a finished collective's tensors when the main thread reaches the end. Dropping a tensor that Python has
seen takes the GIL; during finalization Python 3.11 ends such a thread with pthread_exit, whose unwinding through
a C++ noexcept destructor aborts the rank ("terminate called without an active exception", SIGABRT): rare on a
loaded machine (a CI run, a fresh clone), most runs when collectives are still in flight at the end
(tests/test_processes.py). multiprocessing ends its children the same way, and for the same kind of reason.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys
from typing import NoReturn

PR_SET_PDEATHSIG = 1  # prctl option, <linux/prctl.h>
_process_group_started = False  # see exit_process


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


def init_process_group(backend: str, **kwargs) -> None:
    """torch.distributed.init_process_group(backend, **kwargs), remembered: `exit_process` then ends this process
    without interpreter finalization (module docstring)."""
    import torch.distributed as dist  # noqa: PLC0415 (the pool workers that import this module never need torch)

    global _process_group_started
    dist.init_process_group(backend, **kwargs)
    _process_group_started = True


def exit_process(code: int | None) -> NoReturn:
    """Exit with `code`: sys.exit, or, once this process started a process group (`init_process_group`), the atexit
    handlers, stdout and stderr flushed, and os._exit, so that no interpreter finalization races gloo's threads.
    Only for an entry point's `if __name__ == "__main__"`: it ends the process."""
    if not _process_group_started:
        sys.exit(code)
    try:
        atexit._run_exitfuncs()  # what finalization would run first: the loaders' close, logging's flush, tempdirs
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (`| head`) or stream: nothing left to write to
                pass
        os._exit(code or 0)  # None is success, as for sys.exit
