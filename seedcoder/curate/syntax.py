"""Syntax filter (curation step 4): drop a file that its language's parser rejects.

    result = check_syntax(text, "python")            # SyntaxResult(ok, checked, reason)
    if not result.ok:
        drop_reason = result.reason                   # "syntax error at line 12, column 5 (CPython 3.11): ..."
    "rust" in syntax_languages()                      # True: the language names this step checks

Python is judged by CPython itself, the interpreter running this step; every other checked language by a
tree-sitter grammar from `tree-sitter-language-pack` (<1: the grammars ship in the wheel, nothing is downloaded).
Outcomes:
  * ok=True,  checked=True   the parser accepts the file.
  * ok=False, checked=True   it rejects it; `reason` names the first error, its 1-based line and character column
                             and what is wrong (CPython's own message; for tree-sitter the unexpected text or the
                             missing token).
  * ok=True,  checked=False  no parser is used for the language (not code, no grammar in the pack, or a grammar
                             too dialect-dependent to judge by: sql, assembly, html/vue/svelte, data and prose
                             formats); `reason` says so. Such files pass.
  * ok=False, checked=False  the check ran past `timeout_s`, or the text is not a string; `reason` says which.
                             Drop these too: a file that cannot be parsed in seconds is pathological.

Python: tree-sitter's Python grammar is not CPython's. It keeps files with indentation errors (`if x:\\ny = 1`, an
unexpected indent, a `try` without `except`, an empty `def` body) and Python 2 statements, and rejects some valid
code, so the check is CPython's: its parser plus its symbol-table pass (`symtable.symtable`, which runs the parser
into C structures without building Python `ast` objects and without code generation: about 8 MB/s here, twice
`ast.parse`). What it accepts is what the running interpreter parses: Python 2 files are dropped, and so is syntax
newer than the interpreter (3.12's `type X = int` or nested same-quote f-strings on 3.11); run curation on the
newest Python the project supports. Stricter than `ast.parse`: the symbol-table errors (a duplicate argument name,
`nonlocal` at module level, `import *` inside a function, an unknown `__future__` feature). Not checked, as in
`ast.parse`: the errors only code generation finds (`return`/`yield`/`await` outside a function, `break` outside a
loop, most misplaced `from __future__` imports); code generation is skipped because it is slower and can be quadratic
(71 s for a 1 MB file of 33,000 functions with one name). A file too deeply nested or too complex for CPython
(RecursionError, MemoryError from its parser stack) is rejected with that reason; SyntaxWarnings (invalid escape
sequences, `x is 1`) are not errors, even under `-W error` (a warnings filter for the checked source's name only).

Time limits. Tree-sitter: py-tree-sitter 0.25+ has no parser timeout any more, so the parse goes through the
read-callback form of `Parser.parse`, whose `progress_callback` tree-sitter calls every ~100 parse operations;
ours returns True (cancel) once the deadline has passed, and the parser is reset before its next use. The read
callback hands tree-sitter a memoryview of the whole rest of the file, so it runs a handful of times per file;
together the two callbacks cost about nothing next to the parse (`benchmarks/curate_syntax.py` measures it).
CPython: its parser is one C call that nothing can interrupt, and it is linear in the file (slowest rates measured
here, thread CPU time: ~330 kB/s, on a one-statement file of starred arguments or 40,000 small functions, each with
an error at its end; ordinary code: 4-8 MB/s). A file of up to timeout_s x CPYTHON_IN_PROCESS_BYTES_PER_S bytes
(200 kB at the default 2 s) is parsed in this process, so its parse fits the limit even at the slowest rate on a
loaded machine; a larger one in a child process (the same interpreter and the same function, ~40 ms to start), which
is killed at the deadline.

Where a file fails with its own grammar, a close superset is tried before it is dropped: C files with C++ (many
`.h` files are C++), TypeScript with TSX (JSX in a `.ts`-labelled file), all within the same deadline.

Parsers are cached per thread (a tree-sitter parser must not be shared between threads while it parses), which
makes them cached per process in the process-pool and Ray executors.

Known limits of the tree-sitter grammars (measured while writing this; see the tests): they are not the
compilers. C and C++ files that use macros as syntax (`__BEGIN_DECLS`, `__THROW`, `TEST_MAIN()` without a
semicolon, CUDA's `__align__(16)` declarators) get ERROR/MISSING nodes, so the strict rule drops a large share of
real C/C++ (glibc headers: ~77%; this repository's csrc/: ~30% of .cpp and both .cu files); Perl's grammar misses
~17% of the Perl standard library. Against the offline parsers this machine has (`benchmarks/curate_syntax.py`
part 2, 400 files found on the machine plus 2 damaged copies each): JavaScript agrees with node's parser on 99.75%
of the cases; shell with `bash -n` on only 89%, and tree-sitter-bash drops 25 of 400 valid system scripts (POSIX
`for i do`, here-documents after `:`, some case patterns). `gcc -fsyntax-only` is no fair reference for C: it needs
the includes and macro definitions of the file's own build.
"""

