"""User errors: bad input the user can fix (a config key, a data file, a checkpoint), as opposed to our own bugs.

Raise `UserError` (or a subclass: `seedcoder.data.shards.ShardError`, `seedcoder.checkpoint.CheckpointError`) with
a message that names the file or key and the problem. An entry point runs its work through `exit_on_user_error`,
which prints such an error as one line, `PROG: message`, on stderr and returns EXIT_USER_ERROR; under torchrun
only rank 0 prints (every rank meets the same bad input; one line is enough) and the other ranks wait a moment
before they exit quietly, since torchrun stops every rank as soon as one has failed. Any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

EXIT_USER_ERROR = 2
RANK0_GRACE_S = 5.0  # how long the other ranks leave rank 0 to print the error before torchrun stops it


class UserError(Exception):
    """Bad input the user can fix; the message names the file or key and the problem."""


def exit_on_user_error(prog: str, run: Callable[[], int]) -> int:
    """`run()`'s exit code, or EXIT_USER_ERROR after printing a user error as one line (rank 0 only)."""
    try:
        return run()
    except UserError as error:
        if os.environ.get("RANK", "0") == "0":
            print(f"{prog}: {error}", file=sys.stderr, flush=True)
        else:
            time.sleep(RANK0_GRACE_S)
        return EXIT_USER_ERROR


__all__ = ["EXIT_USER_ERROR", "UserError", "exit_on_user_error"]
