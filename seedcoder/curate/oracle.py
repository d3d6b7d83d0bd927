"""Oracle ratings (curation step 5): an LLM (or an offline proxy) rates a file's quality 0-10 with the paper's rubric.

    oracle = make_oracle("rubric")                                      # default: offline static proxy
    oracle = make_oracle("openai", base_url="http://localhost:8000/v1", model="Qwen/Qwen2.5-Coder-32B-Instruct",
                         concurrency=16, cache_dir="runs/oracle-cache")  # any OpenAI-compatible server
    oracle = make_oracle("vllm", model="...")                           # in-process vLLM (when installed)
    results = oracle.rate([RatingRequest(id="a1", text=code, language="python", path="pkg/util.py")])
    results[0].rating, results[0].explanation                           # 7, "Readability: ..."
    chosen = stratified_sample(languages, 1000, seed=0)                 # row indices to rate

The rubric (Seed-Coder, "Let the Code Model Curate Data for Itself"): the rater judges readability, modularity,
clarity and reusability, writes its explanation first and ends with `Rating: [[X]]`, X an integer 0-10; a file
gets 0 when it is mostly configuration or data with almost no logic, or auto-generated. `build_rating_prompt`
writes that prompt; `parse_rating` reads the last `Rating: [[X]]` of an answer and returns None for a missing,
malformed (7.5, "seven", 7/10) or out-of-range value: the caller counts such answers as unparseable and leaves
them out (RatingResult.error says why).

Backends (one interface: `Oracle.rate(requests) -> results` in request order, `Oracle.name`):
  * "rubric" (`RubricOracle`, name "rubric-proxy"): NOT an LLM. A static proxy that measures the same four
    criteria from the code (comment/docstring density, line lengths, identifier quality; definitions and their
    size; nesting depth, duplicated lines, magic numbers; documented definitions, top-level script code,
    hard-coded paths) and applies the zero rules (config/data languages and extensions, generated-file markers,
    minified text, data-vs-logic line ratio, almost no logic), then writes an explanation and `Rating: [[X]]`
    that go through the same parser. Deterministic and offline: the default when no LLM is configured.
  * "openai" (`OpenAIOracle`): any OpenAI-compatible chat endpoint (`vllm serve`, a provider) through the
    `openai` client: `concurrency` threads, `max_retries` retries with exponential backoff on connection errors,
    timeouts, 408/409/429 and 5xx (other 4xx fail at once), `timeout_s` per request, and an on-disk response
    cache (`cache_dir`) keyed by SHA-256 of (model, prompt, sampling parameters), each entry written atomically.
  * "vllm" (`VLLMOracle`): vLLM in this process (lazy import; a clear OracleError when it is not installed),
    batched generation, the same cache.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateConfigError
from seedcoder.curate.executor import Task
from seedcoder.curate.step import WORKER_CACHE, Option, StepContext, StepKind, column, say
from seedcoder.fileio import atomic_write_text


class OracleError(ValueError):
    """A bad oracle option or a missing backend; the message names it."""


@dataclass(frozen=True)
class RatingRequest:
    id: str
    text: str
    language: str
    path: str


@dataclass(frozen=True)
class RatingResult:
    """`rating` is None when the answer had no parseable rating or the request failed; `error` then says which."""

    id: str
    rating: int | None
    explanation: str
    raw: str
    error: str | None = None


# ------------------------------------------------------------------------------------------ the prompt
RATING_SCALE = (0, 10)
DEFAULT_PROMPT_CHARS = 32_000  # ~8-10k tokens of code: long files are cut (and the prompt says so)

RUBRIC_PROMPT = """You are an expert software engineer reviewing source code that may be used to train a code \
language model. Rate the quality of the {language} file below on an integer scale from 0 to 10.

Judge these four aspects:
1. Readability: clear, meaningful names; consistent formatting; a reasonable amount of helpful comments and \
docstrings; lines of reasonable length.
2. Modularity: the logic is organised into well-scoped functions, classes or modules with clear \
responsibilities, rather than one long monolithic block.
3. Clarity: straightforward control flow with shallow nesting, little redundancy or copy-pasted code, no \
unexplained magic values; the intent of the code is easy to follow.
4. Reusability: general, well-defined interfaces; components that could be reused in other projects; no \
hard-coded values that tie the code to one machine or one use.