from __future__ import annotations

import os
import re
import subprocess
import symtable
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the CPython check's child process does not load tree-sitter
    from tree_sitter import Node, Parser

# Checked by CPython (see the module docstring), not by a tree-sitter grammar.
PYTHON = "python"

# Our language name (lower case, as in seedcoder.curate.languages) -> the tree-sitter-language-pack grammars to
# try, in order. Only programming languages whose grammar is a fair judge of "does this parse" are listed.
LANGUAGE_GRAMMARS: dict[str, tuple[str, ...]] = {
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

# A third of the slowest CPython parse rate measured (~330 kB/s of thread CPU time; wall time on this shared 2-core
# machine under load was 3x the CPU time): a file of up to timeout_s x this many bytes is parsed in this process
# within the limit; a larger one (> 200 kB at the default 2 s) goes to a child process killed at the deadline.
CPYTHON_IN_PROCESS_BYTES_PER_S = 100_000
# The name CPython gives the checked source; its warnings are ignored by a filter that matches this name only.
_SOURCE_NAME = "<seedcoder-syntax-check>"
_IGNORE_SOURCE_WARNINGS = ("ignore", None, Warning, re.compile(re.escape(_SOURCE_NAME) + r"\Z"), 0)
_CPYTHON = f"CPython {sys.version_info[0]}.{sys.version_info[1]}"
# sys.path entry that holds the `seedcoder` package (the repository root, or site-packages when installed).
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CHILD_COMMAND = (
    f"import sys; sys.path.append({_PACKAGE_PARENT!r}); "
    "from seedcoder.curate.syntax import _cpython_child_main; _cpython_child_main()"
)


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
    return set(LANGUAGE_GRAMMARS) | {PYTHON} | set(LANGUAGE_ALIASES)


def canonical_language(language: str) -> str:
    """Our name for `language`: lower case, aliases resolved ("Py" -> "python", "bash" -> "shell")."""
    name = language.strip().lower()
    return LANGUAGE_ALIASES.get(name, name)


def grammars_for(language: str) -> tuple[str, ...]:
    """The tree-sitter grammars tried for `language`, in order (empty for Python, which CPython checks, and for
    languages that are not checked)."""
    return LANGUAGE_GRAMMARS.get(canonical_language(language), ())


def _ignore_warnings_about_checked_source() -> None:
    """SyntaxWarnings about the checked file (invalid escapes, `1if x`, `x is 1`) are no errors of it, and under
    `-W error` CPython would raise them as SyntaxError. warnings.catch_warnings swaps process-global state and is
    not thread-safe, so instead one filter matching only our source name goes first, again whenever it was removed
    or another filter went before it (pytest, for one, restores the filters after each test)."""
    if not warnings.filters or warnings.filters[0] != _IGNORE_SOURCE_WARNINGS:
        warnings.filterwarnings("ignore", module=_IGNORE_SOURCE_WARNINGS[3].pattern)


def cpython_error(text: str) -> str | None:
    """Why the running CPython rejects `text` as a module (parser and symbol-table pass), or None if it accepts it."""
    _ignore_warnings_about_checked_source()
    try:
        symtable.symtable(text, _SOURCE_NAME, "exec")
    except SyntaxError as error:  # IndentationError and TabError too
        if not error.lineno:  # e.g. "source code string cannot contain null bytes"
            return f"syntax error ({_CPYTHON}): {error.msg}"
        column = f", column {error.offset}" if error.offset else ""  # a 1-based character offset
        return f"syntax error at line {error.lineno}{column} ({_CPYTHON}): {error.msg}"
    except RecursionError as error:
        return f"syntax error ({_CPYTHON}): nested too deeply to compile (RecursionError: {error})"
    except MemoryError as error:  # the parser's stack overflowed ("too complex"), an empty message on 3.11
        return f"syntax error ({_CPYTHON}): too complex to parse (MemoryError{': ' if str(error) else ''}{error})"
    except ValueError as error:  # null bytes, on interpreters that raise ValueError for them
        return f"syntax error ({_CPYTHON}): {error}"
    return None


def _cpython_child_main() -> None:
    """The child process of a large file: UTF-8 source on stdin, cpython_error's reason (or nothing) on stdout."""
    reason = cpython_error(sys.stdin.buffer.read().decode("utf-8"))
    sys.stdout.buffer.write((reason or "").encode("utf-8"))


def _check_python(text: str, data: bytes, timeout_s: float | None, deadline: float | None) -> SyntaxResult:
    if deadline is None or len(data) <= timeout_s * CPYTHON_IN_PROCESS_BYTES_PER_S:
        reason = cpython_error(text)
        return SyntaxResult(ok=reason is None, checked=True, reason=reason)
    # -I -S: no site-packages or environment, only the standard library and this module (~40 ms to start)
    command = [sys.executable, "-I", "-S", "-c", _CHILD_COMMAND]
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=max(deadline - time.monotonic(), 1e-3))
    except subprocess.TimeoutExpired:  # run() has killed and reaped the child
        return SyntaxResult(
            ok=False,
            checked=False,
            reason=f"syntax check timed out after {timeout_s:g} s ({_CPYTHON} in a child process, {len(data)} bytes)",
        )
    if done.returncode < 0:  # killed by a signal: CPython itself crashed on this file
        return SyntaxResult(ok=False, checked=True, reason=f"syntax error ({_CPYTHON}): the parser crashed on this "
                            f"file (signal {-done.returncode}, in a child process)")
    if done.returncode != 0:  # our bug or a broken environment, not the file's fault: say so loudly
        raise RuntimeError(f"check_syntax: the CPython child process failed (exit status {done.returncode}): "
                           f"{done.stderr.decode('utf-8', 'replace')[-2000:]}")
    reason = done.stdout.decode("utf-8") or None
    return SyntaxResult(ok=reason is None, checked=True, reason=reason)


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
    python = canonical_language(language) == PYTHON
    if not grammars and not python:
        return SyntaxResult(ok=True, checked=False, reason=f"no syntax check for language {language!r}")
    if not isinstance(text, str):
        return SyntaxResult(ok=False, checked=False, reason=f"text is {type(text).__name__}, not a string")
    if text.startswith("\ufeff"):  # a byte-order mark is not part of the program
        text = text[1:]
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep the rest parseable ("?" is as wrong outside a string)
        data = text.encode("utf-8", "replace")
        text = data.decode("utf-8")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    if python:
        return _check_python(text, data, timeout_s, deadline)
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
    "CPYTHON_IN_PROCESS_BYTES_PER_S",
    "DEFAULT_TIMEOUT_S",
    "LANGUAGE_ALIASES",
    "LANGUAGE_GRAMMARS",
    "PYTHON",
    "SyntaxResult",
    "canonical_language",
    "check_syntax",
    "cpython_error",
    "first_error",
    "grammars_for",
    "syntax_languages",
]
