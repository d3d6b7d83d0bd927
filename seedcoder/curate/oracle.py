"""Oracle ratings (curation step 5): an LLM (or an offline proxy) rates a file's quality 0-10 with the paper's
rubric; this module chooses the backend, samples the files and runs the step.

    oracle = make_oracle("rubric")                                      # default: offline static proxy
    oracle = make_oracle("openai", base_url="http://localhost:8000/v1", model="Qwen/Qwen2.5-Coder-32B-Instruct",
                         concurrency=16, cache_dir="runs/oracle-cache")  # any OpenAI-compatible server
    oracle = make_oracle("vllm", model="...")                           # in-process vLLM (when installed)
    oracle = make_oracle("logprob", checkpoint="runs/demo")             # any model: the ratings' probabilities
    oracle = make_oracle("logprob", base_url="http://127.0.0.1:8000/v1")  # ... through a completions endpoint
    results = oracle.rate([RatingRequest(id="a1", text=code, language="python", path="pkg/util.py")])
    results[0].rating, results[0].score, results[0].explanation         # 7, 7.0, "Readability: ..."
    chosen = stratified_sample(languages, 1000, seed=0)                 # row indices to rate

Backends (one interface, `curate/rating.py`: `Oracle.rate(requests) -> results` in request order, `Oracle.name`;
the prompt and the parsing of `Rating: [[X]]` live there too):
  * "rubric" (`RubricOracle`, name "rubric-proxy", `curate/rubric.py`): NOT an LLM; a static proxy of the rubric
    measured from the code. Deterministic and offline: the default when no LLM is configured.
  * "openai" (`OpenAIOracle`, `curate/chat_oracles.py`): any OpenAI-compatible chat endpoint, with retries,
    concurrency and an on-disk response cache (`cache_dir`).
  * "vllm" (`VLLMOracle`, `curate/chat_oracles.py`): vLLM in this process (when installed), the same cache.
  * "logprob" (`LogprobOracle`, `curate/logprob_oracle.py`): any language model (our checkpoint, a Hugging Face
    folder, an OpenAI-compatible completions endpoint returning log-probabilities) rates by the probabilities it
    gives "0".."10" after `Rating: [[`; the score is their expectation. Never unparseable.

Rubrics (option `rubric`, `rating.RUBRICS`): "code" (the default: files, the sample stratified by language, the
output holds the base columns + the rating columns) or "web" (web pages rated as code-related text with the web
rubric: every backend renders `rating.WEB_RUBRIC_PROMPT`, the rubric backend measures the page with
`curate/web_rubric.py`; the request's path is the row's `url`; the sample is stratified by `category` when the
input has it; the output keeps every input column, so that `web_filter` can read the category of each rated page;
give `n` >= the number of pages to rate them all).

The step's output columns: `rating` (int 0..10), `rating_score` (float: the number the scorer should learn; the
parsed rating, the rubric proxy's unrounded mean, the log-prob rater's expectation), `rating_distribution` (the
log-prob rater's 11 probabilities, else null), `rating_entropy` (nats, log-prob rater only), `rating_explanation`,
`rating_raw`, `oracle` (the backend's name). An empty sample (n < 1, or an input without rows) is an error.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.chat_oracles import OpenAIOracle, VLLMOracle
from seedcoder.curate.errors import CurateConfigError, CurateStateError
from seedcoder.curate.executor import Task
from seedcoder.curate.logprob_oracle import LogprobOracle
from seedcoder.curate.rating import RUBRICS, Oracle, OracleError, RatingRequest
from seedcoder.curate.rubric import RubricOracle
from seedcoder.curate.step import WORKER_CACHE, StepContext, StepKind, column, say
from seedcoder.curate.web_rubric import WEB_COLUMNS


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



# ------------------------------------------------------------------------------------------ factory
BACKENDS = {"rubric": RubricOracle, "openai": OpenAIOracle, "vllm": VLLMOracle, "logprob": LogprobOracle}


def make_oracle(backend: str = "rubric", **options: Any) -> Oracle:
    """An oracle by backend name ("rubric", "openai", "vllm", "logprob"); options go to its constructor (see each
    class)."""
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
                backend_options: Mapping[str, Any], rubric: str = "code") -> dict[str, Any]:
    """Rate the sampled rows `rows` ((shard, row) pairs of in_dir) with `rubric` and write them as part `index`
    (code: the base columns + ratings; web: every input column + ratings)."""
    by_part: dict[int, list[int]] = {}
    for part, row in rows:
        by_part.setdefault(part, []).append(row)
    columns = None if rubric == "web" else list(ds.BASE_COLUMNS)
    tables = [ds.read_part(in_dir, part, columns).take(pa.array(picked, pa.int64()))
              for part, picked in by_part.items()]
    table = pa.concat_tables(tables, promote_options="default") if tables else ds.base_table([])
    oracle = step_oracle(backend, backend_options)
    requests = rating_requests(table, rubric)
    results = {result.id: result for result in oracle.rate(requests)} if requests else {}
    ratings, scores, distributions, entropies, explanations, raws, reasons = [], [], [], [], [], [], []
    for request in requests:
        result = results.get(request.id)
        if result is None:
            ratings.append(None)
            scores.append(None)
            distributions.append(None)
            entropies.append(None)
            explanations.append("")
            raws.append("")
            reasons.append("unparseable_rating: the oracle returned no result for this row")
            continue
        ratings.append(result.rating)
        scores.append(result.value if result.rating is not None else None)
        distributions.append(list(result.distribution) if result.distribution is not None else None)
        entropies.append(result.entropy)
        explanations.append(result.explanation or "")
        raws.append(result.raw or "")
        if result.rating is None:
            detail = result.error or f"no 'Rating: [[X]]' with X in 0..10 in the answer {(result.raw or '')[-120:]!r}"
            reasons.append(f"unparseable_rating: {detail}")
        else:
            reasons.append(None)
    table = ds.with_columns(table, {"rating": pa.array(ratings, pa.int32()),
                                    "rating_score": pa.array(scores, pa.float64()),
                                    "rating_distribution": pa.array(distributions, pa.list_(pa.float64())),
                                    "rating_entropy": pa.array(entropies, pa.float64()),
                                    "rating_explanation": pa.array(explanations, pa.string()),
                                    "rating_raw": pa.array(raws, pa.string()),
                                    "oracle": pa.array([oracle.name] * table.num_rows, pa.string())})
    kept, dropped = ds.split_rows(table, [reason is None for reason in reasons], reasons)
    stats = ds.write_part(out_dir, index, kept, dropped)
    stats["oracle"] = oracle.name
    return stats


def rating_requests(table: pa.Table, rubric: str = "code") -> list[RatingRequest]:
    """The requests of a table's rows. Web: the path is the row's `url` (else host + path) and the request
    carries the row's web columns (`web_rubric.WEB_COLUMNS`) that the table has."""
    ids, texts, languages, paths = (column(table, name) for name in ("id", "text", "language", "path"))
    if rubric != "web":
        return [RatingRequest(id=i, text=t, language=lang, path=p) for i, t, lang, p in zip(ids, texts, languages, paths)]
    hosts, urls = column(table, "repo"), column(table, "url")
    present = [name for name in WEB_COLUMNS if name in table.column_names]
    extra = {name: column(table, name) for name in present}
    return [RatingRequest(id=ids[row], text=texts[row], language=languages[row] or "text",
                          path=urls[row] or f"{hosts[row] or ''}{paths[row] or ''}", rubric="web",
                          columns={name: extra[name][row] for name in present})
            for row in range(table.num_rows)]


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
    ctx.executor = executor
    in_dir = ctx.inputs["in"]
    rubric = ctx.options["rubric"]
    parts = ds.finished_parts(in_dir)
    # the strata: languages of files; categories of web pages (when the input has them)
    stratum = "language"
    if rubric == "web" and parts and "category" in ds.part_columns(in_dir, parts[0]):
        stratum = "category"
    located, strata = [], []
    for part in parts:
        values = ds.read_part(in_dir, part, [stratum]).column(stratum).to_pylist()
        strata += [value or "unknown" for value in values]
        located += [(part, row) for row in range(len(values))]
    if not strata:
        raise CurateStateError(f"{ctx.name}: nothing to rate: the input {in_dir} holds no rows (did its step keep "
                               "any file?)")
    if backend != "vllm":  # check the backend and its options before any work (the model rater loads its model)
        step_oracle(backend, ctx.options["backend_options"])
    done = ctx.prepare()
    if done is not None:
        return done
    chosen = sorted(int(i) for i in stratified_sample(strata, ctx.options["n"], seed=ctx.options["seed"]))
    per_part = ctx.options["shard_rows"]
    groups = [[located[i] for i in chosen[start : start + per_part]] for start in range(0, len(chosen), per_part)]
    what = "pages" if rubric == "web" else "files"
    say(f"{ctx.name}: rating {len(chosen):,} of {len(strata):,} {what} ({len(set(strata))} {stratum} value(s)) "
        f"with backend {ctx.options['backend']!r} and the {rubric} rubric in {len(groups)} part(s)")
    tasks = [Task(key=f"part-{index:05d}", function="seedcoder.curate.oracle:oracle_task",
                  args={"in_dir": in_dir, "rows": rows, "out_dir": ctx.out_dir, "index": index,
                        "backend": ctx.options["backend"], "backend_options": ctx.options["backend_options"],
                        "rubric": rubric},
                  marker=ds.marker_path(ctx.out_dir, index)) for index, rows in enumerate(groups)]
    markers = ctx.run(tasks)
    names = sorted({marker.get("stats", {}).get("oracle", "") for marker in markers} - {""})
    return ctx.finish(markers, {"sampled": len(chosen), "population": len(strata), "oracle": names,
                                "rubric": rubric, "stratified_by": stratum})


