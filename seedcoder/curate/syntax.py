"""Syntax filter (curation step 4): parse a file with tree-sitter and drop it when the tree has ERROR or MISSING nodes.

    result = check_syntax(text, "python")            # SyntaxResult(ok, checked, reason)
    if not result.ok:
        drop_reason = result.reason                   # "syntax error at line 12, column 5 (python grammar): ..."
    "rust" in syntax_languages()                      # True: the language names this step checks

Grammars come from `tree-sitter-language-pack` (<1: the grammars ship in the wheel, nothing is downloaded).
Outcomes:
  * ok=True,  checked=True   the tree has no ERROR and no MISSING node.
  * ok=False, checked=True   it has one; `reason` names the first one in document order (innermost: the
                             descent follows the first child that holds an error), its 1-based line and
                             character column, and what was there (the unexpected text, or the missing token).
  * ok=True,  checked=False  no grammar is used for the language (not code, no grammar in the pack, or a grammar
                             too dialect-dependent to judge by: sql, assembly, html/vue/svelte, data and prose
                             formats); `reason` says so. Such files pass.
  * ok=False, checked=False  the parse ran past `timeout_s`, or the text is not a string; `reason` says which.
                             Drop these too: a file that tree-sitter cannot parse in seconds is pathological.

Time limit: py-tree-sitter 0.25+ has no parser timeout any more, so the parse goes through the read-callback form
of `Parser.parse`, whose `progress_callback` tree-sitter calls every ~100 parse operations; ours returns True
(cancel) once the deadline has passed, and the parser is reset before its next use. The read callback hands
tree-sitter a memoryview of the whole rest of the file, so it runs a handful of times per file; together the two
callbacks cost about nothing next to the parse (`benchmarks/curate_syntax.py` measures it against a bare loop).

Where a file fails with its own grammar, a close superset is tried before it is dropped: C files with C++ (many
`.h` files are C++), TypeScript with TSX (JSX in a `.ts`-labelled file), all within the same deadline.

Parsers are cached per thread (a tree-sitter parser must not be shared between threads while it parses), which
makes them cached per process in the process-pool and Ray executors.

Known limits (measured while writing this; see the tests): tree-sitter's grammars are not the compilers. Against
CPython's `ast.parse` the Python grammar still accepts Python 2 `print x`/`exec x` statements and rejects a
continuation line inside brackets that dedents below the block (`(bar.\\n baz)` at a lower indent); C and C++
files that use macros as syntax (`__BEGIN_DECLS`, `__THROW`, `TEST_MAIN()` without a semicolon, CUDA's
`__align__(16)` declarators) get ERROR/MISSING nodes, so the strict rule drops a large share of real C/C++
(glibc headers: ~77%; this repository's csrc/: ~30% of .cpp and both .cu files); Perl's grammar misses ~17% of
the Perl standard library.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from tree_sitter import Node, Parser

# Our language name (lower case, as in seedcoder.curate.languages) -> the tree-sitter-language-pack grammars to
# try, in order. Only programming languages whose grammar is a fair judge of "does this parse" are listed.
LANGUAGE_GRAMMARS: dict[str, tuple[str, ...]] = {
    "python": ("python",),
    "c": ("c", "cpp"),
    "cpp": ("cpp",),
    "cuda": ("cuda",),
    "csharp": ("csharp",),
    "objective_c": ("objc",),
    "java": ("java",),
    "kotlin": ("kotlin",),
    "scala": ("scala",),
    "groovy": ("groovy",),
    "clojure": ("clojure",),
    "go": ("go",),
    "rust": ("rust",),
    "zig": ("zig",),
    "nim": ("nim",),
    "swift": ("swift",),
    "dart": ("dart",),
    "javascript": ("javascript",),
    "typescript": ("typescript", "tsx"),
    "tsx": ("tsx",),
    "php": ("php",),
    "ruby": ("ruby",),
    "lua": ("lua",),
    "perl": ("perl",),
    "r": ("r",),
    "julia": ("julia",),
    "shell": ("bash",),
    "powershell": ("powershell",),
    "fortran": ("fortran",),
    "haskell": ("haskell",),
    "ocaml": ("ocaml",),
    "fsharp": ("fsharp",),
    "elixir": ("elixir",),
    "erlang": ("erlang",),
    "lisp": ("commonlisp",),
    "scheme": ("scheme",),
    "racket": ("racket",),
    "pascal": ("pascal",),
    "cobol": ("cobol",),
    "solidity": ("solidity",),
    "verilog": ("verilog",),
    "vhdl": ("vhdl",),
    "matlab": ("matlab",),
    "css": ("css",),
    "scss": ("scss",),
    "cmake": ("cmake",),
    "makefile": ("make",),
    "dockerfile": ("dockerfile",),
    "protobuf": ("proto",),
    "graphql": ("graphql",),
}

# Other spellings callers use for the same languages.
LANGUAGE_ALIASES: dict[str, str] = {
    "bash": "shell", "sh": "shell", "zsh": "shell", "c++": "cpp", "cxx": "cpp", "c#": "csharp", "cs": "csharp",
    "objc": "objective_c", "objective-c": "objective_c", "js": "javascript", "jsx": "javascript",
    "ts": "typescript", "py": "python", "rs": "rust", "golang": "go", "commonlisp": "lisp", "common_lisp": "lisp",
    "make": "makefile", "proto": "protobuf", "kt": "kotlin", "rb": "ruby",
}

DEFAULT_TIMEOUT_S = 2.0
_SNIPPET_CHARS = 40


@dataclass(frozen=True)
class SyntaxResult:
    """`ok`: keep the file. `checked`: a grammar judged it. `reason`: why it was dropped or not checked, else None."""

    ok: bool
    checked: bool
    reason: str | None = None


class _ParseTimeout(Exception):
    """The parse passed its deadline (raised internally; check_syntax turns it into a result)."""

    def __init__(self, grammar: str, offset: int):
        super().__init__(grammar, offset)
        self.grammar = grammar
        self.offset = offset


_local = threading.local()


def _parser(grammar: str) -> Parser:
    parsers = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    parser = parsers.get(grammar)
    if parser is None:
        from tree_sitter_language_pack import get_parser

        parser = parsers[grammar] = get_parser(grammar)
    return parser


def syntax_languages() -> set[str]:
    """The language names (ours, plus their aliases) whose files this step parses; all others pass unchecked."""
    return set(LANGUAGE_GRAMMARS) | set(LANGUAGE_ALIASES)


def grammars_for(language: str) -> tuple[str, ...]:
    """The grammars tried for `language`, in order (empty: the language is not checked)."""
    name = language.strip().lower()
    return LANGUAGE_GRAMMARS.get(LANGUAGE_ALIASES.get(name, name), ())


def _parse(parser: Parser, grammar: str, data: bytes, deadline: float | None):
    """The tree of `data`; raises _ParseTimeout once `deadline` (time.monotonic) has passed."""
    if deadline is None:
        return parser.parse(data)
    view = memoryview(data)
    progress = [0]

    def read(offset: int, _point) -> memoryview:
        return view[offset:]

    def cancel(offset: int, _has_error: bool) -> bool:
        progress[0] = offset
        return time.monotonic() > deadline

    try:
        return parser.parse(read, progress_callback=cancel)
    except ValueError:  # py-tree-sitter's "Parsing failed": our progress callback cancelled it
        parser.reset()  # otherwise the next parse would resume this one
        if time.monotonic() > deadline:
            raise _ParseTimeout(grammar, progress[0]) from None
        raise


def first_error(node: Node) -> Node | None:
    """The first ERROR or MISSING node in document order, innermost (None when the tree has none)."""
    if not node.has_error:
        return None
    while True:
        if node.is_missing:
            return node
        child = next((c for c in node.children if c.has_error or c.is_missing), None)
        if child is None:
            return node
        node = child


def describe_error(node: Node, data: bytes, grammar: str) -> str:
    """'syntax error at line L, column C (GRAMMAR grammar): ...' with a 1-based line and character column."""
    position, row = node.start_byte, node.start_point[0]
    previous = node.prev_sibling if node.is_missing else None
    if previous is not None:  # a missing token belongs right after the token before it, not at the next one
        position, row = previous.end_byte, previous.end_point[0]
    line_start = data.rfind(b"\n", 0, position) + 1
    column = len(data[line_start:position].decode("utf-8", "replace")) + 1
    where = f"line {row + 1}, column {column} ({grammar} grammar)"
    if node.is_missing:
        return f"syntax error at {where}: missing {node.type!r}"
    snippet = data[node.start_byte : node.start_byte + 4 * _SNIPPET_CHARS].decode("utf-8", "replace")
    snippet = snippet.split("\n", 1)[0][:_SNIPPET_CHARS]
    return f"syntax error at {where}: unexpected {snippet!r}"


def check_syntax(text: str, language: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> SyntaxResult:
    """Parse `text` as `language`; see the module docstring for the four outcomes. timeout_s=None: no limit."""
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"check_syntax: timeout_s must be > 0 or None, got {timeout_s!r}")
    if not isinstance(language, str):
        language = "unknown" if language is None else str(language)
    grammars = grammars_for(language)
    if not grammars:
        return SyntaxResult(ok=True, checked=False, reason=f"no syntax check for language {language!r}")
    if not isinstance(text, str):
        return SyntaxResult(ok=False, checked=False, reason=f"text is {type(text).__name__}, not a string")
    if text.startswith("\ufeff"):  # a byte-order mark is not part of the program
        text = text[1:]
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep the rest parseable
        data = text.encode("utf-8", "replace")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    first_reason = None
    for grammar in grammars:
        try:
            tree = _parse(_parser(grammar), grammar, data, deadline)
        except _ParseTimeout as timeout:
            return SyntaxResult(
                ok=False,
                checked=False,
                reason=f"syntax check timed out after {timeout_s:g} s ({timeout.grammar} grammar, at byte "
                f"{timeout.offset} of {len(data)})",
            )
        error = first_error(tree.root_node)
        if error is None:
            return SyntaxResult(ok=True, checked=True)
        if first_reason is None:  # the language's own grammar names the error
            first_reason = describe_error(error, data, grammar)
    return SyntaxResult(ok=False, checked=True, reason=first_reason)


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "LANGUAGE_ALIASES",
    "LANGUAGE_GRAMMARS",
    "SyntaxResult",
    "check_syntax",
    "first_error",
    "grammars_for",
    "syntax_languages",
]
