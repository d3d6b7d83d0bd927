"""The curation pipeline: every step as `seedcoder curate STEP --in DIR --out DIR`, and all of them from a config.

    seedcoder curate run --config configs/curate_demo.toml          # every step of the config, in order
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
    commits         commit samples from git repositories                                   (curate.commits)
    repo_documents  a repository's files concatenated in dependency order                  (curate.repo_documents)
    tokenize        tokenizer + .scs shards with score, language, source, manifest         (curate.tokenize_shards)
    report          counts, bytes, tokens kept/dropped per step and language, plots        (curate.report)

This module only wires them: the registry, the config (TOML, overrides), the order and inputs of the steps,
the executor settings, and the command line. The whole config (keys, types, step options, inputs) is checked
before the first step runs.

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
scorer_train makes a "model" (read by score), commits and repo_documents start their own lines, and tokenize
reads the last dataset of the files, commits and repo lines. Strings may use {root} (this repository),
{stdlib} (this interpreter's standard library) and {config_dir}; relative paths are relative to the
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seedcoder.curate import (
    commits,
    decontaminate,
    exact_dedup,
    ingest,
    near_dedup,
    oracle,
    repo_documents,
    report,
    score,
    score_filter,
    syntax_filter,
    tokenize_shards,
)
from seedcoder.curate.errors import CurateConfigError, CurateInputError, CurateStateError
from seedcoder.curate.executor import EXECUTORS, ExecutorConfig
from seedcoder.curate.step import StepContext, StepKind, say

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEPS: dict[str, StepKind] = {step.name: step for step in (
    ingest.STEP, exact_dedup.STEP, near_dedup.STEP, syntax_filter.STEP, decontaminate.STEP, oracle.STEP,
    score.SCORER_TRAIN, score.SCORE, score_filter.STEP, commits.STEP, repo_documents.STEP, tokenize_shards.STEP,
    report.STEP)}

# The config's own keys (top level, and the keys of a [[steps]] table that are not the step's options), with types
_STR, _INT, _BOOL = (str,), (int,), (bool,)
PIPELINE_KEYS: dict[str, tuple[type, ...]] = {"out": _STR, "executor": _STR, "workers": _INT, "ray_address": _STR,
                                               "progress": _BOOL, "steps": (list,)}
STEP_RESERVED_KEYS: dict[str, tuple[type, ...]] = {"step": _STR, "name": _STR, "in": (str, list), "ratings": _STR,
                                                   "scorer": _STR, "executor": _STR, "workers": _INT}


def _unknown(what: str, key: str, known: Sequence[str], listed: str) -> CurateConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    return CurateConfigError(f"unknown {what} {key!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                             f"{listed}: {', '.join(known)}")


def _check_type(where: str, key: str, value: Any, types: tuple[type, ...]) -> None:
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise CurateConfigError(f"{where}{key!r} must be {' or '.join(t.__name__ for t in types)}, got {value!r}")


def step_kind(kind: str) -> StepKind:
    if kind not in STEPS:
        raise _unknown("step", kind, list(STEPS), "steps")
    return STEPS[kind]


def check_options(kind: str, given: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """The step's options: defaults updated with `given`; CurateConfigError for unknown keys or wrong types."""
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
    checked = step.valid_options(options or {})
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


