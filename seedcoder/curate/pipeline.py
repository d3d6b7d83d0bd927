"""The curation pipeline: every step as `seedcoder curate STEP --in DIR --out DIR`, and all of them from a config.

    seedcoder curate run --config configs/curate_demo.toml          # every step of the config, in order
    seedcoder curate run --config my.toml --out=runs/x --near_dedup.threshold=0.85   # with overrides
    seedcoder curate syntax --in runs/c/near_dedup --out runs/c/syntax --timeout-s 1
    run_pipeline("configs/curate_demo.toml", overrides={"out": "runs/demo/curate"})   # the same from Python
    run_step("exact_dedup", out="runs/c/exact", inputs={"in": "runs/c/ingest"})

Each step reads a finished dataset and writes a new one (`seedcoder.curate.dataset`); each is declared, with its
options, its run function and what it drops and why, by its own module (a `StepKind`, `seedcoder.curate.step`):

    ingest          directories, git repositories, jsonl/parquet dumps -> files            (curate.ingest)
    exact_dedup     SHA-256, repository level then file level                              (curate.exact_dedup)
    near_dedup      MinHash LSH, repository level then file level                          (curate.near_dedup)
    syntax          tree-sitter: ERROR/MISSING nodes -> dropped                            (curate.syntax_filter)
    decontaminate   10-gram overlap with HumanEval and given benchmark files               (curate.decontaminate)
    oracle          LLM (or offline rubric) ratings of a sample stratified by language     (curate.oracle)
    scorer_train    our Llama + a regression head trained on the ratings                   (curate.score)
    score           every file scored by the scorer (`score`, 0..10)                       (curate.score)
    score_filter    the bottom `drop_fraction` (10%) by score, globally or per language    (curate.score_filter)
    hq_recall       the high-quality set: per source, fastText recall from score+feature
                    seeds over 2-3 rounds (its own line: tokenize it with in = "hq_recall") (curate.hq_recall)
    commits         commit samples from git repositories                                   (curate.commits)
    repo_documents  a repository's files concatenated in dependency order                  (curate.repo_documents)
    web_corpus      WARC.gz + labels from the HTML documentation Debian packages install   (curate.web_corpus)
    web_ingest      WARC/WARC.gz files and HTML folders -> pages: main text, code verbatim (curate.web_ingest)
    web_recall      code-related pages: code tags (rule) or a fastText classifier           (curate.web_recall)
    web_filter      scored pages kept by per-category thresholds and sampling rates       (curate.web_filter)
    sft_seeds       seed snippets for instruction synthesis, by score and language; hybrids (curate.sft_seeds)
    sft_synthesize  instruction + response from each seed, in a random style or a blend    (curate.sft_synth)
    sft_self_correct  verifiable items: solution + tests in the sandbox, revised until they pass
                                                                                           (curate.sft_self_correct)
    sft_filter      syntax of the response's code, an LLM judge, topic + difficulty (< 3 dropped) (curate.sft_filter)
    sft_chats       chats in the Seed-Coder template with a difficulty weight, chats.jsonl (curate.sft_chats)
    tokenize        tokenizer + .scs shards with score, language, source, manifest         (curate.tokenize_shards)
    report          counts, bytes, tokens kept/dropped per step and language, plots        (curate.report)

This module only wires them: the registry, the config, the order and inputs of the steps, the executor
settings, and the command line. The config is read like every stage's (`seedcoder.config`): the top level is a
`PipelineConfig`, a [[steps]] table a `StepTable` plus the options dataclass of its step; overrides are
`--KEY=VALUE` for a top-level key and `--NAME.KEY=VALUE` for a key of the step named NAME. The whole config,
overrides included (keys, types, values, step options, inputs), is checked before the first step runs.

Config (TOML; keys not given take the defaults listed by `seedcoder curate STEP --help`):

    out = "runs/curate"            # each step writes <out>/<name>
    executor = "local"             # or "ray"; `workers` processes (local) or CPUs of a local Ray
    workers = 2

    [[steps]]
    step = "ingest"                # the step kind; `name` (default: the kind) names its output directory
    inputs = ["{stdlib}", "{root}"]
    [[steps]]
    step = "exact_dedup"           # `in` defaults to the previous step of the same line (see below)
    [[steps]]
    step = "score"
    in = "decontaminate"           # an earlier step's name, or a dataset directory
    workers = 1                    # `executor` / `workers` may be set per step

Lines: steps that filter files continue the "files" line; oracle starts "ratings" (read by scorer_train),
scorer_train makes a "model" (read by score), commits and repo_documents start their own lines, web_ingest
starts the "web" line (web_recall and web_filter follow it; a shared step such as exact_dedup on web pages
names its input: in = "web_ingest"), hq_recall starts "hq", sft_seeds starts "sft" (the SFT steps follow it;
shared steps name their input), and tokenize reads the last dataset of the files,
commits, repo and web lines. Strings may use {root} (this repository),
{stdlib} (this interpreter's standard library), {config_dir} and {out} (the pipeline's `out`, overrides
applied: inputs = ["{out}/web_corpus"] reads an earlier step's files); relative paths are relative to the
current directory.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import json
import os
import sys
import sysconfig
import time
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seedcoder.config import ConfigError, build_section, field_name, option, parse_value, read_toml, split_overrides
from seedcoder.curate import (
    commits,
    decontaminate,
    exact_dedup,
    hq_recall,
    ingest,
    near_dedup,
    oracle,
    repo_documents,
    report,
    score,
    score_filter,
    sft_chats,
    sft_filter,
    sft_seeds,
    sft_self_correct,
    sft_synth,
    syntax_filter,
    tokenize_shards,
    web_corpus,
    web_filter,
    web_ingest,
    web_recall,
)
from seedcoder.curate.errors import CurateConfigError, CurateInputError, CurateStateError
from seedcoder.curate.executor import EXECUTORS, ExecutorConfig
from seedcoder.curate.step import StepContext, StepKind, say
from seedcoder.tokenizer import TOKENIZER_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEPS: dict[str, StepKind] = {step.name: step for step in (
    ingest.STEP, exact_dedup.STEP, near_dedup.STEP, syntax_filter.STEP, decontaminate.STEP, oracle.STEP,
    score.SCORER_TRAIN, score.SCORE, score_filter.STEP, hq_recall.STEP, commits.STEP, repo_documents.STEP,
    web_corpus.STEP, web_ingest.STEP, web_recall.STEP, web_filter.STEP, sft_seeds.STEP, sft_synth.STEP,
    sft_self_correct.STEP, sft_filter.STEP, sft_chats.STEP, tokenize_shards.STEP, report.STEP)}
# Steps whose inputs are options (`inputs`, `repos`): the command line's repeatable --in sets them
INPUT_OPTIONS = {"ingest": "inputs", "web_ingest": "inputs", "commits": "repos"}


@dataclass
class PipelineConfig:
    """The top level of a pipeline config (`--KEY=VALUE` on the command line)."""

    out: str = option("runs/curate", "each step writes <out>/<name>")
    executor: str = option("local", "local (a process pool) or ray")
    workers: int | None = option(None, "processes (local) or CPUs of a local Ray (default: all CPUs)")
    ray_address: str | None = option(None, "a Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    progress: bool = option(True, "progress bars on stderr")
    steps: list[dict[str, Any]] = option([], "the [[steps]] tables, in order")


@dataclass
class StepTable:
    """The keys of a [[steps]] table besides its step's options (`--NAME.KEY=VALUE` on the command line)."""

    step: str = option("", "the step kind (a name in `seedcoder curate --help`)")
    name: str = option("", "the output directory <out>/<name>, and the step's name in overrides (default: step)")
    in_: str | list[str] | None = option(None, "the key `in`: an earlier step's name or a dataset directory (tokenize: "
                                               "a list of them); default: the last step of its line")
    ratings: str | None = option(None, "scorer_train: the oracle step or ratings directory (default: the last one)")
    scorer: str | None = option(None, "score: the scorer_train step or model directory (default: the last one)")
    executor: str | None = option(None, "this step's executor (default: the config's)")
    workers: int | None = option(None, "this step's workers (default: the config's)")