Give a rating of 0 if any of the following holds:
- the file is mostly configuration or data (for example JSON, YAML, XML, CSV, long tables of literals or \
constants), with almost no logic;
- the file contains almost no logic (for example only imports, declarations or boilerplate);
- the file is auto-generated (for example by a compiler, a protocol or interface generator or another tool; \
often marked "DO NOT EDIT" or "auto-generated"), or minified.

First write a brief explanation of your assessment covering the four aspects. Then, on the last line, give the \
rating in exactly this format:
Rating: [[X]]
where X is an integer from 0 to 10.

File: {path}
Language: {language}
{fence}{fence_language}
{code}
{fence}
"""


def build_rating_prompt(text: str, language: str, path: str, *, max_chars: int = DEFAULT_PROMPT_CHARS) -> str:
    """The rubric prompt for one file; files longer than `max_chars` characters are cut, with a note saying so."""
    if max_chars <= 0:
        raise OracleError(f"build_rating_prompt: max_chars must be > 0, got {max_chars}")
    code = text if len(text) <= max_chars else (
        text[:max_chars] + f"\n... [truncated: the first {max_chars:,} of {len(text):,} characters are shown]"
    )
    longest_backtick_run = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest_backtick_run + 1)  # a fence the code itself cannot close
    language = language or "unknown"
    fence_language = "" if language == "unknown" else re.sub(r"[^A-Za-z0-9_+#-]", "", language)
    return RUBRIC_PROMPT.format(language=language, path=path or "<unnamed>", fence=fence,
                                fence_language=fence_language, code=code)


# "Rating: [[7]]", also "**Rating:** [[ 7 ]]"; the value inside the brackets is validated separately.
_RATING = re.compile(r"rating\W{0,8}\[\[([^\[\]\n]{0,20})\]\]", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+(?:\.0+)?")


def split_answer(answer: str) -> tuple[str, int | None, str | None]:
    """(explanation, rating, problem): the text before the last `Rating: [[X]]`, X as int, or why there is none."""
    if not isinstance(answer, str) or not answer.strip():
        return "", None, "empty answer"
    matches = list(_RATING.finditer(answer))
    if not matches:
        return answer.strip(), None, "no 'Rating: [[X]]' in the answer"
    last = matches[-1]
    explanation = answer[: last.start()].strip()
    value = last.group(1).strip()
    if not _INTEGER.fullmatch(value):
        return explanation, None, f"malformed rating [[{value}]] (an integer 0-10 is required)"
    rating = int(float(value))
    low, high = RATING_SCALE
    if not low <= rating <= high:
        return explanation, None, f"rating {rating} is outside {low}-{high}"
    return explanation, rating, None


def parse_rating(answer: str) -> int | None:
    """The rating of an answer (its last `Rating: [[X]]`, X an integer 0-10), or None: unparseable."""
    return split_answer(answer)[1]


def result_from_answer(request_id: str, answer: str) -> RatingResult:
    explanation, rating, problem = split_answer(answer)
    error = None if rating is not None else f"unparseable answer: {problem}"
    return RatingResult(id=request_id, rating=rating, explanation=explanation, raw=answer, error=error)


def summarize_ratings(results: Sequence[RatingResult]) -> dict[str, Any]:
    """Counts for a report: rated, unparseable (an answer without a valid rating), failed, and the histogram."""
    rated = [r.rating for r in results if r.rating is not None]
    unparseable = sum(1 for r in results if r.rating is None and (r.error or "").startswith("unparseable"))
    histogram = Counter(rated)
    return {
        "total": len(results),
        "rated": len(rated),
        "unparseable": unparseable,
        "failed": len(results) - len(rated) - unparseable,
        "histogram": {str(k): histogram.get(k, 0) for k in range(RATING_SCALE[0], RATING_SCALE[1] + 1)},
        "mean": float(np.mean(rated)) if rated else None,
    }


def _invalid_request(request: RatingRequest) -> str | None:
    if not isinstance(request.text, str):
        return f"request {request.id!r}: text is {type(request.text).__name__}, not a string"
    return None


# ------------------------------------------------------------------------------------------ sampling
def stratified_sample(languages: Sequence[str], n: int, *, seed: int = 0, min_per_language: int = 10) -> list[int]:
    """`n` row indices (sorted) stratified by language: proportional to each language's share, at least
    `min_per_language` per language (or all its rows, if fewer; the minimum shrinks to n // languages when n is
    too small to give every language that many). Deterministic for a given (languages, n, seed)."""
    if n < 0:
        raise ValueError(f"stratified_sample: n must be >= 0, got {n}")
    if min_per_language < 0:
        raise ValueError(f"stratified_sample: min_per_language must be >= 0, got {min_per_language}")
    total = len(languages)
    if n >= total:
        return list(range(total))
    groups: dict[str, list[int]] = {}
    for index, language in enumerate(languages):
        groups.setdefault(language if isinstance(language, str) and language else "unknown", []).append(index)
    names = sorted(groups)
    sizes = np.array([len(groups[name]) for name in names], dtype=np.int64)
    floor = min(min_per_language, n // len(names))
    minimum = np.minimum(sizes, floor)
    ideal = n * sizes / total
    allocation = np.clip(np.floor(ideal).astype(np.int64), minimum, sizes)
    # Too many (the minimums pushed small languages up): take back from the languages furthest above their ideal.
    while allocation.sum() > n:
        excess = np.where(allocation > minimum, allocation - ideal, -np.inf)
        allocation[int(np.argmax(excess))] -= 1
    # Too few (rounding down): give to the largest remainders that still have rows (ties: the larger language).
    deficit = int(n - allocation.sum())
    while deficit > 0:
        remainder = np.where(allocation < sizes, ideal - allocation, -np.inf)
        order = np.lexsort((-sizes, -remainder))  # by remainder desc, then size desc; stable over names
        order = [i for i in order if allocation[i] < sizes[i]][:deficit]
        for i in order:
            allocation[i] += 1
        deficit -= len(order)
    chosen: list[int] = []
    for name, count in zip(names, allocation):
        if count:
            rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
            chosen += rng.choice(np.array(groups[name]), size=int(count), replace=False).tolist()
    return sorted(chosen)


# ------------------------------------------------------------------------------------------ interface
class Oracle(abc.ABC):
    """Rates files; `rate` returns one RatingResult per request, in request order, and never raises for one bad
    request or one failed call (the result's `error` says what happened)."""

    name: str = "oracle"

    @abc.abstractmethod
    def rate(self, requests: Sequence[RatingRequest]) -> list[RatingResult]: ...


# ------------------------------------------------------------------------------------------ rubric proxy
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
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            metrics.blank_lines += 1
            continue
        if in_string is not None:  # inside a multi-line string literal: code, but no structure to measure
            metrics.code_lines += 1
            if stripped.count(in_string) % 2 == 1:
                in_string = None
            continue
        if in_block is not None:
            metrics.comment_lines += 1
            last_comment_line = number
            if in_block in stripped:
                in_block = None
            continue
        opener = next((pair for pair in _BLOCK_COMMENTS if stripped.startswith(pair[0])), None)
        if opener is not None and (opener[0] not in ('"""', "'''") or python_like):
            metrics.comment_lines += 1
            last_comment_line = number
            rest = stripped[len(opener[0]):]
            if opener[1] not in rest:
                in_block = opener[1]
            continue
        if stripped.startswith(prefixes):
            metrics.comment_lines += 1
            last_comment_line = number
            continue
        # a code line
        metrics.code_lines += 1
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


def rubric_answer(text: str, language: str, path: str) -> str:
    """The rubric proxy's answer for one file: an explanation of the four criteria, then `Rating: [[X]]`."""
    language = (language or "unknown").lower()
    text = text[:DEFAULT_PROMPT_CHARS]  # what an LLM rater sees of the file (and bounded work per file)
    metrics = measure_code(text, language)
    header = "[rubric-proxy: a static estimate of the rubric from measured code properties, not an LLM judgement]"
    rule = zero_rule(text, language, path, metrics)
    if rule is not None:
        return f"{header}\nZero rule: {rule}.\nRating: [[0]]"
    m = metrics
    code = max(m.code_lines, 1)
    comment_ratio = m.comment_lines / (m.code_lines + m.comment_lines)
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
    clarity = (0.4 * (0.5 * _scale(m.max_depth, 4, 10) + 0.5 * _scale(m.mean_depth, 2.0, 5.0))
               + 0.4 * min(_scale(duplicate_fraction, 0.03, 0.3), _scale(m.repeated_token_windows, 0.1, 0.4))
               + 0.2 * _scale(magic_per_line, 0.1, 0.8))

    documented = m.documented_definitions / m.definitions if m.definitions else 0.0
    script_fraction = m.top_level_statements / code
    reusability = (0.5 * 10.0 * documented + 0.3 * _scale(script_fraction, 0.1, 0.6)
                   + 0.2 * _scale(m.hard_coded / code, 0.0, 0.05))

    mean = (readability + modularity + clarity + reusability) / 4
    rating = int(min(10, max(1, math.floor(mean + 0.5))))
    return "\n".join([
        header,
        f"Readability ({readability:.1f}/10): comment/docstring lines {comment_ratio:.0%} of non-blank lines; "
        f"{long_fraction:.0%} of lines over 100 characters; mean identifier length {m.mean_identifier_chars:.1f}, "
        f"{short_fraction:.0%} of identifiers one or two characters.",
        f"Modularity ({modularity:.1f}/10): {m.definitions} function/class definitions for {m.code_lines} code lines"
        + (f" ({lines_per_definition:.0f} lines each)." if m.definitions else "."),
        f"Clarity ({clarity:.1f}/10): nesting depth max {m.max_depth}, mean {m.mean_depth:.1f}; "
        f"{duplicate_fraction:.0%} duplicated lines, {m.repeated_token_windows:.0%} repeated code fragments; "
        f"{magic_per_line:.2f} magic numbers per line.",
        f"Reusability ({reusability:.1f}/10): {documented:.0%} of definitions documented; "
        f"{script_fraction:.0%} top-level script statements; {m.hard_coded} hard-coded paths or addresses.",
        f"Rating: [[{rating}]]",
    ])


class RubricOracle(Oracle):
    """The offline static proxy of the rubric (see the module docstring); clearly not an LLM."""

    name = "rubric-proxy"

    def rate(self, requests: Sequence[RatingRequest]) -> list[RatingResult]:
        results = []
        for request in requests:
            problem = _invalid_request(request)
            if problem is not None:
                results.append(RatingResult(id=request.id, rating=None, explanation="", raw="", error=problem))
                continue
            answer = rubric_answer(request.text, request.language, request.path)
            results.append(result_from_answer(request.id, answer))
        return results


# ------------------------------------------------------------------------------------------ response cache
class ResponseCache:
    """Answers on disk, one JSON file per key (DIR/ab/abcd....json), each written atomically; a corrupt or
    foreign file reads as a miss and is rewritten. Thread-safe (no shared state besides the files)."""

    def __init__(self, directory: str):
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)

    @staticmethod
    def key(model: str, prompt: str, sampling: Mapping[str, Any]) -> str:
        payload = json.dumps({"model": model, "prompt": prompt, "sampling": dict(sampling)}, sort_keys=True,
                             ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], f"{key}.json")

    def get(self, key: str) -> str | None:
        try:
            with open(self._path(key), encoding="utf-8") as file:
                record = json.load(file)
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("answer"), str):
            return None
        return record["answer"]

    def put(self, key: str, answer: str, *, model: str, sampling: Mapping[str, Any]) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        record = {"key": key, "model": model, "sampling": dict(sampling), "answer": answer, "time": time.time()}
        atomic_write_text(path, json.dumps(record, ensure_ascii=False) + "\n")


