"""The offline rubric proxy (oracle backend "rubric", `RubricOracle`, name "rubric-proxy"): NOT an LLM.

A static proxy that measures the rubric's four criteria from the code (comment/docstring density, line lengths,
identifier quality; definitions and their size; nesting depth, duplicated lines, magic numbers, commented-out
code and debug prints; documented definitions, top-level script code, hard-coded paths) and applies the zero
rules (config/data languages and extensions, generated-file markers, minified text, data-vs-logic line ratio,
almost no logic), then writes an explanation and `Rating: [[X]]` that go through the same parser as an LLM's
answer (`curate/rating.py`). Deterministic and offline: the default when no LLM is configured. The result's
`score` is the unrounded mean of the four criteria (0 under a zero rule), the rating its rounding.
A request with rubric="web" (a web page) goes to the web proxy instead, `curate/web_rubric.py`.

Clarity's leftovers. A comment line whose text is a code statement (an assignment, a call, a statement ending
with `;`, a control header, an import, a lone closing brace: `_COMMENTED_CODE`; prose, TODOs, URLs and tool
directives are not) is commented-out code; a run of two or more such lines is a block. A debug print is a code
line calling a language's print-for-debugging (`DEBUG_PRINTS`: Python print/pprint/breakpoint/pdb, JS/TS
console.log/debugger, Java/Kotlin/Scala System.out.println/printStackTrace, C/C++ printf/puts/cout/cerr, Go
fmt.Print*/println, Rust println!/dbg!, C# Console.WriteLine, PHP var_dump/print_r, Ruby p/puts/pry, Swift,
Dart). Both scale Clarity down, to 40% at their worst (15% of the code lines commented out and 8% debug prints),
and commented-out lines do not count as comments for Readability. Python docstrings are not searched (their
examples are documentation).

    metrics = measure_code(text, "python")                              # CodeMetrics: lines, definitions, depth...
    assessment = rubric_assessment(text, "python", "pkg/util.py")       # the four criteria, their mean, the rating
    answer = rubric_answer(text, "python", "pkg/util.py")               # "...\nRating: [[7]]"
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from seedcoder.curate.rating import (
    DEFAULT_PROMPT_CHARS,
    Oracle,
    RatingRequest,
    RatingResult,
    invalid_request,
    result_from_answer,
)
from seedcoder.curate.web_rubric import web_rubric_assessment

# Languages and extensions that are configuration, data or prose rather than code: zero rule 1.
DATA_LANGUAGES = frozenset({
    "json", "yaml", "toml", "xml", "ini", "csv", "tsv", "text", "markdown", "restructuredtext", "jupyter", "svg",
    "properties", "plist", "protobuf-text",
})
DATA_EXTENSIONS = frozenset({
    ".json", ".jsonl", ".ndjson", ".geojson", ".yaml", ".yml", ".toml", ".xml", ".ini", ".cfg", ".conf", ".csv",
    ".tsv", ".txt", ".lock", ".properties", ".plist", ".svg", ".env", ".editorconfig", ".pbtxt", ".map",
})
_GENERATED = re.compile(
    r"do not edit|do not modify|auto[- ]?generated|automatically generated|machine[- ]generated|@generated|"
    r"generated (?:by|from|with|using) |this (?:file|code) (?:is|was) generated|autogen(?:erated)?\b",
    re.IGNORECASE,
)
_LINE_COMMENT = {
    "#": {"python", "shell", "ruby", "perl", "r", "julia", "elixir", "nim", "powershell", "cmake", "makefile",
          "dockerfile", "yaml", "toml", "graphql", "crystal", "tcl", "coffeescript", "gdscript"},
    "--": {"lua", "haskell", "sql", "ada", "vhdl", "elm", "purescript"},
    ";": {"lisp", "clojure", "scheme", "racket", "assembly"},
    "%": {"matlab", "erlang", "tex", "prolog"},
    "!": {"fortran"},
    "'": {"visual_basic"},
}
_BLOCK_COMMENTS = (("/*", "*/"), ("<!--", "-->"), ("{-", "-}"), ("(*", "*)"), ("--[[", "]]"), ('"""', '"""'),
                   ("'''", "'''"), ("=begin", "=end"))
_DEFINITION = re.compile(
    r"^\s*(?:(?:export|public|private|protected|internal|static|final|abstract|async|override|inline|virtual|"
    r"extern|pub(?:\([a-z]+\))?|unsafe|const|open|suspend|default)\s+)*"
    r"(?:def|fn|func|fun|function|sub|proc|procedure|method|class|struct|interface|trait|impl|module|object|enum|"
    r"defmodule|defn|defun|defp|macro_rules!|record|protocol|extension|union|type\s+\w+\s+(?:struct|interface))\b"
    r"|^\s*\(def(?:n|un|macro|method)?\s"
    r"|^\s*[A-Za-z_][\w:<>,\s\*&\[\]]*?[\s\*&]([A-Za-z_]\w*)\s*\([^;]*\)\s*(?:const\s*)?(?:noexcept\s*)?"
    r"(?:->\s*[\w:<>\*&]+\s*)?\{?\s*$"
)
_NOT_A_DEFINITION = re.compile(
    r"^\s*(?:if|for|while|switch|return|else|catch|case|do|elif|except|with|try|throw|new|await|yield|delete|not|"
    r"assert|raise|print|echo|sizeof|typeof|goto|and|or|in|is)\b"
)
_MAX_DEFINITION_LINE = 300  # longer lines are not searched for definitions (and keep the regex linear)
_CONTROL = re.compile(
    r"\b(?:if|else|elif|elsif|for|foreach|while|do|switch|case|match|when|return|yield|await|try|catch|except|"
    r"finally|raise|throw|break|continue|loop|until|unless|goto|select|defer|go|async|lambda|guard)\b"
)
_CALL = re.compile(r"[A-Za-z_]\w*\s*\(")
_ASSIGN = re.compile(r"(?<![=!<>])(?:[+\-*/%&|^]|<<|>>)?=(?![=>])|:=|<-")
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|`[^`\n]*`')
_TOKEN = re.compile(r"\w+|[^\w\s]")
_REPEAT_WINDOW = 8  # tokens: copy-pasted fragments repeat whole windows of this length
_NUMBER = re.compile(r"(?<![\w.])(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?)")
_HARD_CODED = re.compile(r"(?:[\"'](?:/home/|/Users/|/tmp/|/var/|[A-Za-z]:\\\\)|https?://(?:localhost|\d+\.\d+\.\d+\.\d+)|"
                         r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b)")
# Keywords of common languages: not identifiers when judging names.
_KEYWORDS = frozenset("""
and as assert async await break case catch class const continue def default del do elif else enum except export
extends false final finally fn for from func function go if impl import in instanceof interface is lambda let loop
match mod module mut new nil none not null or package pass private protected pub public raise return self static
struct super switch this throw throws true try type typeof use var void while with yield int float double char
bool boolean string str long short unsigned signed auto end begin then elsif unless until local nonlocal global
template typename namespace using virtual override readonly val object trait sealed data when fun defer chan map
range select interface begin rescue ensure puts print echo include require sub my our foreach where let's
""".split())
# Clarity's leftovers (module docstring). A comment's text that is a code statement:
_COMMENTED_CODE = re.compile(
    r"^[A-Za-z_$][\w$.]*(?:\[[^\]]*\])*\s*(?:[-+*/%&|^:]|<<|>>)?=(?![=>])\s*(?P<rhs>\S.*)$"  # x = ..., a.b[1] += ...
    r"|^[A-Za-z_$][\w$.]*(?:::\w+)*(?:->\w+)*\(.*\)\s*[;{]?$"  # foo(x);  self.update()  ns::f(a) {
    r"|^.*[\w)\]'\"]\s*;$"  # a C-like statement ending with ;
    r"|^(?:}\s*)?(?:else|try|do|finally)?\s*(?:if|for|while|switch|catch|else if)?\s*(?:\(.*\))?\s*\{$"  # ... {
    r"|^(?:if|elif|while|for|with|def|class|except)\b.*[()\[\]=.<>].*:$|^(?:else|try|finally):$"  # Python headers
    r"|^(?:import\s+[\w.]+(?:\s+as\s+\w+)?;?|from\s+[\w.]+\s+import\s+[\w., *()]+|#\s*include\s*[<\"].*"
    r"|package\s+[\w.]+;|return(?:\s+[\w.()\[\]]+)?;?)$"
)
_NOT_COMMENTED_CODE = re.compile(
    r"://|^(?:todo|fixme|xxx|note|hack|noqa|type:|pylint|eslint|fmt:|pragma|nolint|clang-format|prettier|istanbul|"
    r"-\*-|!|@|>>>|\.\.\.|e\.g\.|i\.e\.|see\b|example)",
    re.IGNORECASE,
)
_PROSE = re.compile(r"(?:\b[A-Za-z]{2,}\b +){3}[A-Za-z]{2,}\b")  # four plain words in a row
_JS_LIKE = ("javascript", "typescript", "tsx", "jsx", "vue", "svelte", "deno", "node")
_C_LIKE = ("c", "cpp", "cuda", "objc", "objective_c")
_DEBUG_PRINT_PATTERNS = (
    (("python",), r"^\s*(?:print|pprint|pp|ic)\s*\(|\bbreakpoint\(\s*\)|\bpdb\.set_trace\(|^\s*import\s+i?pdb\b"),
    (_JS_LIKE, r"\bconsole\.(?:log|debug|trace|dir|table|info)\s*\(|^\s*debugger\s*;?\s*$"),
    (("java", "groovy"), r"\bSystem\.(?:out|err)\.print(?:ln|f)?\s*\(|\.printStackTrace\(\s*\)"),
    (("kotlin", "scala"), r"\bSystem\.(?:out|err)\.print(?:ln|f)?\s*\(|\.printStackTrace\(\s*\)|^\s*println\s*\("),
    (_C_LIKE, r"^\s*(?:printf|puts)\s*\(|\bfprintf\s*\(\s*stderr\b|\b(?:std::)?(?:cout|cerr)\s*<<|\bNSLog\s*\("),
    (("go",), r"\bfmt\.Print(?:ln|f)?\s*\(|^\s*print(?:ln)?\s*\(|\bspew\.Dump\s*\("),
    (("rust",), r"\b(?:dbg|println|eprintln|print|eprint)!\s*\("),
    (("csharp",), r"\bConsole\.Write(?:Line)?\s*\(|\bDebug\.(?:Log|Print|WriteLine)\s*\("),
    (("php",), r"\b(?:var_dump|print_r|var_export|dd)\s*\("),
    (("ruby",), r"^\s*(?:pp?|puts)[\s(]|\bbinding\.pry\b|\bbyebug\b"),
    (("swift",), r"^\s*(?:print|debugPrint|dump)\s*\("),
    (("dart",), r"^\s*(?:print|debugPrint)\s*\("),
)
DEBUG_PRINTS: dict[str, re.Pattern[str]] = {name: re.compile(pattern) for names, pattern in _DEBUG_PRINT_PATTERNS
                                            for name in names}


def is_commented_code(comment: str) -> bool:
    """Whether a comment's text (its markers removed) is a code statement: commented-out code. Prose is not: a
    sentence's final period, or four plain words in a row (unless the line ends like code: `;`, `{`, `:`, `)`)."""
    body = comment.strip()
    if re.fullmatch(r"[}\])]+[;,)]*", body):  # the end of a commented-out block
        return True
    if len(body) < 3 or body.endswith(".") or _NOT_COMMENTED_CODE.search(body):
        return False
    if _PROSE.search(body) and not (body.endswith((";", "{", ":", ")")) and re.search(r"[(\[=<>]", body)):
        return False
    match = _COMMENTED_CODE.match(body)
    if match is None:
        return False
    rhs = match.group("rhs")
    if rhs is not None:  # an assignment: its right side is code ("x = f(y)"), not words ("x = the input size")
        return bool(re.fullmatch(r"\S+", rhs) or re.search(r"[()\[\]{}\"'0-9_.+\-*/]", rhs))
    if body.endswith(";"):  # a statement, not a clause of a sentence ("module;")
        return bool(re.search(r"[(=\[]|->|::|^(?:return|break|continue|throw|goto)\b", body))
    return True


