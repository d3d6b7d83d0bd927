"""The sft_seeds step (issue [14], step 1 of the paper's §3.1): seed snippets for instruction synthesis, chosen from a
curated dataset of files by file score and language, plus code-text hybrids.

    [[steps]]
    step = "sft_seeds"
    in = "score_filter"          # any dataset of files: text, language, path (and `score` when scored)
    languages = ["python", "c"]  # default []: every language found
    min_score = 5.0              # rows scored below are dropped ("low_score: ..."); rows without a score pass
    per_language = 1000          # at most this many seeds per language: the highest-scored first
    snippet_lines = [5, 60]      # a snippet's length in lines, [min, max]
    hybrids = true               # Markdown / reStructuredText sections around code, notebook cells

One snippet per file, the best suitable one (`snippet_lines`, at most `max_chars`): documented ones first (a
docstring or comment), then the longest, then the earliest.
  * Python: a top-level function or class (`ast`), or a method of a top-level class (dedented), with its
    decorators and the comment lines right above it.
  * Other code: a brace-balanced block after a line that looks like a function, class or struct signature (any
    depth; nested ones are dedented), with the comment lines above it; with none suitable, the first `max` lines.
    Data and text files (json, yaml, toml, xml, ini, text) have none.
  * Hybrids (`seed_kind = "hybrid"`): in Markdown a fenced code block with the text of its section around it (from
    its heading, or the previous code block, to the next one), trimmed to the paragraph before and after the
    fence when too long; reStructuredText likewise with `.. code-block:: LANG` (and `::` literal blocks); a
    Jupyter notebook's markdown cell and the code cells after it, rendered as Markdown with ``` fences. A hybrid
    needs prose beside the code. Its language is the code's (the fence's tag, the notebook's kernel).

Kept rows are SFT items (docs/curation.md): `id` = stable_id(source id, "sft"), `text` = the snippet, `language` =
the snippet's language (the language of the code later asked for), `source` = "sft", and the columns `seed_text`
(the snippet), `seed_kind` ("code" | "hybrid"), `seed_id` (the source row's id), `score` (the source row's, null if
none). Dropped rows are the input rows as read (text = the file), with `seed_text` / `seed_kind` where a snippet
was found. Drop reasons, in the order they are decided: "empty_seed: ...", "low_score: S < min_score",
"no_snippet: why", "not_selected: language X is not in languages", "not_selected: rank R of N LANG seeds,
per_language = P". Seeds are ranked per language by score, highest first (rows without a score after scored
ones), ties by a seeded hash of the row id, so the choice does not depend on the shard layout.

A global step (per-language caps): a map per shard finds the snippets (in `_work/`), the reduce ranks them, a
filter per shard writes the rows. The reduce holds each input shard's rows while it writes its decisions.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.languages import LANGUAGES, language_of
from seedcoder.curate.step import StepContext, StepKind, column, run_global_step
from seedcoder.curate.web_filter import sample_value

SFT_SOURCE = "sft"
CODE, HYBRID = "code", "hybrid"
DOCUMENT_LANGUAGES = ("markdown", "restructuredtext", "jupyter")
DATA_LANGUAGES = frozenset({"json", "yaml", "toml", "xml", "ini", "text"})
# Hash-comment languages: `#` starts a comment (elsewhere it is a preprocessor line or an attribute)
HASH_COMMENT_LANGUAGES = frozenset({"shell", "ruby", "perl", "r", "julia", "makefile", "cmake", "dockerfile",
                                    "powershell", "elixir", "nim", "tcl", "coffeescript"})
# Fence tags and kernel names that are not our language names or extensions
FENCE_ALIASES = {
    "py": "python", "py3": "python", "python3": "python", "ipython": "python", "ipython3": "python",
    "pycon": "python", "js": "javascript", "node": "javascript", "nodejs": "javascript", "ts": "typescript",
    "sh": "shell", "bash": "shell", "zsh": "shell", "console": "shell", "shell-session": "shell", "shellsession": "shell",
    "c++": "cpp", "cxx": "cpp", "golang": "go", "rs": "rust", "rb": "ruby", "cs": "csharp", "c#": "csharp",
    "kt": "kotlin", "objc": "objective_c", "objective-c": "objective_c", "ps1": "powershell", "pwsh": "powershell",
    "yml": "yaml", "docker": "dockerfile", "make": "makefile", "latex": "tex", "txt": "text", "plain": "text",
    "none": "text", "output": "text", "default": "text",
}


# ------------------------------------------------------------------------------------------ snippets
@dataclass(frozen=True)
class Snippet:
    text: str
    language: str
    kind: str = CODE
    documented: bool = False  # a docstring, a comment, or (hybrids) prose beside the code
    tagged: bool = True  # hybrids: the code's language is known

    @property
    def lines(self) -> int:
        return self.text.count("\n") + 1


def fence_language(tag: str) -> str:
    """Our language name for a code fence's tag or a notebook kernel's language ("unknown" when none fits)."""
    tag = tag.strip().strip("{}").lstrip(".").lower()
    if not tag:
        return "unknown"
    tag = FENCE_ALIASES.get(tag, tag)
    if tag in LANGUAGES:
        return tag
    return language_of(f"snippet.{tag}")


def _clean(lines: Sequence[str]) -> str:
    """Lines -> text without leading and trailing blank lines or trailing spaces."""
    lines = [line.rstrip() for line in lines]
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return "\n".join(lines)


def _comment_lines_above(lines: Sequence[str], start: int, prefixes: tuple[str, ...]) -> int:
    """The first line of the run of comment (or annotation) lines right above line `start` (0-based)."""
    while start > 0 and lines[start - 1].strip().startswith(prefixes) and lines[start - 1].strip():
        start -= 1
    return start


def python_snippets(text: str) -> list[Snippet] | str:
    """Top-level functions and classes of a Python file, or why there are none (it does not parse)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError) as error:
        return f"python does not parse ({type(error).__name__}: {str(error)[:80]})"
    except (RecursionError, MemoryError) as error:
        return f"python too deeply nested to parse ({type(error).__name__})"
    lines = text.splitlines()
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    snippets = []
    # top-level definitions, then the methods of top-level classes (dedented): a class too long to fit still
    # gives a seed, and a class that fits wins over its methods by length
    nodes = [node for node in tree.body if isinstance(node, definitions)]
    nodes += [child for node in nodes if isinstance(node, ast.ClassDef) for child in node.body
              if isinstance(child, definitions)]
    for node in nodes:
        if node.end_lineno is None:
            continue
        first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list]) - 1
        first = _comment_lines_above(lines, first, ("#",))
        body = lines[first : node.end_lineno]
        documented = any(ast.get_docstring(item) for item in [node, *node.body] if isinstance(item, definitions)) or any(
            line.strip().startswith("#") for line in body)
        snippets.append(Snippet(_clean(textwrap.dedent("\n".join(body)).splitlines()), "python", CODE, documented))
    return snippets


