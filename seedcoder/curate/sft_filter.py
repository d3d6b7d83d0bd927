"""The sft_filter step (issue [14]; Seed-Coder §3.1, the filters): an instruction-response pair is kept only when the
code in its response parses, an LLM judge finds the response correct, and the task is not too easy.

    [[steps]]
    step = "sft_filter"                  # in: the last step of the "sft" line (sft_self_correct, sft_synthesize)
    generator = {backend = "openai", base_url = "http://127.0.0.1:8000/v1", model = "m", concurrency = 16}
    min_judge_score = 5.0
    min_difficulty = 3.0                 # the paper's rule: items rated under 3/10 are dropped
    judge_backend = "chat"               # or "logprob": the log-prob rater of the oracle step

Three filters, in this order; each can be turned off (`syntax`, `judge`, `tag`), and each sees only the rows the
ones before it kept, so no model is asked about a row already dropped. Per shard, each model task is one batched
`chat` call (the openai backend sends its requests concurrently).
  1. syntax: every fenced code block of the `response` (``` or ~~~, CommonMark style: an unclosed fence runs to the
     end, as an answer cut at max_tokens does; an indented fence, in a list item, loses that indentation) is
     parsed by `seedcoder.curate.syntax.check_syntax` as the fence's language, else the row's `language`. A block
     that fails (or whose check runs past `syntax_timeout_s`) drops the row as "syntax_error_in_response: <lang>:
     <the checker's reason>"; blocks in languages the checker does not check (text, console, json, ...) pass.
     Column `response_syntax_ok`.
  2. judge: the rubric (correct, complete, clear; `JUDGE_PROMPT`), "TASK: judge", answered with an explanation and
     "Rating: [[X]]", parsed by the oracle's parser (`rating.split_answer`); `judge_score` = X. With
     `judge_backend = "logprob"` the log-prob rater of the oracle step (`logprob_oracle.LogprobOracle`: the
     expectation of the ratings 0..10 given the same prompt + "Rating: [[") rates instead; its options are
     `logprob_rater` (checkpoint or base_url, ...; empty: the generator's endpoint or checkpoint). A row under
     `min_judge_score` is dropped as "judge_low: <score> < <min>: <the judge's explanation, cut>".
  3. tag: "TASK: tag" (`TAG_PROMPT`), answered "Topic: <tag>\\nDifficulty: [[X]]" (X in 0..10): columns `topic`
     (lower case) and `difficulty` (float). A row under `min_difficulty` is dropped as
     "low_difficulty: <d> < <min> (<topic>)".

An answer not in its format drops the row as "off_format: <task>: <the answer's first 80 characters>", a failed
request as "generator_error: <task>: <the error>" (the log-prob rater's failures too), a row without a response as
"empty: the row has no response". Columns of a filter that did not run for a row are null. The generator's answers
(and the log-prob rater's) are cached in `<step dir>/_work/generator-cache` (`judge-cache`) unless the tables say
`cache_dir`: a rerun after a kill asks nothing twice. Each shard's marker counts the requests sent and the cache
hits (`requests`, `cache_hits`, `judge_cache_hits`); _SUCCESS.json sums them (`generator_requests`). A generator
or rater that loads a model (engine, vllm, a logprob checkpoint) keeps the shards in this process, one model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.chat_generator import BACKENDS as GENERATOR_BACKENDS
from seedcoder.curate.chat_generator import (
    ChatGenerator,
    generator_error_reason,
    generator_settings,
    off_format_reason,
    one_line,
    step_generator,
)
from seedcoder.curate.errors import CurateConfigError, CurateStateError
from seedcoder.curate.logprob_oracle import PROMPT_END, LogprobOracle
from seedcoder.curate.rating import RATING_SCALE, OracleError, RatingRequest, split_answer
from seedcoder.curate.step import WORKER_CACHE, StepContext, StepKind, column
from seedcoder.curate.syntax import DEFAULT_TIMEOUT_S, canonical_language, check_syntax

JUDGE_BACKENDS = ("chat", "logprob")
REQUIRED_COLUMNS = ("id", "text", "response")
# Fence labels that name a checked language under another spelling (the checker's own aliases cover the rest)
FENCE_LANGUAGES = {"python3": "python", "py3": "python"}

JUDGE_PROMPT = """TASK: judge
You are an expert programmer reviewing one example of a training set for a code assistant: an instruction and \
the response to it. Judge whether the response is a good answer to the instruction:
1. Correct: the code and the explanations are right; the code would run and do what the instruction asks, \
including its edge cases.
2. Complete: every part of the instruction is addressed; nothing required is left out or left as a placeholder.
3. Clear: the response is well organised, its code readable, and its explanation easy to follow.
A response that is wrong, off-topic or does not answer the instruction gets at most 2.