def _comment_text(stripped: str, prefixes: tuple[str, ...], block: bool) -> str:
    """A comment line's text without its markers: the line-comment prefixes, or a block's /* */ and leading *."""
    if block:
        for marker in ("/*", "*/", "<!--", "-->", "(*", "*)", "{-", "-}"):
            stripped = stripped.replace(marker, " ")
        return stripped.strip().lstrip("*").strip()
    for prefix in sorted(prefixes, key=len, reverse=True):
        while stripped.startswith(prefix):
            stripped = stripped[len(prefix):]
    return stripped.lstrip("/!*").strip()


# Languages whose blocks are their indentation (elsewhere nesting is brace depth, or indentation without braces).
_INDENTED_LANGUAGES = frozenset({"python", "nim", "haskell", "fsharp", "coffeescript", "elm", "purescript"})
# Single letters that are conventional names (loop indices, coordinates, generic types): not penalised.
_CONVENTIONAL_SHORT = frozenset("i j k n m x y z t e f _ T K V".split())


def _comment_prefixes(language: str) -> tuple[str, ...]:
    prefixes = tuple(prefix for prefix, names in _LINE_COMMENT.items() if language in names)
    if prefixes:
        return prefixes
    return ("//", "#") if language == "php" else ("//",)  # C-like by default: there "#" starts #include/#define