class _ChatOracle(Oracle):
    """Shared by the LLM backends: prompts, sampling parameters, the cache, parsing."""

    def __init__(self, *, model: str | None = None, temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 1024,
                 seed: int | None = 0, cache_dir: str | None = None, max_prompt_chars: int = DEFAULT_PROMPT_CHARS):
        if not model or not isinstance(model, str):
            raise OracleError(f"{type(self).__name__}: `model` (the served model's name) is required")
        if max_tokens <= 0:
            raise OracleError(f"{type(self).__name__}: max_tokens must be > 0, got {max_tokens}")
        self.model = model
        self.sampling = {"temperature": float(temperature), "top_p": float(top_p), "max_tokens": int(max_tokens),
                         "seed": seed}
        self.max_prompt_chars = max_prompt_chars
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.cache_hits = 0
        self.calls = 0

    def _prompt(self, request: RatingRequest) -> str:
        return build_rating_prompt(request.text, request.language, request.path, max_chars=self.max_prompt_chars)

    @abc.abstractmethod
    def _complete_many(self, prompts: list[str]) -> list[tuple[str | None, str | None]]:
        """(answer, error) per prompt."""

    def rate(self, requests: Sequence[RatingRequest]) -> list[RatingResult]:
        results: list[RatingResult | None] = [None] * len(requests)
        pending: list[tuple[int, str, str | None]] = []  # (position, prompt, cache key)
        for position, request in enumerate(requests):
            problem = _invalid_request(request)
            if problem is not None:
                results[position] = RatingResult(id=request.id, rating=None, explanation="", raw="", error=problem)
                continue
            prompt = self._prompt(request)
            key = ResponseCache.key(self.model, prompt, self.sampling) if self.cache else None
            cached = self.cache.get(key) if self.cache else None
            if cached is not None:
                self.cache_hits += 1
                results[position] = result_from_answer(request.id, cached)
            else:
                pending.append((position, prompt, key))
        if pending:
            answers = self._complete_many([prompt for _, prompt, _ in pending])
            for (position, _, key), (answer, error) in zip(pending, answers):
                request_id = requests[position].id
                if error is not None:
                    results[position] = RatingResult(id=request_id, rating=None, explanation="", raw=answer or "",
                                                     error=error)
                    continue
                if self.cache is not None:
                    self.cache.put(key, answer, model=self.model, sampling=self.sampling)
                results[position] = result_from_answer(request_id, answer)
        return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ OpenAI-compatible