@dataclass(frozen=True)
class _Brace:
    line: int  # 0-based
    char: str  # "{" or "}"
    depth: int  # depth before the brace


def _braces(text: str, hash_comments: bool) -> list[_Brace]:
    """The braces of `text` outside comments and string literals (a small lexer: //, /* */ or #, quotes)."""
    braces: list[_Brace] = []
    depth = line = 0
    state = ""  # "", "line", "block", or the quote that opened a string
    index, size = 0, len(text)
    while index < size:
        char = text[index]
        following = text[index + 1] if index + 1 < size else ""
        if char == "\n":
            line += 1
            if state == "line" or state in ("'", '"'):  # no multi-line '...' / "...": a Rust lifetime is not a string
                state = ""
        elif state == "line":
            pass
        elif state == "block":
            if char == "*" and following == "/":
                state, index = "", index + 1
        elif state:
            if char == "\\":
                index += 1
            elif char == state:
                state = ""
        elif hash_comments and char == "#":
            state = "line"
        elif not hash_comments and char == "/" and following in "/*" and following:
            state, index = ("line" if following == "/" else "block"), index + 1
        elif char in "'\"`":
            state = char
        elif char == "{":
            braces.append(_Brace(line, "{", depth))
            depth += 1
        elif char == "}":
            depth = max(depth - 1, 0)
            braces.append(_Brace(line, "}", depth))
        index += 1
    return braces