def _scale(value: float, good: float, bad: float) -> float:
    """10 at `good` (or better), 0 at `bad` (or worse), linear in between; works for either direction."""
    if good == bad:
        return 10.0
    fraction = (value - bad) / (good - bad)
    return 10.0 * min(1.0, max(0.0, fraction))


@dataclass
class CodeMetrics:
    lines: int = 0
    code_lines: int = 0
    comment_lines: int = 0
    blank_lines: int = 0
    long_lines: int = 0
    max_line_chars: int = 0
    mean_line_chars: float = 0.0
    identifiers: int = 0
    short_identifiers: int = 0
    mean_identifier_chars: float = 0.0
    definitions: int = 0
    documented_definitions: int = 0
    max_depth: int = 0
    mean_depth: float = 0.0
    duplicate_lines: int = 0
    repeated_token_windows: float = 0.0  # fraction of 8-token windows of the code seen earlier in the file
    data_lines: int = 0
    logic_lines: int = 0
    magic_numbers: int = 0
    top_level_statements: int = 0
    hard_coded: int = 0
    commented_code_lines: int = 0  # comment lines that are code statements (counted in comment_lines too)
    commented_code_blocks: int = 0  # runs of two or more of them (blank lines inside a run do not end it)
    debug_prints: int = 0  # code lines with a debug print (DEBUG_PRINTS of the language)
    generated_marker: str | None = None