_RETRY_STATUS = frozenset({408, 409, 429})


class OpenAIOracle(_ChatOracle):
    """Any OpenAI-compatible chat-completions endpoint (vllm serve, sglang, a provider) via the `openai` client.

    api_key_env names the environment variable with the key; when it is unset the key "EMPTY" is sent (local
    servers accept anything). Each request: at most 1 + max_retries attempts, waiting backoff_s * 2**attempt
    (with ±25% jitter, capped at max_backoff_s) between them; `timeout_s` bounds each attempt.
    """

    def __init__(self, *, model: str | None = None, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, max_retries: int = 4, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 timeout_s: float = 120.0, system_prompt: str | None = None, **options: Any):
        super().__init__(model=model, **options)
        if concurrency < 1:
            raise OracleError(f"OpenAIOracle: concurrency must be >= 1, got {concurrency}")
        if max_retries < 0 or backoff_s < 0 or not timeout_s > 0:
            raise OracleError("OpenAIOracle: max_retries and backoff_s must be >= 0 and timeout_s > 0, got "
                              f"{max_retries}, {backoff_s}, {timeout_s}")
        try:
            import openai
        except ImportError as error:  # pragma: no cover - openai is a dependency of this package
            raise OracleError(f"backend 'openai' needs the openai package: {error}") from error
        self._openai = openai
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.timeout_s = float(timeout_s)
        self.system_prompt = system_prompt
        # The client's own retries are off: ours are counted, backed off and reported the same for every error.
        self.client = openai.OpenAI(base_url=self.base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                                    timeout=self.timeout_s, max_retries=0)
        self.name = f"openai:{model}"
        self._lock = threading.Lock()
        self._jitter = random.Random(0)

    def _retryable(self, error: Exception) -> bool:
        openai = self._openai
        if isinstance(error, (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                              openai.InternalServerError)):
            return True
        status = getattr(error, "status_code", None)
        return isinstance(status, int) and (status in _RETRY_STATUS or status >= 500)

    def _complete_one(self, prompt: str) -> tuple[str | None, str | None]:
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
            {"role": "user", "content": prompt}]
        options = {k: v for k, v in self.sampling.items() if v is not None}
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.calls += 1
            try:
                response = self.client.chat.completions.create(model=self.model, messages=messages, **options)
                content = response.choices[0].message.content if response.choices else None
                if not content:
                    return None, "request failed: the endpoint returned an empty answer"
                return content, None
            except Exception as error:  # the client's errors; anything else is a bug and also reported per request
                last_error = error
                if not self._retryable(error) or attempt == self.max_retries:
                    break
                with self._lock:
                    jitter = self._jitter.uniform(0.75, 1.25)
                time.sleep(min(self.max_backoff_s, self.backoff_s * 2**attempt) * jitter)
        attempts = attempt + 1
        return None, f"request failed after {attempts} attempt(s): {type(last_error).__name__}: {last_error}"

    def _complete_many(self, prompts: list[str]) -> list[tuple[str | None, str | None]]:
        if len(prompts) == 1 or self.concurrency == 1:
            return [self._complete_one(prompt) for prompt in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)),
                                thread_name_prefix="oracle-openai") as pool:
            return list(pool.map(self._complete_one, prompts))