@dataclass
class OracleOptions:
    n: int = option(1000, "files (or web pages) to rate")
    seed: int = option(0, "sampling seed")
    backend: str = option("rubric", "rubric (offline static proxy), openai (any OpenAI-compatible endpoint), vllm, "
                                    "or logprob (a model's probabilities of the ratings: checkpoint or base_url)")
    backend_options: dict[str, Any] = option({}, "options of the backend (model, base_url, checkpoint, concurrency, "
                                                 "cache_dir, ...)")
    shard_rows: int = option(256, "rated rows per output shard (the unit of resumption)")
    rubric: str = option("code", "code (source files) or web (web pages as code-related text; the sample is "
                                 "stratified by category)")

    def __post_init__(self) -> None:
        if self.rubric not in RUBRICS:
            raise ValueError(f"rubric: must be one of {', '.join(RUBRICS)}, got {self.rubric!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.n < 1:
            raise ValueError(f"n: the number of files to rate must be >= 1, got {self.n} (an empty sample trains no "
                             "scorer)")
        if self.shard_rows < 1:
            raise ValueError(f"shard_rows: must be >= 1, got {self.shard_rows}")


STEP = StepKind("oracle", "ratings (0-10) of a sample stratified by language (web pages: by category)", run_oracle,
                OracleOptions, line="ratings")


__all__ = ["BACKENDS", "STEP", "OracleOptions", "make_oracle", "oracle_task", "rating_requests", "run_oracle",
           "step_oracle", "stratified_sample"]