def measure_code(text: str, language: str) -> CodeMetrics:
    """Static measurements behind the rubric proxy (one pass over the lines; language-aware comment syntax)."""
    metrics = CodeMetrics()
    lines = text.splitlines()
    metrics.lines = len(lines)
    if not lines:
        return metrics
    header = "\n".join(lines[:40])[:4000]
    marker = _GENERATED.search(header)
    metrics.generated_marker = marker.group(0) if marker else None
    prefixes = _comment_prefixes(language)
    python_like = language in {"python"}
    lengths = [len(line) for line in lines]
    metrics.max_line_chars = max(lengths)
    metrics.mean_line_chars = sum(lengths) / len(lengths)
    metrics.long_lines = sum(1 for n in lengths if n > 100)
    # The indentation step: the most common increase between consecutive non-blank lines (continuation lines
    # aligned to a bracket make rarer, odd increases), 4 when the file has none.
    increases: Counter[int] = Counter()
    previous_width = None
    for line in lines:
        stripped = line.lstrip(" \t")
        if not stripped:
            continue
        width = len(line.expandtabs(4)) - len(stripped)
        if previous_width is not None and width > previous_width:
            increases[width - previous_width] += 1
        previous_width = width
    indent_unit = min(8, increases.most_common(1)[0][0]) if increases else 4
    in_block: str | None = None
    in_string: str | None = None
    code_text: list[str] = []
    brace_depth = paren_depth = 0
    uses_braces = language not in _INDENTED_LANGUAGES and "{" in text
    depths: list[int] = []
    seen: Counter[str] = Counter()
    last_comment_line = -2
    identifier_lengths: list[int] = []
    debug_print = DEBUG_PRINTS.get(language)
    commented_run = 0  # consecutive commented-out code lines so far

    def comment_line(text: str | None) -> None:
        """Count a comment line (`text`: its words, None for a docstring line) or, with None, end a run."""
        nonlocal commented_run
        if text is not None and is_commented_code(text):
            metrics.commented_code_lines += 1
            commented_run += 1
            return
        metrics.commented_code_blocks += commented_run >= 2
        commented_run = 0

    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            metrics.blank_lines += 1
            continue
        if in_string is not None:  # inside a multi-line string literal: code, but no structure to measure
            metrics.code_lines += 1
            comment_line(None)
            if stripped.count(in_string) % 2 == 1:
                in_string = None
            continue
        if in_block is not None:
            metrics.comment_lines += 1
            last_comment_line = number
            comment_line(None if in_block in ('"""', "'''") else _comment_text(stripped, prefixes, True))
            if in_block in stripped:
                in_block = None
            continue
        opener = next((pair for pair in _BLOCK_COMMENTS if stripped.startswith(pair[0])), None)
        if opener is not None and (opener[0] not in ('"""', "'''") or python_like):
            metrics.comment_lines += 1
            last_comment_line = number
            rest = stripped[len(opener[0]):]
            comment_line(None if opener[0] in ('"""', "'''") else _comment_text(stripped, prefixes, True))
            if opener[1] not in rest:
                in_block = opener[1]
            continue
        if stripped.startswith(prefixes):
            metrics.comment_lines += 1
            last_comment_line = number
            comment_line(_comment_text(stripped, prefixes, False))
            continue
        # a code line
        metrics.code_lines += 1
        comment_line(None)
        if debug_print is not None and debug_print.search(stripped):
            metrics.debug_prints += 1
        indent = (len(line.expandtabs(4)) - len(line.lstrip(" \t").expandtabs(4))) // indent_unit
        without_strings = _STRING.sub('""', stripped)
        code_text.append(without_strings)
        if paren_depth == 0:  # continuation lines inside ( or [ are aligned, not nested
            depths.append(brace_depth if uses_braces else indent)
        brace_depth = max(0, brace_depth + without_strings.count("{") - without_strings.count("}"))
        paren_depth = max(0, paren_depth + without_strings.count("(") + without_strings.count("[")
                          - without_strings.count(")") - without_strings.count("]"))
        if len(stripped) >= 12 and not stripped.startswith(("import ", "from ", "#include", "using ", "package ")):
            if seen[stripped]:
                metrics.duplicate_lines += 1
            seen[stripped] += 1
        names = [name for name in _IDENTIFIER.findall(without_strings) if name.lower() not in _KEYWORDS]
        identifier_lengths += [len(name) for name in names]
        metrics.short_identifiers += sum(1 for name in names if len(name) <= 2 and name not in _CONVENTIONAL_SHORT)
        numbers = _NUMBER.findall(without_strings)
        metrics.magic_numbers += sum(1 for value in numbers if value not in {"0", "1", "2", "0.0", "1.0", "10", "100"})
        skeleton = _NUMBER.sub("", without_strings)
        skeleton = re.sub(r"[\s,;:\[\]{}()\"'=+\-.]", "", skeleton)
        is_definition = (len(line) <= _MAX_DEFINITION_LINE and not _NOT_A_DEFINITION.match(line)
                         and bool(_DEFINITION.search(line)))
        if is_definition:
            metrics.definitions += 1
            follows_comment = last_comment_line == number - 1
            next_lines = [candidate.strip() for candidate in lines[number + 1 : number + 3]]
            has_docstring = python_like and any(candidate.startswith(('"""', "'''", 'r"""')) for candidate in next_lines)
            metrics.documented_definitions += follows_comment or has_docstring
        if _CONTROL.search(without_strings) or _CALL.search(without_strings) or _ASSIGN.search(without_strings):
            if not (len(skeleton) <= 2 and not _CONTROL.search(without_strings)):
                metrics.logic_lines += 1
        elif len(skeleton) <= 2 or stripped.endswith(","):
            metrics.data_lines += 1
        if indent == 0 and brace_depth == 0 and not is_definition and not stripped.startswith(
            ("import", "from", "#", "@", "}", ")", "]", "package", "use ", "using", "export", "module", "namespace")
        ):
            metrics.top_level_statements += 1
        metrics.hard_coded += len(_HARD_CODED.findall(stripped))
        if python_like:
            in_string = next((quote for quote in ('"""', "'''") if stripped.count(quote) % 2 == 1), None)
    comment_line(None)  # ends the file's last run
    tokens = _TOKEN.findall("\n".join(code_text))
    windows = [tuple(tokens[i : i + _REPEAT_WINDOW]) for i in range(len(tokens) - _REPEAT_WINDOW + 1)]
    if windows:
        metrics.repeated_token_windows = 1 - len(set(windows)) / len(windows)
    metrics.identifiers = len(identifier_lengths)
    metrics.mean_identifier_chars = sum(identifier_lengths) / len(identifier_lengths) if identifier_lengths else 0.0
    metrics.max_depth = max(depths, default=0)
    metrics.mean_depth = sum(depths) / len(depths) if depths else 0.0
    return metrics