# The keys of a [[steps]] table that are not options of its step (the field `in_` is the key `in`)
STEP_TABLE_KEYS = tuple(f.name.removesuffix("_") for f in dataclasses.fields(StepTable))


def step_kind(kind: str) -> StepKind:
    if not isinstance(kind, str) or kind not in STEPS:
        close = difflib.get_close_matches(str(kind), list(STEPS), n=1)
        raise CurateConfigError(f"unknown step {kind!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                                f"steps: {', '.join(STEPS)}")
    return STEPS[kind]


def check_options(kind: str, given: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """The step's options: defaults updated with `given`; ConfigError for unknown keys, wrong types, bad values."""
    return step_kind(kind).check_options(given, where)


def run_step(kind: str, *, out: str, inputs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
             executor: ExecutorConfig | None = None, name: str | None = None) -> dict[str, Any]:
    """Run (or continue) one step; returns its _SUCCESS record. `inputs`: role -> directory or list of them."""
    step = step_kind(kind)
    inputs = dict(inputs or {})
    for role in step.reads:
        if role not in inputs or inputs[role] in (None, [], ""):
            flag = "--in" if role in ("in", "datasets", "steps") else "--" + role
            raise CurateConfigError(f"{kind}: needs input {role!r} ({flag})")
    checked = step.check_options(options or {}, name=name)
    absolute = {role: ([os.path.abspath(p) for p in value] if isinstance(value, list) else os.path.abspath(value))
                for role, value in inputs.items() if role in step.reads}
    ctx = StepContext(kind=kind, name=name or kind, out_dir=os.path.abspath(out), options=checked, inputs=absolute,
                      executor=executor or ExecutorConfig())
    return step.run(ctx)


# ------------------------------------------------------------------------------------------ the config
def _substitute(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for name, replacement in variables.items():
            value = value.replace("{" + name + "}", replacement)
        return value
    if isinstance(value, list):
        return [_substitute(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, variables) for key, item in value.items()}
    return value


def _split_table(table: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A [[steps]] table -> (its StepTable keys, its step's options)."""
    own = {key: value for key, value in table.items() if key in STEP_TABLE_KEYS}
    return own, {key: value for key, value in table.items() if key not in STEP_TABLE_KEYS}


def load_pipeline_config(config: str | os.PathLike | Mapping[str, Any],
                         overrides: Mapping[str, Any] | Sequence[str] | None = None,
                         variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A pipeline config (TOML file or dict) with `overrides` applied: {"key" or "name.key": value}, or
    command-line arguments (["--out=runs/x", "--near_dedup.threshold=0.85"]: each value read as TOML, the raw
    text for a string key).

    Checked whole, overrides included: unknown keys (top level, steps, step options), wrong types and bad values
    are a ConfigError naming the key, so a bad config stops before any step runs.
    """
    if isinstance(config, Mapping):
        data, config_dir, where = copy.deepcopy(dict(config)), os.getcwd(), ""
    else:
        path = os.fspath(config)
        data, config_dir, where = read_toml(path), os.path.dirname(os.path.abspath(path)), f"{path}: "
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(step, dict) for step in steps):
        raise CurateConfigError(f"{where}the config needs [[steps]] tables (step = \"ingest\", ...)")
    names = []
    for step in steps:
        if "step" not in step:
            raise CurateConfigError(f"{where}a [[steps]] table has no `step` key: {step}")
        step.setdefault("name", step["step"])
        names.append(step["name"])
    if len(set(names)) != len(names):
        raise CurateConfigError(f"{where}step names must be unique (set `name`), got {names}")
    if overrides:
        _check_config(data, where)  # the config alone first: its errors name the file
        _apply_overrides(data, overrides)
        where = ""
    merged = {"stdlib": sysconfig.get_paths()["stdlib"], "root": ROOT, "config_dir": config_dir, **(variables or {})}
    out = data.get("out", PipelineConfig.out)
    if isinstance(out, str) and "out" not in merged:  # {out}: the pipeline's output folder, overrides applied
        merged["out"] = os.path.abspath(_substitute(out, merged))
    data = _substitute(data, merged)
    _check_config(data, where)
    return data


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | Sequence[str]) -> None:
    """Set each override in `data`: "key" at the top level, "name.key" in the step named `name`."""
    from_command_line = not isinstance(overrides, Mapping)
    for key, value in split_overrides(overrides) if from_command_line else overrides.items():
        name, _, step_key = key.partition(".")
        if not step_key:
            table, hints = data, typing.get_type_hints(PipelineConfig)
        else:
            matches = [step for step in data["steps"] if step["name"] == name]
            if not matches:
                steps = ", ".join(str(step["name"]) for step in data["steps"])
                raise CurateConfigError(f"override {key!r}: no step named {name!r} (steps: {steps})")
            table, key = matches[0], step_key
            kind = STEPS.get(table["step"])
            hints = {**typing.get_type_hints(StepTable), **(typing.get_type_hints(kind.options) if kind else {})}
        table[key] = parse_value(value, hints.get(field_name(key), Any)) if from_command_line else value


def _check_config(data: Mapping[str, Any], where: str) -> None:
    """Every key, type and value of a config: the top level, and each step's table (its own keys, its options)."""
    build_section(PipelineConfig, data, where=where)
    for table in data["steps"]:
        kind = step_kind(table["step"])
        # one dataclass of both: an unknown key is matched against every key the table may hold
        whole = dataclasses.make_dataclass(f"{kind.options.__name__}Table", [], bases=(StepTable, kind.options))
        build_section(whole, table, prefix=f"{table['name']}.", where=where)


@dataclass
class PlannedStep:
    """One step of a pipeline, resolved: where it writes, what it reads, its checked options and executor."""
    kind: str
    name: str
    out_dir: str
    inputs: dict[str, Any]
    options: dict[str, Any]
    executor: ExecutorConfig


def plan_pipeline(data: Mapping[str, Any], executor: ExecutorConfig | None = None) -> list[PlannedStep]:
    """The steps of a checked config in order, with their inputs resolved along the lines (see the docstring)."""
    top = build_section(PipelineConfig, data)
    out = os.path.abspath(top.out)
    base = executor or ExecutorConfig(kind=top.executor, workers=top.workers, ray_address=top.ray_address,
                                      progress=top.progress)
    outputs: dict[str, tuple[str, str]] = {}  # step name -> (directory, line)
    last: dict[str, str] = {}  # line -> the directory of its last step
    plan = []
    for table in data["steps"]:
        own, settings = _split_table(table)
        step = build_section(StepTable, own, prefix=f"{table['name']}.")
        kind, name = step.step, step.name
        spec = step_kind(kind)
        out_dir = os.path.join(out, name)
        inputs: dict[str, Any] = {}

        def resolve(reference: Any, role: str, default_line: str, name: str = name) -> str:
            return _resolve_input(name, reference, role, default_line, last, outputs)

        if "in" in spec.reads:
            inputs["in"] = resolve(step.in_, "in", spec.in_line)
        if "ratings" in spec.reads:
            inputs["ratings"] = resolve(step.ratings, "ratings", "ratings")
        if "scorer" in spec.reads:
            inputs["scorer"] = resolve(step.scorer, "scorer", "model")
        if "datasets" in spec.reads:
            if step.in_ is None:
                inputs["datasets"] = [last[line] for line in ("files", "repo", "commits", "web") if line in last]
            else:
                given = step.in_ if isinstance(step.in_, list) else [step.in_]
                inputs["datasets"] = [resolve(item, "in", "files") for item in given]
        if "steps" in spec.reads:
            inputs["steps"] = [directory for directory, _ in outputs.values()]
        if kind == "commits" and not settings.get("repos"):
            settings["repos"] = _ingested_git_repositories(data["steps"])
        if kind == "report" and settings.get("tokenizer") is None:
            shards = [directory for directory, line in outputs.values() if line == "shards"]
            if shards:
                settings["tokenizer"] = os.path.join(shards[-1], TOKENIZER_FILE)
        step_executor = dataclasses.replace(base, kind=step.executor or base.kind,
                                            workers=base.workers if step.workers is None else step.workers)
        plan.append(PlannedStep(kind, name, out_dir, inputs, spec.check_options(settings, name=name), step_executor))
        line = spec.line or _line_of(inputs.get("in"), outputs) or "files"
        outputs[name] = (out_dir, line)
        last[line] = out_dir
    return plan


def run_pipeline(config: str | os.PathLike | Mapping[str, Any], *,
                 overrides: Mapping[str, Any] | Sequence[str] | None = None,
                 variables: Mapping[str, str] | None = None, only: Sequence[str] | None = None,
                 executor: ExecutorConfig | None = None) -> dict[str, Any]:
    """Run every step of a pipeline config in order (or the steps named in `only`); returns {name: _SUCCESS}.

    `config`: a TOML path or an equivalent dict; `overrides`: {"out": ..., "scorer_train.checkpoint": ...} or
    command-line arguments (see `load_pipeline_config`); `variables`: more {name} substitutions; `executor`:
    replaces the config's executor settings.
    """
    data = load_pipeline_config(config, overrides, variables)
    unknown = sorted(set(only or ()) - {step["name"] for step in data["steps"]})
    if unknown:
        raise CurateConfigError(f"only: no step named {unknown} in the config")
    plan = plan_pipeline(data, executor)  # every step planned (and so checked) before the first one runs
    results = {}
    started = time.perf_counter()
    for step in plan:
        if only is None or step.name in only:
            results[step.name] = run_step(step.kind, out=step.out_dir, inputs=step.inputs, options=step.options,
                                          executor=step.executor, name=step.name)
    say(f"pipeline: {len(results)} step(s) in {time.perf_counter() - started:.1f} s -> "
        f"{os.path.abspath(data.get('out', PipelineConfig.out))}")
    return results


def _resolve_input(name: str, reference: Any, role: str, default_line: str, last: Mapping[str, str],
                   outputs: Mapping[str, tuple[str, str]]) -> str:
    """The directory a step's input names: an earlier step, a directory, or (None) the last step of a line."""
    if reference is None:
        if default_line not in last:
            raise CurateConfigError(f"step {name!r}: no earlier step makes its {role!r} input "
                                    f"(a {default_line!r} dataset); set `{role} = ...`")
        return last[default_line]
    if isinstance(reference, str) and reference in outputs:
        return outputs[reference][0]
    if isinstance(reference, str) and os.path.isdir(reference):
        return os.path.abspath(reference)
    raise CurateConfigError(f"step {name!r}: {role} = {reference!r} is neither an earlier step nor a directory")


def _line_of(directory: str | None, outputs: Mapping[str, tuple[str, str]]) -> str | None:
    for out_dir, line in outputs.values():
        if out_dir == directory:
            return line
    return None


def _ingested_git_repositories(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """The git repositories among the inputs of the config's ingest steps (the default of commits.repos)."""
    repos = []
    for step in steps:
        if step.get("step") != "ingest":
            continue
        for spec in step.get("inputs", []):
            path = spec if isinstance(spec, str) else spec.get("path", "") if isinstance(spec, Mapping) else ""
            kind = spec.get("kind", "auto") if isinstance(spec, Mapping) else "auto"
            if kind in ("auto", "git") and os.path.exists(os.path.join(path, ".git")):
                repos.append(os.path.abspath(path))
    return repos


# ------------------------------------------------------------------------------------------ command line
RUN_OVERRIDES = """\
Overrides, in the syntax of every stage's config (each value read as TOML; a string key takes the raw text):
  --KEY=VALUE          a top-level key: --out=runs/x --workers=4 --executor=ray --ray-address=ADDR
  --NAME.KEY=VALUE     a key of the step named NAME: --near_dedup.threshold=0.85 --score.workers=1"""


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def build_curate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedcoder curate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Steps:\n" + "\n".join(f"  {n:15} {s.help}" for n, s in STEPS.items()))
    commands = parser.add_subparsers(dest="command", metavar="STEP", required=True)
    run = commands.add_parser("run", help="every step of a pipeline config, in order", allow_abbrev=False,
                              description="Every step of a pipeline config, in order.", epilog=RUN_OVERRIDES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", required=True, help="pipeline TOML (see docs/curation.md)")
    run.add_argument("--only", action="append", metavar="NAME",
                     help="run only these steps (repeatable); the others' outputs must exist from earlier runs")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (--progress=false)")
    for name, spec in STEPS.items():
        command = commands.add_parser(name, help=spec.help, description=spec.help)
        command.add_argument("--out", required=True, metavar="DIR", help="output directory")
        if "in" in spec.reads or "datasets" in spec.reads or "steps" in spec.reads or name in INPUT_OPTIONS:
            many = name in INPUT_OPTIONS or name in ("tokenize", "report")
            command.add_argument("--in", dest="inputs", action="append" if many else "store", metavar="PATH",
                                 required=name != "commits",
                                 help="input " + ("(repeatable)" if many else "dataset directory"))
        for role in ("ratings", "scorer"):
            if role in spec.reads:
                what = "the oracle step's output" if role == "ratings" else "the scorer_train output"
                command.add_argument(f"--{role}", required=True, metavar="DIR", help=what)
        hints = typing.get_type_hints(spec.options)
        for f in dataclasses.fields(spec.options):
            if INPUT_OPTIONS.get(name) == f.name:
                continue
            default = _default(f)
            shown = default if isinstance(default, str) else json.dumps(default)
            command.add_argument(_flag(f.name), dest=f"option_{f.name}", metavar="VALUE", default=argparse.SUPPRESS,
                                 type=lambda text, hint=hints[f.name]: parse_value(text, hint),
                                 help=f"{f.metadata['help']} (default: {shown})")
        command.add_argument("--executor", choices=EXECUTORS, default="local", help="local process pool or Ray")
        command.add_argument("--workers", type=int, help="processes (local) or CPUs of a local Ray (default: all CPUs)")
        command.add_argument("--ray-address", help="a Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
        command.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def curate_main(argv: Sequence[str]) -> int:
    parser = build_curate_parser()
    args, extra = parser.parse_known_args(list(argv))
    if extra and args.command != "run":  # only `run` takes --KEY=VALUE overrides
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "run":
            overrides = [*extra, *(["--progress=false"] if args.no_progress else [])]
            run_pipeline(args.config, overrides=overrides, only=args.only)
            return 0
        spec = STEPS[args.command]
        options = {key[len("option_"):]: value for key, value in vars(args).items() if key.startswith("option_")}
        inputs: dict[str, Any] = {}
        given = getattr(args, "inputs", None)
        if args.command in INPUT_OPTIONS:
            options[INPUT_OPTIONS[args.command]] = given or []
        elif "datasets" in spec.reads:
            inputs["datasets"] = given
        elif "steps" in spec.reads:
            inputs["steps"] = given
        elif "in" in spec.reads:
            inputs["in"] = given
        for role in ("ratings", "scorer"):
            if role in spec.reads:
                inputs[role] = getattr(args, role)
        executor = ExecutorConfig(kind=args.executor, workers=args.workers, ray_address=args.ray_address,
                                  progress=not args.no_progress)
        run_step(args.command, out=args.out, inputs=inputs, options=options, executor=executor)
        return 0
    except (ConfigError, CurateStateError, CurateInputError) as error:
        print(f"seedcoder curate {args.command}: {error}", file=sys.stderr)
        return 1


__all__ = ["STEPS", "STEP_TABLE_KEYS", "PipelineConfig", "PlannedStep", "StepTable", "build_curate_parser",
           "check_options", "curate_main", "load_pipeline_config", "plan_pipeline", "run_pipeline", "run_step",
           "step_kind"]
