"""What an oracle rating is: the request and result, the rubric prompt, parsing the rater's answer, and the
`Oracle` interface every backend implements (the backends: `curate/rubric.py`, `curate/chat_oracles.py`,
`curate/logprob_oracle.py`; choosing one and the curation step: `curate/oracle.py`).

The rubric (Seed-Coder, "Let the Code Model Curate Data for Itself"): the rater judges readability, modularity,
clarity and reusability, writes its explanation first and ends with `Rating: [[X]]`, X an integer 0-10; a file
gets 0 when it is mostly configuration or data with almost no logic, or auto-generated. `build_rating_prompt`
writes that prompt; `parse_rating` reads the last `Rating: [[X]]` of an answer and returns None for a missing,
malformed (7.5, "seven", 7/10) or out-of-range value: the caller counts such answers as unparseable and leaves
them out (RatingResult.error says why). A result's `score` is the rating as a number, what the scorer learns:
the parsed integer, the rubric proxy's unrounded mean, or the log-prob rater's expectation over 0..10 (which
also gives the distribution and its entropy; it never needs parsing).

Two rubrics (`RatingRequest.rubric`, `RUBRICS`): "code" (the default: a source file, the rubric above) and "web"
(a web page: is this useful code-related text; `WEB_RUBRIC_PROMPT`, `build_web_prompt`): does it teach or explain
programming, hold correct runnable code that its prose explains, document an API or a tool; 0 for pages with no
code-related content, spam, shops, navigation-only or auto-generated listing pages. Its answer ends the same way,
`Rating: [[X]]`, and is parsed the same; `build_prompt(request)` writes the prompt of a request's rubric (every
backend calls it). A web request's `path` is the page's URL; `columns` carries the row's web columns
(code_chars, code_blocks, words, has_code_tags, category, ...) for backends that measure the page (the offline
proxy: `curate/web_rubric.py`); the LLM prompts do not show them (nor the category: the rater judges the page).

    prompt = build_rating_prompt(code, "python", "pkg/util.py")
    prompt = build_web_prompt(page_text, "https://docs.python.org/3/tutorial/controlflow.html")
    explanation, rating, problem = split_answer(answer)                 # "Readability: ...", 7, None
    results = oracle.rate([RatingRequest(id="a1", text=code, language="python", path="pkg/util.py")])
    results = oracle.rate([RatingRequest(id="w1", text=page_text, language="text", path=url, rubric="web")])
"""

from __future__ import annotations

import abc
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class OracleError(ValueError):
    """A bad oracle option or a missing backend; the message names it."""


RUBRICS = ("code", "web")  # what is rated: a source file, or a web page as code-related text


@dataclass(frozen=True)
class RatingRequest:
    """One item to rate. `rubric`: "code" (a file: `language`, `path` in the repository) or "web" (a page: `path`
    is its URL, `language` "text"); `columns`: other columns of the row a backend may measure (the web proxy reads
    code_chars, code_blocks, words, has_code_tags); not part of equality."""

    id: str
    text: str
    language: str
    path: str
    rubric: str = "code"
    columns: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.rubric not in RUBRICS:
            raise OracleError(f"request {self.id!r}: rubric must be one of {', '.join(RUBRICS)}, got {self.rubric!r}")


@dataclass(frozen=True)
class RatingResult:
    """`rating` is None when the answer had no parseable rating or the request failed; `error` then says which.

    `score` is the rating as a number, what the scorer learns: the parsed integer for a written answer, the
    rubric proxy's unrounded mean, the log-prob rater's expectation over 0..10 (then `rating` is its rounding).
    `distribution` (11 probabilities of the ratings 0..10) and `entropy` (of that distribution, in nats) come
    from the log-prob rater only; None elsewhere.
    """

    id: str
    rating: int | None
    explanation: str
    raw: str
    error: str | None = None
    score: float | None = None
    distribution: tuple[float, ...] | None = None
    entropy: float | None = None

    @property
    def value(self) -> float | None:
        """The rating as a number: `score` when the backend gave one, else `rating`."""
        if self.score is not None:
            return self.score
        return None if self.rating is None else float(self.rating)


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
unexplained magic values; no commented-out blocks of code and no leftover debug print statements (for example \
print(...), console.log(...), System.out.println(...), printf(...) or fmt.Println(...) used for debugging); the \
intent of the code is easy to follow.
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
    code = _cut(text, max_chars, "build_rating_prompt")
    fence = _fence(code)
    language = language or "unknown"
    fence_language = "" if language == "unknown" else re.sub(r"[^A-Za-z0-9_+#-]", "", language)
    return RUBRIC_PROMPT.format(language=language, path=path or "<unnamed>", fence=fence,
                                fence_language=fence_language, code=code)