_CONTROL_WORDS = frozenset({"if", "for", "while", "switch", "return", "else", "do", "catch", "case", "sizeof", "try",
                            "using", "new", "throw", "elif", "until", "unless", "when", "foreach", "synchronized",
                            "with", "lock", "fixed", "defer", "go", "select", "match", "loop", "await", "yield",
                            "assert", "delete", "goto", "echo", "print", "puts"})
_MODIFIERS = (r"(?:(?:export|default|pub(?:\([\w:]+\))?|public|private|protected|internal|static|final|abstract|"
              r"sealed|open|override|async|unsafe|extern|inline|virtual|partial|data|suspend|typedef|"
              r"template\s*<[^>]*>)\s+)*")
_KEYWORD_SIGNATURE = re.compile(r"^\s*" + _MODIFIERS + r"(?:fn|func|function|class|struct|interface|enum|trait|impl|"
                                r"object|module|namespace|union|record|protocol|extension|sub|procedure|fun)\b")
_ARROW_SIGNATURE = re.compile(r"^\s*(?:export\s+)?(?:const|let|var)\s+\w+\s*=\s*(?:async\s+)?"
                              r"(?:function\b|\([^)]*\)\s*=>|\w+\s*=>)")
_CALL_SIGNATURE = re.compile(r"^\s*((?:[\w:<>,*&\[\]~]+\s+)+)[*&]*\s*[\w:~]+\s*\(")
_COMMENT_PREFIXES = ("//", "/*", "*", "@")


def looks_like_signature(line: str) -> bool:
    """A line that starts a function, class or struct (not a control statement, a call or a prototype)."""
    stripped = line.strip()
    if not stripped or stripped.endswith(";") or stripped.startswith(("}", "#", "//", "/*", "*")):
        return False
    if _ARROW_SIGNATURE.match(line):
        return True
    if _KEYWORD_SIGNATURE.match(line):
        return not re.search(r"=\s*\{?\s*$", stripped)  # `struct s table[] = {`: data, not a definition
    match = _CALL_SIGNATURE.match(line)
    if not match or "=" in line.split("(", 1)[0]:
        return False
    return match.group(1).split()[0] not in _CONTROL_WORDS


def brace_snippets(text: str, language: str) -> list[Snippet]:
    """Brace-balanced blocks that open within two lines of a signature-looking line, with the comments above."""
    lines = text.splitlines()
    hash_comments = language in HASH_COMMENT_LANGUAGES
    braces = _braces(text, hash_comments)
    comment_prefixes = ("#",) if hash_comments else _COMMENT_PREFIXES
    snippets = []
    opened = 0  # the index in `braces` where the search for the next block's "{" starts
    for start, line in enumerate(lines):
        if not looks_like_signature(line):
            continue
        while opened < len(braces) and braces[opened].line < start:
            opened += 1
        if opened >= len(braces) or braces[opened].char != "{" or braces[opened].line > start + 2:
            continue
        depth = braces[opened].depth
        end = next((brace.line for brace in braces[opened + 1 :] if brace.char == "}" and brace.depth == depth), None)
        if end is None:  # never closed: the file is truncated or the lexer lost track
            continue
        first = _comment_lines_above(lines, start, comment_prefixes)
        block = lines[first : end + 1]
        marks = ("#",) if hash_comments else ("//", "/*", "* ")
        documented = first < start or any(mark in text_line for text_line in block for mark in marks)
        snippets.append(Snippet(_clean(textwrap.dedent("\n".join(block)).splitlines()), language, CODE, documented))
    return snippets


def head_snippet(text: str, language: str, max_lines: int) -> Snippet:
    """The fallback: the file's first `max_lines` lines."""
    return Snippet(_clean(text.splitlines()[:max_lines]), language, CODE, False)


# ------------------------------------------------------------------------------------------ hybrids
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
_MD_HEADING = re.compile(r"^ {0,3}#{1,6}(\s|$)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\. (?:code-block|code|sourcecode)::\s*(\S*)")
_RST_HIGHLIGHT = re.compile(r"^\s*\.\. highlight::\s*(\S+)")
_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")


@dataclass(frozen=True)
class _Block:
    start: int  # first line of the code block (the fence or directive), 0-based
    end: int  # last line, inclusive
    language: str


