"""The sft_synthesize step (issue [14], step 2 of the paper's §3.1): instructions synthesized from seed snippets
(OSS-Instruct style), rewritten into instruction styles (style augmentation), and responses that match them.

    [[steps]]
    step = "sft_synthesize"                     # in: the sft line (sft_seeds, or a dataset with `seed_text`)
    generator = {backend = "openai", base_url = "http://127.0.0.1:8000/v1", concurrency = 16}
    styles = {concise = "...", formal = "..."}  # default: DEFAULT_STYLES (8 styles)
    blend_fraction = 0.3                        # that share of items get a blend of two distinct styles
    temperature = 0.7
    top_p = 0.95
    max_tokens = 1024
    seed = 0                                    # the sampling seed, and the seed of the style choice

Per shard, three batched rounds, each one `generator.chat` call over the shard's rows still in play:
  1. `TASK: synthesize`: the seed -> a new self-contained instruction it inspired, and whether unit tests can check
     the code it asks for ("[Instruction]\\n<text>\\n[Verifiable]\\nyes|no").
  2. `TASK: restyle`: the instruction rewritten in the row's style, or a blend of two ("[Instruction]\\n<text>").
  3. `TASK: respond`: the response to the restyled instruction, in a matching register (Markdown, code in ```
     fences; a verifiable item's response must hold code).
A row's style is chosen by a seeded hash of its id (`web_filter.sample_value`): a blend with probability
`blend_fraction` (the style "a+b", names sorted), else one style; the same on every run and after a resume.

Columns (docs/curation.md): `text` = `instruction` (the final, restyled instruction), `original_instruction`,
`style`, `response`, `verifiable` (bool), `generator` (the generator's name), `source` = "sft"; the seeds' columns
are kept. A dropped row keeps what it got before it failed. Drop reasons: "empty_seed: ...", "off_format: TASK:
<first 80 characters of the answer>", "generator_error: TASK: <error>".

Answers are cached on disk (the generator table's `cache_dir`, default `<out>/_work/generator-cache`), so a rerun
after a kill asks only what was not answered (a failed request is not cached: it is asked again). The generator is
built once per process (chat_generator.step_generator); engine and vLLM backends run the shards in this process,
one at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.chat_generator import (
    ChatAnswer,
    generator_error_reason,
    generator_settings,
    off_format_reason,
    step_generator,
)
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.step import StepContext, StepKind, column
from seedcoder.curate.web_filter import sample_value

SFT_SOURCE = "sft"
DEFAULT_STYLES: dict[str, str] = {
    "concise": "concise: one or two plain sentences that state exactly what to build, nothing more",
    "detailed-spec": "a detailed specification: the context, the inputs and outputs with their types, the "
                     "constraints and the edge cases, in full sentences",
    "beginner-question": "a beginner's question: a learner who is unsure of the terms asks for help in a friendly, "
                         "slightly uncertain voice and says what they tried to understand",
    "conversational": "conversational: a colleague asking casually in the first person, with a line about why they "
                      "need it",
    "bullet-points": "bullet-point requirements: a one-line title, then each requirement as its own '-' bullet",
    "with-examples": "with examples: the task, then one or two concrete examples of input and expected output",
    "formal": "formal: the precise, impersonal wording of an exam question or a technical specification",
    "terse-one-liner": "a terse one-liner: a single short line, like a quick chat message or a search query",
}
TASKS = ("synthesize", "restyle", "respond")


def _fence(text: str) -> str:
    """A Markdown fence longer than any run of backticks in `text`."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
    return "`" * max(3, longest + 1)


# ------------------------------------------------------------------------------------------ styles
def choose_style(row_id: str, names: Sequence[str], blend_fraction: float, seed: int) -> tuple[str, list[str]]:
    """(the style's name, the styles it is made of) for a row: a blend of two distinct styles ("a+b", sorted) with
    probability `blend_fraction`, else one; uniform over `names`, from seeded hashes of the id."""
    names = sorted(names)
    first = min(int(sample_value(f"style\x00{row_id}", seed) * len(names)), len(names) - 1)
    if len(names) < 2 or sample_value(f"blend\x00{row_id}", seed) >= blend_fraction:
        return names[first], [names[first]]
    offset = 1 + min(int(sample_value(f"second\x00{row_id}", seed) * (len(names) - 1)), len(names) - 2)
    pair = sorted([names[first], names[(first + offset) % len(names)]])
    return "+".join(pair), pair