def zero_rule(text: str, language: str, path: str, metrics: CodeMetrics) -> str | None:
    """Which zero rule applies (a sentence for the explanation), or None."""
    extension = os.path.splitext((path or "").lower())[1]
    if language in DATA_LANGUAGES or extension in DATA_EXTENSIONS:
        return f"the file is configuration or data ({language or extension}), with almost no logic"
    if metrics.generated_marker:
        return f"the file is auto-generated (its header says {metrics.generated_marker!r})"
    if metrics.max_line_chars > 1000 or (metrics.lines >= 1 and metrics.mean_line_chars > 300):
        return (f"the file looks minified or machine-generated (longest line {metrics.max_line_chars:,} characters, "
                f"mean {metrics.mean_line_chars:,.0f})")
    code = metrics.code_lines
    if code == 0:
        return "the file has no code at all"
    if metrics.data_lines >= 0.6 * code and metrics.data_lines >= 5:
        return f"the file is mostly data: {metrics.data_lines} of {code} code lines are literals"
    if metrics.logic_lines < 3 or metrics.logic_lines < 0.1 * code:
        return f"the file has almost no logic ({metrics.logic_lines} of {code} code lines)"
    return None


@dataclass(frozen=True)
class RubricAssessment:
    """The proxy's judgement of one file: the four criteria (0-10 each), their mean, the rating, the explanation.
    Under a zero rule (`zero_rule`) the criteria are None and the score and rating are 0."""

    metrics: CodeMetrics
    zero_rule: str | None
    readability: float | None
    modularity: float | None
    clarity: float | None
    reusability: float | None
    score: float  # the unrounded mean of the criteria, within 1..10 (0 under a zero rule)
    rating: int  # the score rounded half up
    explanation: str