First write a brief explanation of your assessment covering the three aspects. Then, on the last line, give the \
rating. Answer in exactly this format:
<your explanation>
Rating: [[X]]
where X is an integer from 0 to 10.

[Instruction]
{instruction}

[Response]
{response}
[End of the response]
"""

TAG_PROMPT = """TASK: tag
You are an expert programmer classifying one example of a training set for a code assistant: an instruction and \
the response to it. Give:
1. its topic: a tag of one to three words naming the programming domain (for example: algorithms, data \
structures, string processing, web development, databases, concurrency, systems programming, testing, devops, \
machine learning);
2. its difficulty for a professional programmer, an integer from 0 to 10: 0-2 trivial (a definition, one obvious \
line), 3-4 easy, 5-6 medium, 7-8 hard, 9-10 expert.

Answer in exactly this format, and nothing else:
Topic: <tag>
Difficulty: [[X]]

[Instruction]
{instruction}

[Response]
{response}
[End of the response]
"""

_TOPIC = re.compile(r"^[ \t*_`]*topic[ \t*_`]*:[ \t*_`]*(?P<topic>[^\n]*?)[ \t*_`.]*$", re.IGNORECASE | re.MULTILINE)
_DIFFICULTY = re.compile(r"^[ \t*_`]*difficulty[ \t*_`]*:[ \t*_`]*\[\[[ \t]*(?P<value>[^\[\]\n]{0,20}?)[ \t]*\]\]"
                         r"[ \t*_`.]*$", re.IGNORECASE | re.MULTILINE)
_WHOLE_NUMBER = re.compile(r"[+-]?\d+(?:\.0+)?")
_FENCE_OPEN = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n]*)$")


# ------------------------------------------------------------------------------------------ parsing
def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """(info word, body) of every fenced code block (``` or ~~~, at least three; CommonMark: the closing fence is
    the same character at least as long, and an unclosed fence runs to the end of the text). A fence may be
    indented (inside a list item): its body loses up to that much indentation."""
    blocks: list[tuple[str, str]] = []
    lines = markdown.split("\n")
    position = 0
    while position < len(lines):
        opened = _FENCE_OPEN.match(lines[position])
        if opened is None or (opened["fence"][0] == "`" and "`" in opened["info"]):
            position += 1
            continue
        fence, info, indent = opened["fence"], opened["info"].strip(), len(opened["indent"])
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = position + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = [re.sub(rf"^ {{0,{indent}}}", "", line) for line in lines[position + 1 : end]]
        word = info.split()[0].strip("{}.").lower() if info else ""
        blocks.append((word, "\n".join(body) + "\n"))
        position = end + 1
    return blocks


def response_syntax_problem(response: str, language: str | None, timeout_s: float) -> str | None:
    """Why a response's code does not parse ("<lang>: <the checker's reason>"), or None when every block that the
    checker checks parses (or there is none)."""
    for label, body in code_blocks(response):
        name = FENCE_LANGUAGES.get(label, label) or (language or "unknown")
        result = check_syntax(body, name, timeout_s=timeout_s)
        if not result.ok:
            return f"{canonical_language(name)}: {result.reason or 'rejected'}"
    return None


def parse_tag(answer: str) -> tuple[str, float] | None:
    """(topic, difficulty) of a tag answer ("Topic: <tag>" and "Difficulty: [[X]]" lines, X an integer 0..10; the
    last of each counts), or None: off format. The topic is lower case, single-spaced."""
    topics, difficulties = list(_TOPIC.finditer(answer or "")), list(_DIFFICULTY.finditer(answer or ""))
    if not topics or not difficulties:
        return None
    topic = " ".join(topics[-1]["topic"].strip(" \t\"'").lower().split())
    value = difficulties[-1]["value"]
    if not topic or not _WHOLE_NUMBER.fullmatch(value):
        return None
    difficulty = float(int(float(value)))
    if not RATING_SCALE[0] <= difficulty <= RATING_SCALE[1]:
        return None
    return topic, difficulty


def judge_prompt(instruction: str, response: str) -> str:
    return JUDGE_PROMPT.format(instruction=instruction.strip(), response=response.strip())


def tag_prompt(instruction: str, response: str) -> str:
    return TAG_PROMPT.format(instruction=instruction.strip(), response=response.strip())


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _below(value: float, minimum: float) -> str:
    """"<value> < <minimum>", with enough digits that rounding never prints "5 < 5"."""
    shown = _number(value)
    return f"{shown if shown != _number(minimum) else format(value, '.6g')} < {_number(minimum)}"


# ------------------------------------------------------------------------------------------ the models
class JudgeRater(LogprobOracle):
    """The log-prob rater on the judge's prompt: a request's `text` is the whole judge prompt, and the rater reads
    the probabilities of "0]]" .. "10]]" after it + "Rating: [[" (everything else is LogprobOracle's: the model
    or endpoint, batching, the cache). A prompt longer than a model's context fails that row (no cutting)."""

    def prompt(self, request: RatingRequest) -> str:
        return request.text + PROMPT_END


def rater_settings(options: Mapping[str, Any], out_dir: str) -> dict[str, Any]:
    """The log-prob rater's options: `logprob_rater`, else the generator's endpoint (base_url, model) or
    checkpoint; the cache in <out_dir>/_work/judge-cache unless given."""
    settings = dict(options["logprob_rater"])
    if not settings:
        generator = options["generator"]
        if generator.get("backend", "openai") == "openai" and generator.get("base_url"):
            settings = {key: generator[key] for key in ("base_url", "model", "api_key_env", "timeout_s", "max_retries")
                        if generator.get(key) is not None}
        elif generator.get("backend") == "engine" and generator.get("checkpoint"):
            settings = {key: generator[key] for key in ("checkpoint", "device") if generator.get(key) is not None}
    settings.setdefault("cache_dir", ds.work_path(out_dir, "judge-cache"))
    return settings


def step_rater(settings: Mapping[str, Any], where: str) -> JudgeRater:
    key = ("judge_rater", json.dumps(settings, sort_keys=True, default=str))
    if key not in WORKER_CACHE:
        try:
            WORKER_CACHE[key] = JudgeRater(**settings)
        except OracleError as error:
            raise CurateConfigError(f"{where}: {error}") from None
        except TypeError as error:  # an unknown keyword
            raise CurateConfigError(f"{where}: {str(error).split('() ', 1)[-1]}") from None
    return WORKER_CACHE[key]


def _needs_generator(options: Mapping[str, Any]) -> bool:
    return bool(options["tag"] or (options["judge"] and options["judge_backend"] == "chat"))


# ------------------------------------------------------------------------------------------ one shard
class _Shard:
    """The decisions of one shard's rows as the filters run: who is still in, why the others left, the columns."""

    def __init__(self, table: pa.Table):
        self.ids = column(table, "id")
        self.instructions = [text or "" for text in column(table, "text")]
        self.responses = [text or "" for text in column(table, "response")]
        self.languages = column(table, "language")
        count = table.num_rows
        self.reasons: list[str | None] = [None] * count
        self.syntax_ok: list[bool | None] = [None] * count
        self.judge_score: list[float | None] = [None] * count
        self.topic: list[str | None] = [None] * count
        self.difficulty: list[float | None] = [None] * count

    def alive(self) -> list[int]:
        return [row for row, reason in enumerate(self.reasons) if reason is None]


def _chat(generator: ChatGenerator, prompts: Sequence[str], options: Mapping[str, Any]):
    return generator.chat([[{"role": "user", "content": prompt}] for prompt in prompts],
                          temperature=options["temperature"], top_p=1.0, max_tokens=options["max_tokens"],
                          seed=options["seed"])


def _judge(shard: _Shard, options: Mapping[str, Any], generator: ChatGenerator | None,
           rater: JudgeRater | None) -> None:
    rows = shard.alive()
    if not rows:
        return
    prompts = [judge_prompt(shard.instructions[row], shard.responses[row]) for row in rows]
    scores: list[tuple[float | None, str, str | None]] = []  # (score, explanation, reason when none)
    if rater is not None:
        requests = [RatingRequest(id=str(shard.ids[row]), text=prompt, language=shard.languages[row] or "unknown",
                                  path="") for row, prompt in zip(rows, prompts)]
        for result in rater.rate(requests):
            if result.error is not None or result.score is None:
                scores.append((None, "", generator_error_reason("judge", result.error or "no rating")))
            else:
                scores.append((float(result.score), result.explanation, None))
    else:
        for answer in _chat(generator, prompts, options):
            if answer.error is not None:
                scores.append((None, "", generator_error_reason("judge", answer.error)))
                continue
            explanation, rating, _ = split_answer(answer.text)
            scores.append((None, "", off_format_reason("judge", answer.text)) if rating is None else
                          (float(rating), explanation, None))
    minimum = options["min_judge_score"]
    for row, (score, explanation, reason) in zip(rows, scores):
        shard.judge_score[row] = score
        if reason is None and score < minimum:
            reason = f"judge_low: {_below(score, minimum)}: {one_line(explanation, 120) or '-'}"
        shard.reasons[row] = reason


def _tag(shard: _Shard, options: Mapping[str, Any], generator: ChatGenerator) -> None:
    rows = shard.alive()
    if not rows:
        return
    answers = _chat(generator, [tag_prompt(shard.instructions[row], shard.responses[row]) for row in rows], options)
    minimum = options["min_difficulty"]
    for row, answer in zip(rows, answers):
        if answer.error is not None:
            shard.reasons[row] = generator_error_reason("tag", answer.error)
            continue
        parsed = parse_tag(answer.text)
        if parsed is None:
            shard.reasons[row] = off_format_reason("tag", answer.text)
            continue
        shard.topic[row], shard.difficulty[row] = parsed
        if parsed[1] < minimum:
            shard.reasons[row] = f"low_difficulty: {_below(parsed[1], minimum)} ({parsed[0]})"


def sft_filter_task(in_dir: str, index: int, out_dir: str, options: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The three filters on shard `index` (module docstring); writes kept + dropped, returns the shard's stats."""
    table = ds.read_part(in_dir, index)
    check_columns(table.column_names, f"shard {index} of {in_dir}")
    shard = _Shard(table)
    for row, response in enumerate(shard.responses):
        if not response.strip():
            shard.reasons[row] = "empty: the row has no response"
    if options["syntax"]:
        for row in shard.alive():
            problem = response_syntax_problem(shard.responses[row], shard.languages[row], options["syntax_timeout_s"])
            shard.syntax_ok[row] = problem is None
            if problem is not None:
                shard.reasons[row] = f"syntax_error_in_response: {problem}"
    generator = rater = None
    if _needs_generator(options):
        generator = step_generator(generator_settings(options["generator"], out_dir), f"{name}.generator")
    if options["judge"] and options["judge_backend"] == "logprob":
        rater = step_rater(rater_settings(options, out_dir), f"{name}.logprob_rater")
    calls = (generator.calls, generator.cache_hits) if generator is not None else (0, 0)
    rater_hits = rater.cache_hits if rater is not None else 0
    if options["judge"]:
        _judge(shard, options, generator, rater)
    if options["tag"]:
        _tag(shard, options, generator)
    table = ds.with_columns(table, {"response_syntax_ok": pa.array(shard.syntax_ok, pa.bool_()),
                                    "judge_score": pa.array(shard.judge_score, pa.float64()),
                                    "topic": pa.array(shard.topic, pa.string()),
                                    "difficulty": pa.array(shard.difficulty, pa.float64())})
    keep = np.array([reason is None for reason in shard.reasons], dtype=bool)
    kept, dropped = ds.split_rows(table, keep, shard.reasons)
    stats = ds.write_part(out_dir, index, kept, dropped)
    if generator is not None:
        stats["requests"] = generator.calls - calls[0]
        stats["cache_hits"] = generator.cache_hits - calls[1]
    if rater is not None:
        stats["judge_cache_hits"] = rater.cache_hits - rater_hits
    return stats


def check_columns(names: Sequence[str], where: str) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise CurateStateError(f"sft_filter: {where} has no {', '.join(repr(name) for name in missing)} column(s): "
                               "it is not a dataset of the SFT line (sft_synthesize writes the response)")


# ------------------------------------------------------------------------------------------ the step
def run_sft_filter(ctx: StepContext) -> dict[str, Any]:
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    if parts:  # the columns, before any work
        check_columns(ds.part_columns(in_dir, parts[0]), in_dir)
    options = ctx.options
    if options["judge"] and options["judge_backend"] == "logprob" and not (
            {"checkpoint", "base_url"} & set(rater_settings(options, ctx.out_dir))):
        raise CurateConfigError(f"{ctx.name}.logprob_rater: give `checkpoint` or `base_url` (the generator table "
                                "names neither an endpoint nor a checkpoint to rate with)")
    done = ctx.prepare()
    if done is not None:
        return done
    # the models, before any shard (their caches live in the step's _work/, so after prepare); a backend that
    # loads a model keeps the tasks in this process, with the one model built here
    in_process = False
    if _needs_generator(options):
        settings = generator_settings(options["generator"], ctx.out_dir)
        in_process = settings.get("backend", "openai") in ("engine", "vllm")
        step_generator(settings, f"{ctx.name}.generator")
    if options["judge"] and options["judge_backend"] == "logprob":
        settings = rater_settings(options, ctx.out_dir)
        in_process = in_process or "checkpoint" in settings
        step_rater(settings, f"{ctx.name}.logprob_rater")
    if in_process:
        ctx.executor = dataclasses.replace(ctx.executor, kind="local", workers=1)
    tasks = ctx.part_tasks("seedcoder.curate.sft_filter:sft_filter_task", parts, in_dir=in_dir, out_dir=ctx.out_dir,
                           options=options, name=ctx.name)
    markers = ctx.run(tasks)
    requests = {key: sum(int(marker.get("stats", {}).get(key, 0)) for marker in markers)
                for key in ("requests", "cache_hits", "judge_cache_hits")}
    return ctx.finish(markers, {"generator_requests": requests})


@dataclass
class SFTFilterOptions:
    generator: dict[str, Any] = option({}, "the generator (judge, tag): {backend = openai | engine | vllm, base_url, "
                                           "model, checkpoint, concurrency, timeout_s, cache_dir, ...}; default "
                                           "cache: <step>/_work/generator-cache")
    syntax: bool = option(True, "drop rows whose response has a code block that does not parse")
    judge: bool = option(True, "drop rows an LLM judge rates under min_judge_score (correct, complete, clear)")
    tag: bool = option(True, "tag topic and difficulty; drop rows under min_difficulty")
    judge_backend: str = option("chat", "chat (the generator answers 'Rating: [[X]]') or logprob (the log-prob "
                                        "rater: the expectation of 0..10 after the prompt + 'Rating: [[')")
    logprob_rater: dict[str, Any] = option({}, "judge_backend = logprob: the rater's options (checkpoint or "
                                                "base_url, model, device, dtype, batch_size, cache_dir, ...); "
                                                "empty: the generator's base_url/model or checkpoint")
    min_judge_score: float = option(5.0, "rows the judge rates under this (0-10) are dropped")
    min_difficulty: float = option(3.0, "rows tagged under this difficulty (0-10) are dropped (the paper: 3)")
    syntax_timeout_s: float = option(DEFAULT_TIMEOUT_S, "parse time limit per code block")
    temperature: float = option(0.0, "sampling temperature of the judge and tag answers")
    max_tokens: int = option(512, "answer length limit of the judge and tag answers")
    seed: int = option(0, "sampling seed")

    def __post_init__(self) -> None:
        if self.judge_backend not in JUDGE_BACKENDS:
            raise ValueError(f"judge_backend: must be one of {', '.join(JUDGE_BACKENDS)}, got {self.judge_backend!r}")
        if not self.generator and (self.tag or (self.judge and self.judge_backend == "chat")):
            raise ValueError("generator: the table of the generator that judges and tags is empty; give at least "
                             "{backend = \"openai\", base_url = \"http://127.0.0.1:8000/v1\"} (see "
                             "seedcoder.curate.chat_generator), or turn judge and tag off")
        backend = self.generator.get("backend", "openai")
        if self.generator and backend not in GENERATOR_BACKENDS:
            raise ValueError(f"generator.backend: must be one of {', '.join(GENERATOR_BACKENDS)}, got {backend!r}")
        for key in ("min_judge_score", "min_difficulty"):
            value = getattr(self, key)
            if not (math.isfinite(value) and RATING_SCALE[0] <= value <= RATING_SCALE[1]):
                raise ValueError(f"{key}: must be in [0, 10], got {value}")
        if not self.syntax_timeout_s > 0:
            raise ValueError(f"syntax_timeout_s: must be > 0, got {self.syntax_timeout_s}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature: must be in [0, 2], got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {self.max_tokens}")


STEP = StepKind("sft_filter", "SFT pairs: syntax of the response's code, an LLM judge, topic and difficulty tags",
                run_sft_filter, SFTFilterOptions, in_line="sft")


__all__ = ["FENCE_LANGUAGES", "JUDGE_BACKENDS", "JUDGE_PROMPT", "STEP", "TAG_PROMPT", "JudgeRater", "SFTFilterOptions",
           "code_blocks", "judge_prompt", "parse_tag", "rater_settings", "response_syntax_problem", "run_sft_filter",
           "sft_filter_task", "step_rater", "tag_prompt"]