# ------------------------------------------------------------------------------------------ vLLM in-process
class VLLMOracle(_ChatOracle):
    """vLLM in this process: `LLM(model, **engine_options).chat(...)` over all pending prompts at once."""

    def __init__(self, *, model: str | None = None, engine_options: Mapping[str, Any] | None = None, **options: Any):
        super().__init__(model=model, **options)
        try:
            import vllm
        except ImportError as error:
            raise OracleError(
                "backend 'vllm' needs the vllm package in this environment (pip install vllm; a CUDA machine), "
                f"which is not importable here ({error}); use backend 'openai' against a `vllm serve` endpoint, "
                "or 'rubric' (offline proxy)"
            ) from error
        self._vllm = vllm
        self.engine = vllm.LLM(model=model, **dict(engine_options or {}))
        self.name = f"vllm:{model}"

    def _complete_many(self, prompts: list[str]) -> list[tuple[str | None, str | None]]:
        params = self._vllm.SamplingParams(**{k: v for k, v in self.sampling.items() if v is not None})
        conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
        self.calls += len(prompts)
        try:
            outputs = self.engine.chat(conversations, params, use_tqdm=False)
        except Exception as error:  # one failed batch is reported per request, not raised
            return [(None, f"request failed: vLLM generation: {type(error).__name__}: {error}")] * len(prompts)
        answers = []
        for output in outputs:
            text = output.outputs[0].text if output.outputs else ""
            answers.append((text, None) if text else (None, "request failed: vLLM returned an empty answer"))
        return answers