def rubric_assessment(text: str, language: str, path: str) -> RubricAssessment:
    """Measure one file (the first DEFAULT_PROMPT_CHARS characters, what an LLM rater sees) and judge it."""
    language = (language or "unknown").lower()
    text = text[:DEFAULT_PROMPT_CHARS]  # what an LLM rater sees of the file (and bounded work per file)
    metrics = measure_code(text, language)
    header = "[rubric-proxy: a static estimate of the rubric from measured code properties, not an LLM judgement]"
    rule = zero_rule(text, language, path, metrics)
    if rule is not None:
        return RubricAssessment(metrics, rule, None, None, None, None, 0.0, 0, f"{header}\nZero rule: {rule}.")
    m = metrics
    code = max(m.code_lines, 1)
    real_comments = m.comment_lines - m.commented_code_lines  # commented-out code does not explain anything
    comment_ratio = real_comments / max(m.code_lines + real_comments, 1)
    long_fraction = m.long_lines / max(m.lines - m.blank_lines, 1)
    short_fraction = m.short_identifiers / max(m.identifiers, 1)
    if comment_ratio < 0.08:
        comments = _scale(comment_ratio, 0.08, 0.0) * 0.7
    elif comment_ratio <= 0.45:
        comments = 10.0
    else:
        comments = _scale(comment_ratio, 0.45, 0.9) * 0.5 + 5.0
    names = 0.5 * _scale(short_fraction, 0.1, 0.5) + 0.5 * _scale(m.mean_identifier_chars, 6.0, 2.0)
    readability = 0.35 * comments + 0.3 * _scale(long_fraction, 0.02, 0.3) + 0.35 * names

    lines_per_definition = code / m.definitions if m.definitions else float("inf")
    if m.definitions == 0:
        modularity = 5.0 if code <= 20 else _scale(code, 20, 120) * 0.3
    else:
        modularity = _scale(lines_per_definition, 25, 150)
    modularity = max(modularity, 1.0 if m.definitions else 0.0)

    duplicate_fraction = m.duplicate_lines / code
    magic_per_line = m.magic_numbers / code
    commented_fraction = m.commented_code_lines / code
    debug_fraction = m.debug_prints / code
    structure = (0.4 * (0.5 * _scale(m.max_depth, 4, 10) + 0.5 * _scale(m.mean_depth, 2.0, 5.0))
                 + 0.4 * min(_scale(duplicate_fraction, 0.03, 0.3), _scale(m.repeated_token_windows, 0.1, 0.4))
                 + 0.2 * _scale(magic_per_line, 0.1, 0.8))
    leftovers = 0.5 * _scale(commented_fraction, 0.01, 0.15) + 0.5 * _scale(debug_fraction, 0.02, 0.08)
    clarity = structure * (0.4 + 0.06 * leftovers)  # leftovers 10: no change; 0: 40% of the structure's score

    documented = m.documented_definitions / m.definitions if m.definitions else 0.0
    script_fraction = m.top_level_statements / code
    reusability = (0.5 * 10.0 * documented + 0.3 * _scale(script_fraction, 0.1, 0.6)
                   + 0.2 * _scale(m.hard_coded / code, 0.0, 0.05))

    score = min(10.0, max(1.0, (readability + modularity + clarity + reusability) / 4))
    rating = int(math.floor(score + 0.5))
    explanation = "\n".join([
        header,
        f"Readability ({readability:.1f}/10): comment/docstring lines {comment_ratio:.0%} of non-blank lines; "
        f"{long_fraction:.0%} of lines over 100 characters; mean identifier length {m.mean_identifier_chars:.1f}, "
        f"{short_fraction:.0%} of identifiers one or two characters.",
        f"Modularity ({modularity:.1f}/10): {m.definitions} function/class definitions for {m.code_lines} code lines"
        + (f" ({lines_per_definition:.0f} lines each)." if m.definitions else "."),
        f"Clarity ({clarity:.1f}/10): nesting depth max {m.max_depth}, mean {m.mean_depth:.1f}; "
        f"{duplicate_fraction:.0%} duplicated lines, {m.repeated_token_windows:.0%} repeated code fragments; "
        f"{magic_per_line:.2f} magic numbers per line; {m.commented_code_lines} commented-out code lines "
        f"({m.commented_code_blocks} block(s)), {m.debug_prints} debug print(s).",
        f"Reusability ({reusability:.1f}/10): {documented:.0%} of definitions documented; "
        f"{script_fraction:.0%} top-level script statements; {m.hard_coded} hard-coded paths or addresses.",
    ])
    return RubricAssessment(metrics, None, readability, modularity, clarity, reusability, score, rating, explanation)