def markdown_blocks(lines: Sequence[str]) -> tuple[list[_Block], set[int]]:
    """Fenced code blocks and heading lines (ATX and setext) outside them."""
    blocks, headings = [], set()
    index = 0
    while index < len(lines):
        match = _FENCE_OPEN.match(lines[index])
        if match:
            fence = match.group(1)
            close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
            end = next((j for j in range(index + 1, len(lines)) if close.match(lines[j])), None)
            if end is None:  # an unclosed fence runs to the end of the document: no block
                break
            blocks.append(_Block(index, end, fence_language(match.group(2))))
            index = end + 1
            continue
        if _MD_HEADING.match(lines[index]):
            headings.add(index)
        elif (_SETEXT.match(lines[index]) and index > 0 and lines[index - 1].strip()
              and (not blocks or blocks[-1].end < index - 1)):
            headings.update((index - 1, index))
        index += 1
    return blocks, headings


def rst_blocks(lines: Sequence[str]) -> tuple[list[_Block], set[int]]:
    """`.. code-block:: LANG` directives and `::` literal blocks (the last `.. highlight::` language), and the
    lines of section titles (title and adornment)."""
    def indent(line: str) -> int:
        return len(line) - len(line.lstrip())

    blocks, headings = [], set()
    highlight = "unknown"
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _RST_DIRECTIVE.match(line)
        literal = line.rstrip().endswith("::") and not line.lstrip().startswith("..")
        if _RST_HIGHLIGHT.match(line):
            highlight = fence_language(_RST_HIGHLIGHT.match(line).group(1))
        if directive or literal:
            base = indent(line)
            end, body = index, False
            for j in range(index + 1, len(lines)):
                if not lines[j].strip():
                    continue
                if indent(lines[j]) <= base:
                    break
                end, body = j, body or not lines[j].strip().startswith(":")
            if body:
                language = fence_language(directive.group(2)) if directive else highlight
                # a literal block's "text::" line is prose: the block starts at the code
                blocks.append(_Block(index if directive else index + 1, end, language))
                index = end + 1
                continue
        if (_RST_ADORNMENT.match(line) and index > 0 and lines[index - 1].strip()
                and not _RST_ADORNMENT.match(lines[index - 1])
                and len(line.strip()) >= len(lines[index - 1].strip())):
            headings.update((index - 1, index))
            if index > 1 and _RST_ADORNMENT.match(lines[index - 2]):  # an overline
                headings.add(index - 2)
        index += 1
    return blocks, headings


def section_snippets(text: str, language: str, snippet_lines: Sequence[int], max_chars: int) -> list[Snippet]:
    """Markdown / reStructuredText: each code block with the text of its section around it, trimmed to fit."""
    lines = text.splitlines()
    blocks, headings = (rst_blocks if language == "restructuredtext" else markdown_blocks)(lines)
    low, high = snippet_lines
    snippets = []
    for position, block in enumerate(blocks):
        previous_end = blocks[position - 1].end if position else -1
        following_start = blocks[position + 1].start if position + 1 < len(blocks) else len(lines)
        above = [i for i in headings if previous_end < i < block.start]
        start = max(above) if above else previous_end + 1
        while above and start - 1 in headings and start - 1 > previous_end:  # a title's lines (text + adornment)
            start -= 1
        below = [i for i in headings if block.end < i < following_start]
        end = min(below) if below else following_start  # exclusive
        # the whole section; else the paragraph around the code (with the heading); else nothing
        before_paragraph = block.start
        while before_paragraph > start and not lines[before_paragraph - 1].strip():
            before_paragraph -= 1
        while before_paragraph > start and lines[before_paragraph - 1].strip() and before_paragraph - 1 not in headings:
            before_paragraph -= 1
        after_paragraph = block.end + 1
        while after_paragraph < end and not lines[after_paragraph].strip():
            after_paragraph += 1
        while after_paragraph < end and lines[after_paragraph].strip():
            after_paragraph += 1
        heading_lines = [i for i in range(start, before_paragraph) if i in headings]
        if heading_lines and heading_lines[-1] + 1 < before_paragraph:
            heading_lines.append(-1)  # a blank line where text was left out
        choices = [list(range(start, end)),
                   heading_lines + list(range(before_paragraph, after_paragraph)),
                   heading_lines + list(range(before_paragraph, block.end + 1))]
        for chosen in choices:
            body = [lines[i] if i >= 0 else "" for i in chosen]
            snippet = _clean(body)
            count = snippet.count("\n") + 1
            if low <= count <= high and len(snippet) <= max_chars:
                if any(i >= 0 and lines[i].strip() and not block.start <= i <= block.end and i not in headings
                       for i in chosen):
                    snippets.append(Snippet(snippet, block.language, HYBRID, True,
                                            block.language not in DATA_LANGUAGES | {"unknown"}))
                break
    return snippets


