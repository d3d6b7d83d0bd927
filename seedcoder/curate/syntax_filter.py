"""Step 4, syntax: every file parsed (`seedcoder.curate.syntax.check_syntax`); a file with ERROR or MISSING nodes,
or one whose parse runs past `timeout_s`, is dropped ("syntax_error: ..." / "syntax_timeout: ...").

The step lives apart from the checker because `seedcoder.curate.syntax` is also imported by its CPython child
process (`python -I -S`: the standard library only), which cannot import pyarrow or numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate.step import StepContext, StepKind, column, run_row_step
from seedcoder.curate.syntax import check_syntax


def syntax_rows(table: pa.Table, options: Mapping[str, Any]) -> tuple[np.ndarray, list[str | None], dict]:
    keep, reasons, checked, ok = [], [], [], []
    for text, language in zip(column(table, "text"), column(table, "language")):
        result = check_syntax(text or "", language or "unknown", timeout_s=options["timeout_s"])
        keep.append(bool(result.ok))
        checked.append(bool(result.checked))
        ok.append(bool(result.ok))
        if result.ok:
            reasons.append(None)
        else:
            category = "syntax_error" if result.checked else "syntax_timeout"
            reasons.append(f"{category}: {result.reason or 'no reason given'}")
    return np.array(keep, dtype=bool), reasons, {"syntax_checked": pa.array(checked, pa.bool_()),
                                                  "syntax_ok": pa.array(ok, pa.bool_())}


def run_syntax(ctx: StepContext) -> dict[str, Any]:
    return run_row_step(ctx, "seedcoder.curate.syntax_filter:syntax_rows")


@dataclass
class SyntaxOptions:
    timeout_s: float = option(2.0, "parse time limit per file; a file over it is dropped")


STEP = StepKind("syntax", "tree-sitter syntax filter (ERROR or MISSING nodes -> dropped)", run_syntax, SyntaxOptions)


__all__ = ["STEP", "SyntaxOptions", "run_syntax", "syntax_rows"]