def style_description(parts: Sequence[str], styles: Mapping[str, str]) -> str:
    if len(parts) == 1:
        return f"{parts[0]}, that is {styles[parts[0]]}"
    return ("a blend of two styles, with the traits of both in one instruction: "
            + "; and ".join(f"{name}, that is {styles[name]}" for name in parts))


# ------------------------------------------------------------------------------------------ prompts
def synthesize_prompt(seed_text: str, language: str, seed_kind: str, path: str) -> str:
    fence = _fence(seed_text)
    what = ("a section of a document that mixes explanation and code" if seed_kind == "hybrid" else
            f"a snippet of {language} code")
    return (
        "TASK: synthesize\n"
        f"You write training data for a code assistant. Below is {what}, from {path or 'a repository'}. Take "
        "inspiration from it and write one new programming task that a user could ask a code assistant. The task "
        f"must be self-contained: it states every name, input, output and constraint needed, asks for {language} "
        "code where it asks for code, and never mentions the snippet or the document. It may solve a different "
        "problem that uses the same ideas. Then say whether the task asks for code whose correctness plain unit "
        "tests can check (yes), or not (no: explanations, reviews, designs, open-ended or interactive programs).\n\n"
        f"{fence}{language if seed_kind != 'hybrid' else 'markdown'}\n{seed_text}\n{fence}\n\n"
        "Answer in exactly this format, with nothing before or after it:\n"
        "[Instruction]\n<the task>\n[Verifiable]\n<yes or no>"
    )


def restyle_prompt(instruction: str, parts: Sequence[str], styles: Mapping[str, str]) -> str:
    return (
        "TASK: restyle\n"
        f"Rewrite the programming instruction below in this style: {style_description(parts, styles)}. Keep every "
        "requirement, name, input, output, example and constraint of the original; change only how it is "
        "written. Do not answer it.\n\n"
        f"[Instruction]\n{instruction}\n\n"
        "Answer in exactly this format, with nothing before or after it:\n"
        "[Instruction]\n<the rewritten instruction>"
    )


def respond_prompt(instruction: str, language: str, verifiable: bool, parts: Sequence[str],
                   styles: Mapping[str, str]) -> str:
    code = (f"It asks for code: give a complete, correct {language} solution in a fenced block, then explain it "
            "briefly. " if verifiable else "Use code only where it helps. ")
    return (
        "TASK: respond\n"
        "You are an expert code assistant. Write the response to the user's request below. Match the request's "
        f"register: it is written as {style_description(parts, styles)}; a terse request gets a short answer, a "
        f"detailed one a thorough answer, a beginner a patient explanation. {code}"
        "Put code in Markdown fences with the language name (```python).\n\n"
        f"Request:\n{instruction}\n\n"
        "Answer in exactly this format: the response itself (Markdown), with no preamble, no heading naming it and "
        "nothing after it."
    )


# ------------------------------------------------------------------------------------------ answers
_SYNTHESIS = re.compile(r"\A\s*\[Instruction\][ \t]*\n(?P<instruction>.*?)\n[ \t]*\[Verifiable\][ \t]*\n"
                        r"[ \t]*(?P<verifiable>(?i:yes|no))[ \t.]*\s*\Z", re.S)
_RESTYLED = re.compile(r"\A\s*\[Instruction\][ \t]*\n(?P<instruction>.*?)\s*\Z", re.S)
_HEADERS = re.compile(r"^[ \t]*\[(Instruction|Verifiable|Response|Solution|Tests)\][ \t]*$", re.M)
_FENCE_LINE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})", re.M)


def parse_synthesis(answer: str) -> tuple[str, bool] | None:
    """(instruction, verifiable) from "[Instruction]\\n<text>\\n[Verifiable]\\nyes|no"; None when off format."""
    match = _SYNTHESIS.match(answer)
    if not match:
        return None
    instruction = match.group("instruction").strip()
    if not instruction or _HEADERS.search(instruction):
        return None
    return instruction, match.group("verifiable").lower() == "yes"