def _cell_text(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return ("".join(source) if isinstance(source, list) else str(source)).strip("\n")


def notebook_snippets(text: str, snippet_lines: Sequence[int], max_chars: int) -> list[Snippet] | str:
    """A notebook's markdown cells, each with the code cells after it, rendered as Markdown with ``` fences."""
    try:
        notebook = json.loads(text)
    except ValueError as error:
        return f"not a Jupyter notebook (JSON: {str(error)[:60]})"
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        return "not a Jupyter notebook (no cells)"
    metadata = notebook.get("metadata") if isinstance(notebook.get("metadata"), dict) else {}
    kernel = (metadata.get("kernelspec") or {}).get("language") or (metadata.get("language_info") or {}).get("name")
    language = fence_language(str(kernel)) if kernel else "python"
    language = "python" if language == "unknown" else language
    fence_tag = language if language != "objective_c" else "objc"
    cells = [cell for cell in cells if isinstance(cell, dict) and _cell_text(cell).strip()]
    low, high = snippet_lines
    snippets = []
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "markdown":
            continue
        parts, best = [_cell_text(cell)], None
        for code in cells[index + 1 :]:
            if code.get("cell_type") != "code":
                break
            code_text = _cell_text(code)
            fence = "```" + "`" * max((len(run) - 2 for run in re.findall(r"`{3,}", code_text)), default=0)
            parts.append(f"{fence}{fence_tag}\n{code_text}\n{fence}")
            rendered = _clean("\n\n".join(parts).splitlines())
            count = rendered.count("\n") + 1
            if count > high or len(rendered) > max_chars:
                break
            if count >= low:
                best = rendered
        if best is not None:
            snippets.append(Snippet(best, language, HYBRID, True, True))
    return snippets


# ------------------------------------------------------------------------------------------ one file
def choose_snippet(text: str, language: str, path: str, options: Mapping[str, Any]) -> Snippet | str:
    """The best suitable snippet of a file (module docstring), or why it has none."""
    low, high = options["snippet_lines"]
    max_chars = options["max_chars"]
    notebook = language == "jupyter" or path.lower().endswith(".ipynb")
    if notebook or language in DOCUMENT_LANGUAGES:
        what = "notebook" if notebook else f"{language} document"
        if not options["hybrids"]:
            return f"a {what} (hybrids = false)"
        found = (notebook_snippets(text, (low, high), max_chars) if notebook
                 else section_snippets(text, language, (low, high), max_chars))
        if isinstance(found, str):
            return found
        if not found:
            return (f"a {what} without a code block and prose that fit in {low}-{high} lines"
                    f"{'' if notebook else ' (a section around a code block)'}")
        return max(enumerate(found), key=lambda item: (item[1].tagged, item[1].lines, -item[0]))[1]
    if language in DATA_LANGUAGES:
        return f"{language} is data or text, not code"
    if language == "python":
        found = python_snippets(text)
        if isinstance(found, str):
            return found
        suitable = [s for s in found if low <= s.lines <= high and len(s.text) <= max_chars]
        if not suitable:
            return (f"no top-level function or class of {low}-{high} lines" if not found else
                    f"none of its {len(found)} functions/classes/methods has {low}-{high} lines and "
                    f"<= {max_chars} characters")
    else:
        suitable = [s for s in brace_snippets(text, language) if low <= s.lines <= high and len(s.text) <= max_chars]
        if not suitable:
            head = head_snippet(text, language, high)
            if head.text.count("\n") + 1 < low or len(head.text) > max_chars:
                return f"no block of {low}-{high} lines, and its first {high} lines hold " + (
                    f"fewer than {low}" if len(head.text) <= max_chars else f"over {max_chars} characters")
            return head
    return max(enumerate(suitable), key=lambda item: (item[1].documented, item[1].lines, -item[0]))[1]


def seed_decision(text: str | None, language: str | None, path: str | None, score: float | None,
                  options: Mapping[str, Any]) -> tuple[Snippet | None, str | None]:
    """(the file's snippet or None, the reason it cannot be a seed or None): the row-local checks, in order."""
    if text is None or not text.strip():
        return None, "empty_seed: the file is empty or whitespace"
    if score is not None and score < options["min_score"]:
        return None, f"low_score: {score:.3g} < min_score {options['min_score']:g}"
    found = choose_snippet(text, language or "unknown", path or "", options)
    if isinstance(found, str):
        return None, f"no_snippet: {found}"
    if options["languages"] and found.language not in options["languages"]:
        return found, f"not_selected: language {found.language} is not in languages"
    return found, None


# ------------------------------------------------------------------------------------------ the step
def _score(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def seeds_map_task(in_dir: str, index: int, out_path: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Map: each row's snippet and row-local decision (seed_decision) -> _work/map-NNNNN.parquet."""
    table = ds.read_part(in_dir, index)
    scores = [_score(value) for value in column(table, "score")]
    columns: dict[str, list] = {"seed_text": [], "seed_kind": [], "seed_language": [], "reason": []}
    for text, language, path, score in zip(column(table, "text"), column(table, "language"), column(table, "path"),
                                           scores):
        snippet, reason = seed_decision(text, language, path, score, options)
        columns["seed_text"].append(snippet.text if snippet else None)
        columns["seed_kind"].append(snippet.kind if snippet else None)
        columns["seed_language"].append(snippet.language if snippet else None)
        columns["reason"].append(reason)
    result = pa.table({"id": pa.array(column(table, "id"), pa.string()), "score": pa.array(scores, pa.float64()),
                       **{name: pa.array(values, pa.string()) for name, values in columns.items()}})
    ds.write_table(out_path, result)
    return {"rows": table.num_rows, "snippets": sum(value is not None for value in columns["seed_text"])}


def rank_seeds(ids: Sequence[str], languages: Sequence[str], scores: Sequence[float | None], candidate: Sequence[bool],
               seed: int) -> tuple[list[int | None], dict[str, int]]:
    """Each candidate's rank within its language (1 = best: highest score, scored before unscored, ties by a seeded
    hash of the id) and the candidates per language; None for rows that are not candidates."""
    groups: dict[str, list[int]] = {}
    for row, ok in enumerate(candidate):
        if ok:
            groups.setdefault(languages[row], []).append(row)
    ranks: list[int | None] = [None] * len(ids)
    for rows in groups.values():
        rows.sort(key=lambda row: (scores[row] is None, -(scores[row] or 0.0), sample_value(str(ids[row]), seed), row))
        for rank, row in enumerate(rows, 1):
            ranks[row] = rank
    return ranks, {language: len(rows) for language, rows in sorted(groups.items())}


def seeds_reduce(map_paths: Sequence[str], parts: Sequence[int], options: Mapping[str, Any], *, in_dir: str
                 ) -> tuple[list[pa.Table], dict[str, Any]]:
    """Rank the candidates per language, keep `per_language` of each; decisions carry the kept rows' new values and
    the dropped rows' own (read back from the input shard)."""
    maps = [ds.read_table(path) for path in map_paths]
    ids = [value for table in maps for value in table.column("id").to_pylist()]
    languages = [value for table in maps for value in table.column("seed_language").to_pylist()]
    scores = [value for table in maps for value in table.column("score").to_pylist()]
    reasons = [value for table in maps for value in table.column("reason").to_pylist()]
    candidate = [reason is None for reason in reasons]
    cap = options["per_language"]
    ranks, counts = rank_seeds(ids, languages, scores, candidate, options["seed"])
    for row, rank in enumerate(ranks):
        if rank is not None and rank > cap:
            reasons[row] = f"not_selected: rank {rank} of {counts[languages[row]]} {languages[row]} seeds, per_language = {cap}"
    decisions, start = [], 0
    kinds: dict[str, int] = {}
    for part, table in zip(parts, maps):
        rows = range(start, start + table.num_rows)
        source = ds.read_part(in_dir, part, [name for name in ("id", "text", "language", "source")])
        keep = [reasons[row] is None for row in rows]
        seed_text, seed_kind = table.column("seed_text").to_pylist(), table.column("seed_kind").to_pylist()
        for kept, kind in zip(keep, seed_kind):
            if kept:
                kinds[kind] = kinds.get(kind, 0) + 1

        def pick(new: Sequence[Any], old: Sequence[Any], keep: list[bool] = keep) -> list[Any]:
            return [n if k else o for k, n, o in zip(keep, new, old)]

        old_ids = column(source, "id")
        decisions.append(pa.table({
            "keep": pa.array(keep, pa.bool_()),
            ds.DROP_REASON: pa.array([reasons[row] for row in rows], pa.string()),
            "id": pa.array(pick([ds.stable_id(str(i), SFT_SOURCE) for i in old_ids], old_ids), pa.string()),
            "text": pa.array(pick(seed_text, column(source, "text")), pa.string()),
            "language": pa.array(pick(table.column("seed_language").to_pylist(), column(source, "language")), pa.string()),
            "source": pa.array(pick([SFT_SOURCE] * len(keep), column(source, "source")), pa.string()),
            "seed_text": pa.array(seed_text, pa.string()),
            "seed_kind": pa.array(seed_kind, pa.string()),
            "seed_id": pa.array(old_ids, pa.string()),
            "score": table.column("score"),
        }))
        start += table.num_rows
    kept = {language: min(count, cap) for language, count in counts.items()}
    summary = {"rows": len(ids), "candidates": counts, "seeds": kept, "seed_kinds": dict(sorted(kinds.items())),
               "per_language": cap}
    return decisions, summary


def run_sft_seeds(ctx: StepContext) -> dict[str, Any]:
    reduce = functools.partial(seeds_reduce, in_dir=ctx.inputs["in"])
    return run_global_step(ctx, "seedcoder.curate.sft_seeds:seeds_map_task", reduce)


@dataclass
class SftSeedsOptions:
    languages: list[str] = option([], "the languages of seeds (of the code; a hybrid's is its code's); [] = every "
                                      "language found")
    min_score: float = option(0.0, "files scored below are dropped (low_score); files without a score pass")
    per_language: int = option(1000, "at most this many seeds per language, the highest-scored first")
    snippet_lines: list[int] = option([5, 60], "[min, max] lines of a snippet")
    max_chars: int = option(6000, "at most this many characters in a snippet")
    hybrids: bool = option(True, "seeds from Markdown / reStructuredText sections and notebook cells (code + text)")
    seed: int = option(0, "the seed of the hash that breaks score ties")

    def __post_init__(self) -> None:
        unknown = [name for name in self.languages if name not in LANGUAGES]
        if unknown:
            raise ValueError(f"languages: unknown language name(s) {unknown} (names: seedcoder.curate.languages)")
        if not math.isfinite(self.min_score):
            raise ValueError(f"min_score: must be a number, got {self.min_score}")
        if self.per_language < 1:
            raise ValueError(f"per_language: must be >= 1, got {self.per_language}")
        if len(self.snippet_lines) != 2 or not 1 <= self.snippet_lines[0] <= self.snippet_lines[1]:
            raise ValueError(f"snippet_lines: [min, max] with 1 <= min <= max, got {self.snippet_lines}")
        if self.max_chars < 1:
            raise ValueError(f"max_chars: must be >= 1, got {self.max_chars}")


STEP = StepKind("sft_seeds", "seed snippets for instruction synthesis, by file score and language (plus code-text "
                "hybrids)", run_sft_seeds, SftSeedsOptions, line="sft")


__all__ = ["STEP", "Snippet", "SftSeedsOptions", "brace_snippets", "choose_snippet", "fence_language",
           "looks_like_signature", "markdown_blocks", "notebook_snippets", "python_snippets", "rank_seeds",
           "rst_blocks", "run_sft_seeds", "section_snippets", "seed_decision", "seeds_map_task", "seeds_reduce"]