WEB_RUBRIC_PROMPT = """You are an expert software engineer curating web pages that may be used to train a code \
language model. Rate how useful the web page below is as code-related text, on an integer scale from 0 to 10.

Judge these four aspects:
1. Teaching: the page teaches or explains programming (concepts, techniques, how and why code works, how to \
solve a problem), in clear and accurate prose.
2. Code with explanation: the page contains correct, complete, runnable code (examples, snippets, commands) \
whose purpose and behaviour the surrounding text explains, rather than code without any explanation.
3. Reference value: the page documents an API, a language feature, a library or a tool precisely (signatures, \
parameters, return values, options, examples), so that a programmer could rely on it.
4. Text quality: the content is coherent and well organised (headings, sections), with little boilerplate, \
repetition, navigation or advertising around it.

Judge the content, not the kind of site: a forum thread or a question-and-answer page that explains code well \
deserves the same rating as documentation of the same quality, and a documentation or shop page without real \
explanation does not deserve a high rating because of where it comes from.

Give a rating of 0 if any of the following holds:
- the page has no code-related content (nothing about programming, software development or computing);
- the page is spam, advertising or keyword stuffing;
- the page is a shop, product or price listing;
- the page is only navigation (menus, lists of links, tables of contents, tag clouds) or an auto-generated \
listing (search results, archives, directory indexes, lists of titles) with no content of its own.

First write a brief explanation of your assessment covering the four aspects. Then, on the last line, give the \
rating in exactly this format:
Rating: [[X]]
where X is an integer from 0 to 10.

URL: {url}
Page text:
{fence}
{text}
{fence}
"""


def _cut(text: str, max_chars: int, caller: str) -> str:
    if max_chars <= 0:
        raise OracleError(f"{caller}: max_chars must be > 0, got {max_chars}")
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n... [truncated: the first {max_chars:,} of {len(text):,} characters are shown]"


def _fence(text: str) -> str:
    """A fence the text itself cannot close."""
    longest_backtick_run = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest_backtick_run + 1)


def build_web_prompt(text: str, url: str, *, max_chars: int = DEFAULT_PROMPT_CHARS) -> str:
    """The web rubric prompt for one page (its extracted text; `url` where it came from); pages longer than
    `max_chars` characters are cut, with a note saying so."""
    page = _cut(text, max_chars, "build_web_prompt")
    return WEB_RUBRIC_PROMPT.format(url=url or "<unknown>", fence=_fence(page), text=page)


def build_prompt(request: RatingRequest, *, max_chars: int = DEFAULT_PROMPT_CHARS) -> str:
    """The prompt of a request's rubric: `build_rating_prompt` (code) or `build_web_prompt` (web, `path` = URL)."""
    if request.rubric == "web":
        return build_web_prompt(request.text, request.path, max_chars=max_chars)
    return build_rating_prompt(request.text, request.language, request.path, max_chars=max_chars)


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


def result_from_answer(request_id: str, answer: str, *, score: float | None = None) -> RatingResult:
    """The result of a written answer; `score` (a finer value behind the rating, e.g. the rubric proxy's mean) is
    kept only when the answer parsed, else the score is the parsed rating."""
    explanation, rating, problem = split_answer(answer)
    error = None if rating is not None else f"unparseable answer: {problem}"
    if rating is None:
        score = None
    elif score is None:
        score = float(rating)
    return RatingResult(id=request_id, rating=rating, explanation=explanation, raw=answer, error=error, score=score)


def summarize_ratings(results: Sequence[RatingResult]) -> dict[str, Any]:
    """Counts for a report: rated, unparseable (an answer without a valid rating), failed, and the histogram."""
    rated = [r.rating for r in results if r.rating is not None]
    scores = [r.value for r in results if r.rating is not None and r.value is not None]
    unparseable = sum(1 for r in results if r.rating is None and (r.error or "").startswith("unparseable"))
    histogram = Counter(rated)
    return {
        "total": len(results),
        "rated": len(rated),
        "unparseable": unparseable,
        "failed": len(results) - len(rated) - unparseable,
        "histogram": {str(k): histogram.get(k, 0) for k in range(RATING_SCALE[0], RATING_SCALE[1] + 1)},
        "mean": float(np.mean(rated)) if rated else None,
        "mean_score": float(np.mean(scores)) if scores else None,
    }


def invalid_request(request: RatingRequest) -> str | None:
    """Why a request cannot be rated (a backend reports it as the result's error), or None."""
    if not isinstance(request.text, str):
        return f"request {request.id!r}: text is {type(request.text).__name__}, not a string"
    return None


# ------------------------------------------------------------------------------------------ interface
class Oracle(abc.ABC):
    """Rates files; `rate` returns one RatingResult per request, in request order, and never raises for one bad
    request or one failed call (the result's `error` says what happened)."""

    name: str = "oracle"

    @abc.abstractmethod
    def rate(self, requests: Sequence[RatingRequest]) -> list[RatingResult]: ...


__all__ = ["DEFAULT_PROMPT_CHARS", "RATING_SCALE", "RUBRICS", "RUBRIC_PROMPT", "WEB_RUBRIC_PROMPT", "Oracle",
           "OracleError", "RatingRequest", "RatingResult", "build_prompt", "build_rating_prompt", "build_web_prompt",
           "invalid_request", "parse_rating", "result_from_answer", "split_answer", "summarize_ratings"]