def parse_restyled(answer: str) -> str | None:
    """The instruction of "[Instruction]\\n<text>"; None when off format."""
    match = _RESTYLED.match(answer)
    if not match:
        return None
    instruction = match.group("instruction").strip()
    return instruction if instruction and not _HEADERS.search(instruction) else None


def check_response(answer: str, verifiable: bool) -> str | None:
    """The response (stripped), or None when off format: empty, an echoed header, unclosed fences, or no code
    block where the instruction asks for code."""
    response = answer.strip()
    if not response or _HEADERS.search(response) or response.startswith("TASK:"):
        return None
    fences = _FENCE_LINE.findall(response)
    if len(fences) % 2 or (verifiable and not fences):
        return None
    return response


# ------------------------------------------------------------------------------------------ one shard
def _user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def synthesize_task(in_dir: str, index: int, out_dir: str, generator: Mapping[str, Any],
                    options: Mapping[str, Any]) -> dict[str, Any]:
    """The three rounds over shard `index` of the seeds; writes its kept and dropped rows."""
    table = ds.read_part(in_dir, index)
    if "seed_text" not in table.column_names:
        raise CurateStateError(f"sft_synthesize: shard {index} of {in_dir} has no `seed_text` column; run sft_seeds "
                               "before it")
    model = step_generator(generator, "sft_synthesize.generator")
    calls, hits = model.calls, model.cache_hits
    sampling = {name: options[name] for name in ("temperature", "top_p", "max_tokens", "seed")}
    styles = options["styles"]
    count = table.num_rows
    ids, seeds = column(table, "id"), column(table, "seed_text")
    languages = [value or "unknown" for value in column(table, "language")]
    kinds, paths = column(table, "seed_kind"), column(table, "path")
    reasons: list[str | None] = [None] * count
    original: list[str | None] = [None] * count
    restyled: list[str | None] = [None] * count
    responses: list[str | None] = [None] * count
    verifiable: list[bool | None] = [None] * count
    chosen = [choose_style(str(row_id), list(styles), options["blend_fraction"], options["seed"]) for row_id in ids]

    def ask(task: str, prompts: dict[int, str]) -> list[tuple[int, ChatAnswer]]:
        answers = model.chat([_user(prompt) for prompt in prompts.values()], **sampling) if prompts else []
        results = []
        for row, answer in zip(prompts, answers):
            if answer.error is not None or answer.text is None:
                reasons[row] = generator_error_reason(task, answer.error or "no answer")
            else:
                results.append((row, answer))
        return results

    for row in range(count):
        if seeds[row] is None or not seeds[row].strip():
            reasons[row] = "empty_seed: the row has no seed text"
    prompts = {row: synthesize_prompt(seeds[row], languages[row], kinds[row] or "code", paths[row] or "")
               for row in range(count) if reasons[row] is None}
    for row, answer in ask("synthesize", prompts):
        parsed = parse_synthesis(answer.text)
        if parsed is None:
            reasons[row] = off_format_reason("synthesize", answer.text)
        else:
            original[row], verifiable[row] = parsed
    prompts = {row: restyle_prompt(original[row], chosen[row][1], styles) for row in range(count)
               if reasons[row] is None}
    for row, answer in ask("restyle", prompts):
        restyled[row] = parse_restyled(answer.text)
        if restyled[row] is None:
            reasons[row] = off_format_reason("restyle", answer.text)
    prompts = {row: respond_prompt(restyled[row], languages[row], bool(verifiable[row]), chosen[row][1], styles)
               for row in range(count) if reasons[row] is None}
    for row, answer in ask("respond", prompts):
        responses[row] = check_response(answer.text, bool(verifiable[row]))
        if responses[row] is None:
            reasons[row] = off_format_reason("respond", answer.text)

    keep = [reason is None for reason in reasons]
    texts, sources = column(table, "text"), column(table, "source")
    columns = {  # a dropped row keeps its text (the seed) and source
        "text": pa.array([restyled[row] if keep[row] else texts[row] for row in range(count)], pa.string()),
        "source": pa.array([SFT_SOURCE if keep[row] else sources[row] for row in range(count)], pa.string()),
        "instruction": pa.array(restyled, pa.string()),
        "original_instruction": pa.array(original, pa.string()),
        "style": pa.array([style for style, _ in chosen], pa.string()),
        "response": pa.array(responses, pa.string()),
        "verifiable": pa.array(verifiable, pa.bool_()),
        "generator": pa.array([model.name] * count, pa.string()),
    }
    kept, dropped = ds.split_rows(ds.with_columns(table, columns), keep, reasons)
    stats = ds.write_part(out_dir, index, kept, dropped)
    kept_styles = collections.Counter(style for (style, _), ok in zip(chosen, keep) if ok)
    stats.update({"styles": dict(sorted(kept_styles.items())),
                  "verifiable": sum(1 for value, ok in zip(verifiable, keep) if ok and value),
                  "generator_calls": model.calls - calls, "cache_hits": model.cache_hits - hits,
                  "generator": model.name})
    return stats


