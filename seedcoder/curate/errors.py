"""Errors of the curation pipeline (`seedcoder.curate`).

`CurateInputError` is raised by step code for one bad input (a broken git repository, an unreadable dump): the
framework catches it and records the message as the `drop_reason` of that input, so one bad input never stops
a run. A bad config or option (unknown step or key, wrong type, bad value) is a `seedcoder.config.ConfigError`,
the error of every stage's config: it stops the run before any work, naming the key; `CurateConfigError` is the
one the curation code raises itself (a missing benchmark file, an input that is not a dump). `CurateStateError`
is an output directory the pipeline cannot safely reuse.
"""

from __future__ import annotations

from seedcoder.config import ConfigError


class CurateInputError(ValueError):
    """One bad input (file, repository, dump); the message names the path and the problem."""


class CurateConfigError(ConfigError):
    """A bad pipeline config, step option or setting the option names; the message names it (and the file)."""


class CurateStateError(RuntimeError):
    """An output directory that holds something else, or a step whose inputs are not finished."""


__all__ = ["CurateConfigError", "CurateInputError", "CurateStateError"]
