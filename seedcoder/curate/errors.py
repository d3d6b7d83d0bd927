"""Errors of the curation pipeline (`seedcoder.curate`).

`CurateInputError` is raised by step code for one bad input (a broken git repository, an unreadable dump): the
framework catches it and records the message as the `drop_reason` of that input, so one bad input never stops
a run. `CurateConfigError` is a bad config or option (unknown step or key, wrong type): it stops the run before
any work, naming the key. `CurateStateError` is an output directory the pipeline cannot safely reuse.
"""

from __future__ import annotations


class CurateInputError(ValueError):
    """One bad input (file, repository, dump); the message names the path and the problem."""


class CurateConfigError(ValueError):
    """A bad pipeline config or step option; the message names the key (and the file)."""


class CurateStateError(RuntimeError):
    """An output directory that holds something else, or a step whose inputs are not finished."""


__all__ = ["CurateConfigError", "CurateInputError", "CurateStateError"]