# ------------------------------------------------------------------------------------------ the step
def run_sft_synthesize(ctx: StepContext) -> dict[str, Any]:
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    table = generator_settings(ctx.options["generator"], ctx.out_dir)
    if table.get("backend", "openai") != "openai":  # a model in this process: load it once, run shards here
        ctx.executor = dataclasses.replace(ctx.executor, kind="local", workers=1)
    done = ctx.prepare()
    if done is not None:
        return done
    # after prepare: the default cache lives in the output directory; bad settings stop the step before any shard
    generator = step_generator(table, f"{ctx.name}.generator")
    tasks = ctx.part_tasks("seedcoder.curate.sft_synth:synthesize_task", parts, in_dir=in_dir,
                           out_dir=ctx.out_dir, generator=table, options=ctx.options)
    markers = ctx.run(tasks)
    styles: collections.Counter[str] = collections.Counter()
    for marker in markers:
        styles.update(marker.get("stats", {}).get("styles", {}))
    summary = {"generator": generator.name, "styles": dict(sorted(styles.items())),
               "verifiable": sum(marker.get("stats", {}).get("verifiable", 0) for marker in markers)}
    return ctx.finish(markers, {"sft_synthesize": summary})


@dataclass
class SftSynthesizeOptions:
    generator: dict[str, Any] = option({}, "the generator (seedcoder.curate.chat_generator.make_generator): backend "
                                           "(openai, engine, vllm), base_url, model, checkpoint, concurrency, "
                                           "timeout_s, max_retries, cache_dir (default <out>/_work/generator-cache)")
    styles: dict[str, str] = option(DEFAULT_STYLES, "instruction styles: name -> what the style is like")
    blend_fraction: float = option(0.3, "the share of items whose instruction blends two distinct styles")
    temperature: float = option(0.7, "sampling temperature")
    top_p: float = option(0.95, "nucleus sampling: top_p")
    max_tokens: int = option(1024, "at most this many tokens per answer")
    seed: int = option(0, "the sampling seed, and the seed of the style choice")

    def __post_init__(self) -> None:
        if not self.generator:
            raise ValueError("generator: the table is empty; give at least its backend and endpoint, e.g. "
                             "{backend = \"openai\", base_url = \"http://127.0.0.1:8000/v1\"}")
        if not self.styles:
            raise ValueError("styles: needs at least one style (name -> description)")
        bad = [name for name, text in self.styles.items()
               if not name.strip() or "+" in name or not isinstance(text, str) or not text.strip()]
        if bad:
            raise ValueError(f"styles: {bad}: a style needs a name without '+' (a blend is 'a+b') and a description")
        if not (math.isfinite(self.blend_fraction) and 0.0 <= self.blend_fraction <= 1.0):
            raise ValueError(f"blend_fraction: must be in [0, 1], got {self.blend_fraction}")
        if self.blend_fraction > 0 and len(self.styles) < 2:
            raise ValueError(f"blend_fraction: {self.blend_fraction} needs at least two styles to blend; set it to 0")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature: must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {self.max_tokens}")


STEP = StepKind("sft_synthesize", "instructions synthesized from seeds, restyled (style augmentation), answered",
                run_sft_synthesize, SftSynthesizeOptions, in_line="sft")


__all__ = ["DEFAULT_STYLES", "STEP", "SftSynthesizeOptions", "check_response", "choose_style", "parse_restyled",
           "parse_synthesis", "respond_prompt", "restyle_prompt", "run_sft_synthesize", "style_description",
           "synthesize_prompt", "synthesize_task"]