# ------------------------------------------------------------------------------------------ factory
BACKENDS = {"rubric": RubricOracle, "openai": OpenAIOracle, "vllm": VLLMOracle}


def make_oracle(backend: str = "rubric", **options: Any) -> Oracle:
    """An oracle by backend name ("rubric", "openai", "vllm"); options go to its constructor (see each class)."""
    if backend not in BACKENDS:
        raise OracleError(f"unknown oracle backend {backend!r}; choose one of {sorted(BACKENDS)}")
    cls = BACKENDS[backend]
    if backend == "rubric" and options:
        raise OracleError(f"backend 'rubric' takes no options, got {sorted(options)}")
    try:
        return cls(**options)
    except TypeError as error:  # an unknown or missing keyword: name it in the pipeline's terms
        raise OracleError(f"backend {backend!r}: bad options {sorted(options)}: {error}") from error


# ------------------------------------------------------------------------------------------ the step
def oracle_task(in_dir: str, rows: Sequence[tuple[int, int]], out_dir: str, index: int, backend: str,
                backend_options: Mapping[str, Any]) -> dict[str, Any]:
    """Rate the sampled rows `rows` ((shard, row) pairs of in_dir) and write them as part `index`."""
    by_part: dict[int, list[int]] = {}
    for part, row in rows:
        by_part.setdefault(part, []).append(row)
    tables = [ds.read_part(in_dir, part, list(ds.BASE_COLUMNS)).take(pa.array(picked, pa.int64()))
              for part, picked in by_part.items()]
    table = pa.concat_tables(tables) if tables else ds.base_table([])
    oracle = step_oracle(backend, backend_options)
    requests = [RatingRequest(id=i, text=t, language=lang, path=p) for i, t, lang, p in
                zip(column(table, "id"), column(table, "text"), column(table, "language"), column(table, "path"))]
    results = {result.id: result for result in oracle.rate(requests)} if requests else {}
    ratings, explanations, raws, reasons = [], [], [], []
    for request in requests:
        result = results.get(request.id)
        if result is None:
            ratings.append(None)
            explanations.append("")
            raws.append("")
            reasons.append("unparseable_rating: the oracle returned no result for this row")
            continue
        ratings.append(result.rating)
        explanations.append(result.explanation or "")
        raws.append(result.raw or "")
        if result.rating is None:
            detail = result.error or f"no 'Rating: [[X]]' with X in 0..10 in the answer {(result.raw or '')[-120:]!r}"
            reasons.append(f"unparseable_rating: {detail}")
        else:
            reasons.append(None)
    table = ds.with_columns(table, {"rating": pa.array(ratings, pa.int32()),
                                    "rating_explanation": pa.array(explanations, pa.string()),
                                    "rating_raw": pa.array(raws, pa.string()),
                                    "oracle": pa.array([oracle.name] * table.num_rows, pa.string())})
    kept, dropped = ds.split_rows(table, [reason is None for reason in reasons], reasons)
    stats = ds.write_part(out_dir, index, kept, dropped)
    stats["oracle"] = oracle.name
    return stats