def rubric_answer(text: str, language: str, path: str) -> str:
    """The rubric proxy's answer for one file: an explanation of the four criteria, then `Rating: [[X]]`."""
    assessment = rubric_assessment(text, language, path)
    return f"{assessment.explanation}\nRating: [[{assessment.rating}]]"


class RubricOracle(Oracle):
    """The offline static proxy of the rubric (see the module docstring); clearly not an LLM. A request with
    rubric="web" is judged by the web proxy (`curate/web_rubric.py`: the page text and the row's web columns)."""

    name = "rubric-proxy"

    def rate(self, requests: Sequence[RatingRequest]) -> list[RatingResult]:
        results = []
        for request in requests:
            problem = invalid_request(request)
            if problem is not None:
                results.append(RatingResult(id=request.id, rating=None, explanation="", raw="", error=problem))
                continue
            if request.rubric == "web":
                assessment = web_rubric_assessment(request.text, url=request.path, columns=request.columns)
            else:
                assessment = rubric_assessment(request.text, request.language, request.path)
            answer = f"{assessment.explanation}\nRating: [[{assessment.rating}]]"
            results.append(result_from_answer(request.id, answer, score=round(assessment.score, 4)))
        return results


__all__ = ["DATA_EXTENSIONS", "DATA_LANGUAGES", "DEBUG_PRINTS", "CodeMetrics", "RubricAssessment", "RubricOracle",
           "is_commented_code", "measure_code", "rubric_answer", "rubric_assessment", "zero_rule"]