def load_pipeline_config(config: str | os.PathLike | Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                         variables: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A pipeline config (TOML file or dict) with `overrides` ("key" or "step_name.key" -> value) applied.

    Checked whole, overrides included: unknown keys (top level, steps, step options) and wrong types are a
    CurateConfigError naming the key, so a bad config stops before any step runs.
    """
    if isinstance(config, Mapping):
        data, config_dir, where = copy.deepcopy(dict(config)), os.getcwd(), ""
    else:
        path = os.fspath(config)
        try:
            with open(path, "rb") as file:
                data = tomllib.load(file)
        except FileNotFoundError:
            raise CurateConfigError(f"config {path} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise CurateConfigError(f"config {path}: {error}") from None
        config_dir, where = os.path.dirname(os.path.abspath(path)), f"{path}: "
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
    for key, value in (overrides or {}).items():
        target, _, option = key.rpartition(".")
        if not target:
            data[option] = value
            continue
        matches = [step for step in steps if step["name"] == target]
        if not matches:
            raise CurateConfigError(f"override {key!r}: no step named {target!r} (steps: {', '.join(names)})")
        matches[0][option] = value
    merged = {"stdlib": sysconfig.get_paths()["stdlib"], "root": ROOT, "config_dir": config_dir, **(variables or {})}
    data = _substitute(data, merged)
    _check_config(data, where)
    return data


def _check_config(data: Mapping[str, Any], where: str) -> None:
    """Every key and type of a config (after overrides): the top level, each step's own keys and its options."""
    for key, value in data.items():
        if key not in PIPELINE_KEYS:
            raise CurateConfigError(where + str(_unknown("top-level key", key, list(PIPELINE_KEYS), "known")))
        _check_type(where, key, value, PIPELINE_KEYS[key])
    for step in data["steps"]:
        _check_type(where, "step", step["step"], STEP_RESERVED_KEYS["step"])
        kind = step_kind(step["step"])
        label = f"{where}step {step['name']!r}: " if step["name"] != kind.name else where
        for key, types in STEP_RESERVED_KEYS.items():
            if key in step:
                _check_type(label + f"{kind.name}: ", key, step[key], types)
        kind.valid_options({key: value for key, value in step.items() if key not in STEP_RESERVED_KEYS}, label)


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
    out = os.path.abspath(data.get("out", "runs/curate"))
    base = executor or ExecutorConfig(kind=data.get("executor", "local"), workers=data.get("workers"),
                                      ray_address=data.get("ray_address"), progress=bool(data.get("progress", True)))
    outputs: dict[str, tuple[str, str]] = {}  # step name -> (directory, line)
    last: dict[str, str] = {}  # line -> the directory of its last step
    plan = []
    for step in data["steps"]:
        kind, name = step["step"], step["name"]
        spec = step_kind(kind)
        settings = {key: value for key, value in step.items() if key not in STEP_RESERVED_KEYS}
        out_dir = os.path.join(out, name)
        inputs: dict[str, Any] = {}

        def resolve(reference: Any, role: str, default_line: str, name: str = name) -> str:
            return _resolve_input(name, reference, role, default_line, last, outputs)

        if "in" in spec.reads:
            inputs["in"] = resolve(step.get("in"), "in", "files")
        if "ratings" in spec.reads:
            inputs["ratings"] = resolve(step.get("ratings"), "ratings", "ratings")
        if "scorer" in spec.reads:
            inputs["scorer"] = resolve(step.get("scorer"), "scorer", "model")
        if "datasets" in spec.reads:
            given = step.get("in")
            if given is None:
                inputs["datasets"] = [last[line] for line in ("files", "repo", "commits") if line in last]
            else:
                given = given if isinstance(given, list) else [given]
                inputs["datasets"] = [resolve(item, "in", "files") for item in given]
        if "steps" in spec.reads:
            inputs["steps"] = [directory for directory, _ in outputs.values()]
        if kind == "commits" and not settings.get("repos"):
            settings["repos"] = _ingested_git_repositories(data["steps"])
        if kind == "report" and settings.get("tokenizer") is None:
            shards = [directory for directory, line in outputs.values() if line == "shards"]
            if shards:
                settings["tokenizer"] = os.path.join(shards[-1], "tokenizer.json")
        step_executor = dataclasses.replace(base, kind=step.get("executor", base.kind),
                                            workers=step.get("workers", base.workers))
        plan.append(PlannedStep(kind, name, out_dir, inputs, spec.valid_options(settings), step_executor))
        line = spec.line or _line_of(inputs.get("in"), outputs) or "files"
        outputs[name] = (out_dir, line)
        last[line] = out_dir
    return plan


def run_pipeline(config: str | os.PathLike | Mapping[str, Any], *, overrides: Mapping[str, Any] | None = None,
                 variables: Mapping[str, str] | None = None, only: Sequence[str] | None = None,
                 executor: ExecutorConfig | None = None) -> dict[str, Any]:
    """Run every step of a pipeline config in order (or the steps named in `only`); returns {name: _SUCCESS}.

    `config`: a TOML path or an equivalent dict; `overrides`: {"out": ..., "scorer_train.checkpoint": ...};
    `variables`: more {name} substitutions; `executor`: replaces the config's executor settings.
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
        f"{os.path.abspath(data.get('out', 'runs/curate'))}")
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
def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _parse_value(text: str) -> Any:
    """A command-line value read as TOML (numbers, true/false, [lists], {tables}); anything else is a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def build_curate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedcoder curate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Steps:\n" + "\n".join(f"  {n:15} {s.help}" for n, s in STEPS.items()))
    commands = parser.add_subparsers(dest="command", metavar="STEP", required=True)
    run = commands.add_parser("run", help="every step of a pipeline config, in order")
    run.add_argument("--config", required=True, help="pipeline TOML (see docs/curation.md)")
    run.add_argument("--set", action="append", default=[], metavar="[STEP.]KEY=VALUE",
                     help="override a config key, e.g. --set out=runs/x --set near_dedup.threshold=0.85")
    run.add_argument("--only", action="append", metavar="NAME",
                     help="run only these steps (repeatable); the others' outputs must exist from earlier runs")
    _executor_arguments(run, default_kind=None)
    for name, spec in STEPS.items():
        command = commands.add_parser(name, help=spec.help, description=spec.help)
        command.add_argument("--out", required=True, metavar="DIR", help="output directory")
        if "in" in spec.reads or "datasets" in spec.reads or "steps" in spec.reads or name in ("ingest", "commits"):
            many = name in ("ingest", "commits", "tokenize", "report")
            command.add_argument("--in", dest="inputs", action="append" if many else "store", metavar="PATH",
                                 required=name != "commits",
                                 help="input " + ("(repeatable)" if many else "dataset directory"))
        for role in ("ratings", "scorer"):
            if role in spec.reads:
                what = "the oracle step's output" if role == "ratings" else "the scorer_train output"
                command.add_argument(f"--{role}", required=True, metavar="DIR", help=what)
        for key, option in spec.options.items():
            if name in ("ingest", "commits") and key in ("inputs", "repos"):
                continue
            shown = json.dumps(option.default) if not isinstance(option.default, str) else option.default
            command.add_argument(_flag(key), dest=f"option_{key}", type=_parse_value, metavar="VALUE",
                                 default=argparse.SUPPRESS, help=f"{option.help} (default: {shown})")
        _executor_arguments(command, default_kind="local")
    return parser


def _executor_arguments(command: argparse.ArgumentParser, default_kind: str | None) -> None:
    note = " (default: the config's)" if default_kind is None else ""
    command.add_argument("--executor", choices=EXECUTORS, default=default_kind, help="local process pool or Ray" + note)
    command.add_argument("--workers", type=int, help="processes (local) or CPUs of a local Ray (default: all CPUs)")
    command.add_argument("--ray-address", help="a Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    command.add_argument("--no-progress", action="store_true", help="no progress bars")


def curate_main(argv: Sequence[str]) -> int:
    args = build_curate_parser().parse_args(list(argv))
    try:
        if args.command == "run":
            overrides = {}
            for item in args.set:
                key, separator, value = item.partition("=")
                if not separator:
                    raise CurateConfigError(f"--set {item!r}: expected KEY=VALUE")
                overrides[key.strip()] = _parse_value(value)
            executor = None
            if args.executor or args.workers or args.ray_address or args.no_progress:
                data = load_pipeline_config(args.config, overrides)
                executor = ExecutorConfig(kind=args.executor or data.get("executor", "local"),
                                          workers=args.workers or data.get("workers"),
                                          ray_address=args.ray_address or data.get("ray_address"),
                                          progress=not args.no_progress)
            run_pipeline(args.config, overrides=overrides, executor=executor, only=args.only)
            return 0
        spec = STEPS[args.command]
        options = {key[len("option_"):]: value for key, value in vars(args).items() if key.startswith("option_")}
        inputs: dict[str, Any] = {}
        given = getattr(args, "inputs", None)
        if args.command == "ingest":
            options["inputs"] = given or []
        elif args.command == "commits":
            options["repos"] = given or []
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
    except (CurateConfigError, CurateStateError, CurateInputError) as error:
        print(f"seedcoder curate {args.command}: {error}", file=sys.stderr)
        return 1


__all__ = ["PIPELINE_KEYS", "STEPS", "STEP_RESERVED_KEYS", "PlannedStep", "build_curate_parser", "check_options",
           "curate_main", "load_pipeline_config", "plan_pipeline", "run_pipeline", "run_step", "step_kind"]