def step_oracle(backend: str, backend_options: Mapping[str, Any]) -> Oracle:
    """The oracle, built once per process; a bad backend or option is a CurateConfigError."""
    key = ("oracle", backend, json.dumps(backend_options, sort_keys=True, default=str))
    if key not in WORKER_CACHE:
        try:
            WORKER_CACHE[key] = make_oracle(backend, **backend_options)
        except ValueError as error:  # OracleError: unknown backend, bad options, vLLM not installed
            raise CurateConfigError(f"oracle: {error}") from None
    return WORKER_CACHE[key]


def run_oracle(ctx: StepContext) -> dict[str, Any]:
    backend = ctx.options["backend"]
    executor = ctx.executor
    if backend != "rubric":  # an LLM backend: one client (its own concurrency) or one vLLM engine, in this process
        executor = dataclasses.replace(executor, kind="local", workers=1)
    if backend != "vllm":  # cheap to build: check the backend and its options before any work
        step_oracle(backend, ctx.options["backend_options"])
    ctx.executor = executor
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    located, languages = [], []
    for part in parts:
        values = ds.read_part(in_dir, part, ["language"]).column("language").to_pylist()
        languages += [value or "unknown" for value in values]
        located += [(part, row) for row in range(len(values))]
    chosen = sorted(int(i) for i in stratified_sample(languages, ctx.options["n"], seed=ctx.options["seed"]))
    per_part = ctx.options["shard_rows"]
    groups = [[located[i] for i in chosen[start : start + per_part]] for start in range(0, len(chosen), per_part)]
    say(f"{ctx.name}: rating {len(chosen):,} of {len(languages):,} files ({len(set(languages))} languages) with "
        f"backend {ctx.options['backend']!r} in {len(groups)} part(s)")
    tasks = [Task(key=f"part-{index:05d}", function="seedcoder.curate.oracle:oracle_task",
                  args={"in_dir": in_dir, "rows": rows, "out_dir": ctx.out_dir, "index": index,
                        "backend": ctx.options["backend"], "backend_options": ctx.options["backend_options"]},
                  marker=ds.marker_path(ctx.out_dir, index)) for index, rows in enumerate(groups)]
    markers = ctx.run(tasks)
    names = sorted({marker.get("stats", {}).get("oracle", "") for marker in markers} - {""})
    return ctx.finish(markers, {"sampled": len(chosen), "population": len(languages), "oracle": names})


STEP = StepKind("oracle", "ratings (0-10) of a sample stratified by language", run_oracle, {
    "n": Option(1000, "files to rate"),
    "seed": Option(0, "sampling seed"),
    "backend": Option("rubric", "rubric (offline static proxy), openai (any OpenAI-compatible endpoint) or vllm"),
    "backend_options": Option({}, "options of the backend (model, base_url, concurrency, cache_dir, ...)"),
    "shard_rows": Option(256, "rated rows per output shard (the unit of resumption)"),
}, line="ratings")


__all__ = ["BACKENDS", "STEP", "OpenAIOracle", "Oracle", "OracleError", "RatingRequest", "RatingResult",
           "ResponseCache", "RubricOracle", "VLLMOracle", "build_rating_prompt", "make_oracle", "measure_code",
           "oracle_task", "parse_rating", "result_from_answer", "rubric_answer", "run_oracle", "split_answer",
           "step_oracle", "stratified_sample", "summarize_ratings"]
