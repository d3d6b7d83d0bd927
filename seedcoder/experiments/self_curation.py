"""The self-curation loop: the code model curates data for itself, in rounds.

    seedcoder experiment self-curate --config configs/self_curation_demo.toml [--section.key=value ...]
    python -m seedcoder.experiments.self_curation --config configs/self_curation_demo.toml --run.rounds=3

Input: a dataset that passed the rules (a finished curation step's output, e.g. runs/demo/curate/decontaminate,
or `input.curate_config`, a curation config whose leading rule steps make it under <out>/curate) and a starting
model M_0 (`input.model`, a checkpoint of ours; its tokenizer found by `seedcoder.checkpoint.find_tokenizer`).
Round k (0, 1, ...), every step a curation step (`seedcoder.curate.pipeline.run_step`) into
<out>/round-<k>/<step>, so a rerun skips what finished and continues what did not, like `seedcoder curate run`:

    oracle        M_k rates a language-stratified sample (`oracle.n` files, seed `oracle.seed + k`); the backend
                  is `oracle.backend`: "logprob" (default) gets `backend_options.checkpoint` = M_k from the loop;
                  any other backend ("rubric", "openai", ...) rates with its own options
    scorer_train  the scorer (our model + a regression head) initialised from M_k's weights learns the ratings
    score         every file of the input scored by it
    score_filter  the bottom `filter.drop_fraction` dropped
    tokenize      what is kept, with M_k's tokenizer -> .scs shards
    pretrain      M_{k+1}: `seedcoder.train.pretrain` on those shards (continued from M_k by default:
                  checkpoint.init_from = M_k, the same shape), `pretrain.steps` steps; it resumes after a kill and
                  is skipped once its final checkpoint exists (in <out>/round-<k>/pretrain/checkpoints)
    agreement     round k's sample rated again, by M_{k+1} (`oracle.agreement`): how much the rater moved

A round records the fingerprints of what it starts from (M_k, its tokenizer, the input dataset) in
<out>/round-<k>/_round.json; when one changes (M_0 replaced, an earlier round redone) the round starts over. The
pretraining's config and data are recorded in pretrain.json beside it likewise.

Report (<out>/report.md + report.json, written atomically after every round; plots in <out>/plots/): per round,
the oracle's ratings, the agreement between rounds (Spearman and mean absolute difference of the same files
rated by M_k and M_{k+1}), the scorer's held-out MAE and Spearman against its teacher with the constant
baseline's MAE (the issue's target: MAE <= 0.6 x baseline, Spearman >= 0.7), the score histogram per language,
the lowest-scored dropped files (score, path, the head of the text), files and tokens kept vs total, and M_{k+1}'s
training loss. Plots: scores per language, scorer predictions vs teacher, M_k vs M_{k+1} ratings.

Bad input (a missing dataset or checkpoint, zero rounds, an empty sample, a bad key) is one line naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seedcoder import checkpoint as ckpt
from seedcoder.config import ConfigError, load_sections, option, sections_of
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.oracle import BACKENDS
from seedcoder.curate.pipeline import load_pipeline_config, run_pipeline, run_step
from seedcoder.curate.step import WORKER_CACHE
from seedcoder.data.manifest import MANIFEST_NAME
from seedcoder.data.shards import file_sha256
from seedcoder.demo.runs import launch_command
from seedcoder.errors import UserError, exit_on_user_error
from seedcoder.experiments.self_curation_report import PRETRAIN_RECORD, dataset_rows, read_record, write_report
from seedcoder.fileio import atomic_write_text
from seedcoder.model import PRESETS
from seedcoder.tokenizer import load_tokenizer
from seedcoder.train import pretrain
from seedcoder.train_config import TrainConfig, load_config, validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROUND_FILE = "_round.json"
RULE_STEPS = ("ingest", "exact_dedup", "near_dedup", "syntax", "decontaminate")  # the steps before any model
MODEL_BACKENDS = ("logprob",)  # oracle backends that rate with a checkpoint: the loop gives them M_k
FULL_HASH_BYTES = 1 << 30  # checkpoints up to this size are fingerprinted by content, larger ones by name/size/mtime
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
PROG = "seedcoder experiment self-curate"


class ExperimentStopped(UserError):
    """The loop stopped before its end (a pretraining run asked to stop); rerunning the command continues it."""


# ------------------------------------------------------------------------------------------ the config
@dataclass
class RunSection:
    out: str = option("runs/self_curation", "round k writes <out>/round-<k>/<step>; report.md, report.json, plots/")
    rounds: int = option(2, "rounds of rate -> learn -> score -> filter -> pretrain")
    workers: int | None = option(None, "curation processes (default: all CPUs); the model steps use one")
    device: str | None = option(None, "the scorer's device: cpu, cuda, cuda:1 (default: CUDA when present)")
    progress: bool = option(True, "progress bars / lines on stderr")

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out: must not be empty")
        if isinstance(self.rounds, bool) or self.rounds < 1:
            raise ValueError(f"rounds: must be >= 1, got {self.rounds}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")


@dataclass
class InputSection:
    dataset: str = option("", "a finished curation dataset that passed the rules (runs/demo/curate/decontaminate)")
    curate_config: str = option("", "instead of dataset: a curation config whose leading rule steps (ingest ... "
                                    "decontaminate) make it, under <out>/curate")
    model: str = option("", "M_0: a checkpoint of ours (a step folder, a checkpoints root or a run folder)")
    tokenizer: str = option("", "M_0's tokenizer.json (default: found with the checkpoint)")


@dataclass
class OracleSection:
    n: int = option(300, "files M_k rates each round (stratified by language)")
    seed: int = option(0, "sampling seed of round 0; round k samples with seed + k")
    backend: str = option("logprob", "logprob (rated by M_k: backend_options.checkpoint is set by the loop), "
                                     "rubric, openai, vllm")
    backend_options: dict[str, Any] = option({}, "the backend's options (logprob: device, batch_size, cache_dir, ...)")
    shard_rows: int = option(256, "rated rows per output shard")
    agreement: bool = option(True, "rate round k's sample again with M_{k+1}: the agreement between rounds")

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or self.n < 1:
            raise ValueError(f"n: must be >= 1 (an empty sample teaches the scorer nothing), got {self.n}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend in MODEL_BACKENDS and "checkpoint" in self.backend_options:
            raise ValueError("backend_options: the loop sets `checkpoint` to each round's model M_k; remove it")


@dataclass
class ScorerSection:
    train: dict[str, Any] = option({"epochs": 1, "batch_size": 16, "max_tokens": 256},
                                   "train_scorer arguments: epochs, steps, lr, batch_size, max_tokens, ...")
    batch_size: int = option(32, "files per forward pass when scoring")


@dataclass
class FilterSection:
    drop_fraction: float = option(0.1, "fraction of the files dropped each round (the lowest scores)")
    by: str = option("global", "global, or language: the fraction taken per language")

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_fraction < 1.0:
            raise ValueError(f"drop_fraction: must be in [0, 1), got {self.drop_fraction}")
        if self.by not in ("global", "language"):
            raise ValueError(f"by: must be 'global' or 'language', got {self.by!r}")


@dataclass
class PretrainSection:
    config: str = option("", "a training TOML the runs start from ([optimizer], [schedule], [data], [logging]); "
                             "default: the training defaults")
    overrides: list[str] = option([], "more training overrides: [\"--optimizer.lr=1e-3\", ...]")
    continue_from_model: bool = option(True, "M_{k+1} starts from M_k's weights; false: fresh weights of M_k's shape")
    steps: int = option(60, "optimizer steps per round")
    seq_len: int = option(256, "tokens per row")
    batch_size: int = option(16, "rows per step")
    micro_batch_size: int = option(8, "rows per forward pass (per process)")
    checkpoint_interval: int = option(20, "steps between checkpoints (a killed run resumes from the last)")
    device: str = option("auto", "auto, cuda or cpu")
    nproc: int = option(1, "training processes: 1 runs in this process; more runs torchrun")

    def __post_init__(self) -> None:
        for name in ("steps", "seq_len", "batch_size", "micro_batch_size", "nproc"):
            value = getattr(self, name)
            if isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: must be >= 1, got {value}")
        if self.checkpoint_interval < 0:
            raise ValueError(f"checkpoint_interval: must be >= 0, got {self.checkpoint_interval}")
        if self.batch_size % (self.micro_batch_size * self.nproc):
            raise ValueError(f"batch_size: {self.batch_size} is not a multiple of micro_batch_size x nproc "
                             f"({self.micro_batch_size} x {self.nproc})")
        if self.device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"device: must be auto, cuda or cpu, got {self.device!r}")


@dataclass
class ReportSection:
    examples: int = option(10, "the lowest-scored dropped files shown per round")
    head_lines: int = option(8, "lines of each example's text shown")
    plots: bool = option(True, "PNG plots in <out>/plots (matplotlib)")


@dataclass
class SelfCurationConfig:
    run: RunSection = field(default_factory=RunSection)
    input: InputSection = field(default_factory=InputSection)
    oracle: OracleSection = field(default_factory=OracleSection)
    scorer: ScorerSection = field(default_factory=ScorerSection)
    filter: FilterSection = field(default_factory=FilterSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    report: ReportSection = field(default_factory=ReportSection)


PATH_KEYS = (("run", "out"), ("input", "dataset"), ("input", "curate_config"), ("input", "model"),
             ("input", "tokenizer"), ("pretrain", "config"))


def load_self_curation_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
                              ) -> SelfCurationConfig:
    """The loop's config: a TOML file (None: defaults) + `--section.key=value` overrides; ConfigError names the key.
    Path keys may use {root} (this repository) and {config_dir} (the config file's folder)."""
    cfg = load_sections(SelfCurationConfig, path, overrides)
    variables = {"root": ROOT, "config_dir": os.path.dirname(os.path.abspath(path)) if path else os.getcwd()}
    for section, key in PATH_KEYS:
        value = getattr(getattr(cfg, section), key)
        for name, replacement in variables.items():
            value = value.replace("{" + name + "}", replacement)
        setattr(getattr(cfg, section), key, value)
    return cfg


# ------------------------------------------------------------------------------------------ small measures
def checkpoint_fingerprint(directory: str) -> str:
    """SHA-256 of a checkpoint folder: the contents of its files (names, sizes and mtimes beyond FULL_HASH_BYTES)."""
    files = []
    for folder, dirs, names in os.walk(directory):
        dirs.sort()
        files += [os.path.join(folder, name) for name in sorted(names)]
    by_content = sum(os.path.getsize(path) for path in files) <= FULL_HASH_BYTES
    digest = hashlib.sha256()
    for path in files:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, directory)}\0{stat.st_size}\0".encode())
        if by_content or stat.st_size <= 1 << 20:
            with open(path, "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
        else:
            digest.update(str(stat.st_mtime_ns).encode())
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def log(message: str) -> None:
    print(f"[self-curation] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ inputs
def _key_error(key: str, problem: str) -> ConfigError:
    return ConfigError(f"config key {key!r}: {problem}")


def prepare_dataset(cfg: SelfCurationConfig, out: str) -> str:
    """The dataset every round filters: input.dataset, or the rule steps of input.curate_config run into
    <out>/curate. ConfigError naming the key when it is missing, unfinished or empty."""
    key = "input.dataset"
    if cfg.input.curate_config:
        key = "input.curate_config"
        curate_out = os.path.join(out, "curate")
        data = load_pipeline_config(cfg.input.curate_config, overrides={"out": curate_out})
        rule_steps = []
        for table in data["steps"]:
            if table["step"] not in RULE_STEPS:
                break
            rule_steps.append(table["name"])
        if not rule_steps:
            raise _key_error(key, f"{cfg.input.curate_config} starts with no rule step ({', '.join(RULE_STEPS)})")
        log(f"the rule steps of {cfg.input.curate_config} ({', '.join(rule_steps)}) -> {curate_out}")
        run_pipeline(data, only=rule_steps)
        dataset = os.path.join(curate_out, rule_steps[-1])
    else:
        dataset = os.path.abspath(cfg.input.dataset)
    try:
        ds.finished_parts(dataset)
    except CurateStateError as error:
        raise _key_error(key, str(error)) from None
    totals = (ds.success_record(dataset) or {}).get("totals", {})
    if int(totals.get("kept_rows", 0)) == 0:
        raise _key_error(key, f"{dataset} holds no files: nothing to sample, score or train on")
    return dataset


def resolve_model(path: str, key: str) -> str:
    try:
        return ckpt.resolve_dcp_checkpoint(path)
    except ckpt.CheckpointError as error:
        raise _key_error(key, str(error)) from None


def model_tokenizer(model_dir: str, given: str, key: str) -> str:
    """The tokenizer.json of a model: `given`, or the one `find_tokenizer` finds; checked loadable."""
    try:
        path = given or ckpt.find_tokenizer(model_dir)
        load_tokenizer(path)
    except UserError as error:  # CheckpointError, TokenizerError
        raise _key_error(key, str(error)) from None
    return os.path.abspath(path)


# ------------------------------------------------------------------------------------------ a round
def _round_dir(out: str, k: int) -> str:
    return os.path.join(out, f"round-{k}")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def ready_round(round_dir: str, record: Mapping[str, Any]) -> None:
    """Start or continue round_dir: a round of other inputs (another M_k, tokenizer or dataset) is removed first."""
    record = _canonical(record)
    previous = read_record(os.path.join(round_dir, ROUND_FILE))
    if os.path.isdir(round_dir) and os.listdir(round_dir):
        if previous is None:
            raise CurateStateError(f"{round_dir} is not empty and holds no {ROUND_FILE}: not a round of this loop; "
                                   "choose another run.out")
        if previous != record:
            changed = sorted(key for key in set(previous) | set(record) if previous.get(key) != record.get(key))
            log(f"{os.path.basename(round_dir)}: its inputs changed ({', '.join(changed)}); starting it over")
            for entry in sorted(os.listdir(round_dir), key=lambda name: name == ROUND_FILE):  # the record last
                _remove(os.path.join(round_dir, entry))
    os.makedirs(round_dir, exist_ok=True)
    if read_record(os.path.join(round_dir, ROUND_FILE)) != record:
        ds.write_json(os.path.join(round_dir, ROUND_FILE), record)


def oracle_options(cfg: SelfCurationConfig, model_dir: str, n: int, seed: int) -> dict[str, Any]:
    backend_options = dict(cfg.oracle.backend_options)
    if cfg.oracle.backend in MODEL_BACKENDS:
        backend_options["checkpoint"] = model_dir
    return {"n": n, "seed": seed, "backend": cfg.oracle.backend, "backend_options": backend_options,
            "shard_rows": cfg.oracle.shard_rows}


def training_config(cfg: SelfCurationConfig, out_dir: str, data_dir: str, model_dir: str, seed: int) -> TrainConfig:
    """The TrainConfig of M_{k+1}: pretrain.config + pretrain.overrides, then the loop's keys (data, steps, batch,
    M_k's shape, init_from M_k when continuing). ConfigError naming pretrain.* keys."""
    p = cfg.pretrain
    try:
        train_cfg = load_config(p.config or None, list(p.overrides))
    except ConfigError as error:
        raise ConfigError(f"pretrain.config / pretrain.overrides: {error}") from None
    if train_cfg.stages:
        raise _key_error("pretrain.config", f"{p.config} has [[stages]]; the loop trains one stage per round")
    shape = ckpt.read_model_config(model_dir)
    train_cfg.run.name = f"self-curation-{os.path.basename(os.path.dirname(out_dir))}"
    train_cfg.run.out_dir = out_dir
    train_cfg.run.seed = train_cfg.run.seed + seed
    # M_k's shape: the preset it was made from (the one whose other fields all match, else "debug") + what differs
    explicit = ("vocab_size", "rope_theta", "max_seq_len")
    fields = {key: value for key, value in shape.to_dict().items() if key not in explicit}
    preset = next((name for name, known in PRESETS.items()
                   if all(getattr(known, key) == value for key, value in fields.items())), "debug")
    train_cfg.model.preset = preset
    train_cfg.model.vocab_size = shape.vocab_size
    train_cfg.model.rope_theta = shape.rope_theta
    train_cfg.model.max_seq_len = shape.max_seq_len
    train_cfg.model.overrides = {key: value for key, value in fields.items() if getattr(PRESETS[preset], key) != value}
    train_cfg.data.path = data_dir
    train_cfg.data.seq_len = p.seq_len
    train_cfg.train.steps = p.steps
    train_cfg.train.batch_size = p.batch_size
    train_cfg.train.micro_batch_size = p.micro_batch_size
    train_cfg.train.device = p.device
    train_cfg.checkpoint.dir = ""
    train_cfg.checkpoint.interval = p.checkpoint_interval
    train_cfg.checkpoint.init_from = model_dir if p.continue_from_model else ""
    train_cfg.checkpoint.resume = True  # a fresh run (no checkpoint yet) starts from init_from
    if p.seq_len > shape.max_seq_len:
        raise _key_error("pretrain.seq_len", f"{p.seq_len} exceeds the model's max_seq_len {shape.max_seq_len}")
    try:
        validate(train_cfg)
    except ConfigError as error:
        raise ConfigError(f"pretrain: {error}") from None
    return train_cfg


def finished_checkpoint(checkpoints: str, steps: int) -> str | None:
    """The checkpoint of a finished run (its step is `steps`), else None."""
    newest = ckpt.latest_checkpoint(checkpoints)
    if newest is None:
        return None
    step = int(ckpt.read_train_state(newest).get("step", -1))
    return newest if step >= steps else None


def run_training(train_cfg: TrainConfig, nproc: int, toml_path: str) -> int:
    """seedcoder.train's pretraining: in this process (one rank), or torchrun with `nproc` processes."""
    if nproc == 1:
        saved = {key: os.environ.get(key) for key in DIST_ENV}  # a one-rank group sets these; later steps must not see them
        try:
            return pretrain(train_cfg)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    command = launch_command(nproc) + ["--config", toml_path, "--resume"]
    log("$ " + " ".join(command))
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(command, env=environment).returncode


def pretrain_round(cfg: SelfCurationConfig, round_dir: str, data_dir: str, model_dir: str, k: int) -> tuple[str, bool]:
    """Pretrain M_{k+1} on round k's shards; (its final checkpoint, whether this call trained)."""
    out_dir = os.path.join(round_dir, "pretrain")
    train_cfg = training_config(cfg, out_dir, data_dir, model_dir, k)
    record = _canonical({"config": train_cfg.to_dict(), "data": file_sha256(os.path.join(data_dir, MANIFEST_NAME)),
                         "nproc": cfg.pretrain.nproc})
    record_path = os.path.join(round_dir, PRETRAIN_RECORD)
    if read_record(record_path) != record:
        if os.path.exists(out_dir):
            log(f"round {k}: the pretraining's config or data changed; starting it over")
            _remove(out_dir)
        ds.write_json(record_path, record)
    checkpoints = train_cfg.checkpoint_dir
    final = finished_checkpoint(checkpoints, train_cfg.train.steps)
    if final is not None:
        log(f"round {k}: pretrain: already finished ({final}); skipped")
        return final, False
    os.makedirs(out_dir, exist_ok=True)
    toml_path = os.path.join(round_dir, "pretrain.toml")
    atomic_write_text(toml_path, train_cfg.to_toml())
    start = f"from M_{k} ({model_dir})" if train_cfg.checkpoint.init_from else "from fresh weights"
    log(f"round {k}: pretraining M_{k + 1} {start}: {train_cfg.train.steps} steps of {train_cfg.train.batch_size} x "
        f"{train_cfg.data.seq_len} tokens on {data_dir}")
    code = run_training(train_cfg, cfg.pretrain.nproc, toml_path)
    final = finished_checkpoint(checkpoints, train_cfg.train.steps)
    if code != 0 or final is None:
        newest = ckpt.latest_checkpoint(checkpoints)
        raise ExperimentStopped(f"round {k}: the pretraining of M_{k + 1} ended (exit {code}) before step "
                                f"{train_cfg.train.steps} (last checkpoint: {newest}); run the same command again to "
                                "continue it")
    return final, True


def run_round(cfg: SelfCurationConfig, k: int, out: str, dataset: str, model_dir: str, tokenizer: str,
              executor: ExecutorConfig) -> dict[str, Any]:
    """Round k: rate with M_k -> scorer from M_k -> score -> filter -> tokenize -> pretrain M_{k+1} -> agreement.
    Returns the paths of the round's outputs."""
    round_dir = _round_dir(out, k)
    ready_round(round_dir, {"model": checkpoint_fingerprint(model_dir), "tokenizer": file_sha256(tokenizer),
                            "dataset": ds.input_fingerprint(dataset)})
    step = {name: os.path.join(round_dir, name) for name in
            ("oracle", "scorer_train", "score", "score_filter", "tokenize", "agreement")}
    log(f"round {k}: M_{k} = {model_dir}; oracle {cfg.oracle.backend!r}, {cfg.oracle.n} files")
    started = time.perf_counter()
    model_step = dataclasses.replace(executor, workers=1)  # one process holds the model (torch uses the cores)
    run_step("oracle", out=step["oracle"], inputs={"in": dataset}, executor=executor,
             options=oracle_options(cfg, model_dir, cfg.oracle.n, cfg.oracle.seed + k))
    if dataset_rows(step["oracle"]) == 0:
        raise _key_error("oracle", f"round {k}: the oracle rated none of its sample ({step['oracle']}: every answer "
                                   "unparseable?); the scorer has nothing to learn")
    run_step("scorer_train", out=step["scorer_train"], inputs={"ratings": step["oracle"]}, executor=model_step,
             options={"checkpoint": model_dir, "tokenizer": tokenizer, "device": cfg.run.device,
                      "train": dict(cfg.scorer.train)})
    run_step("score", out=step["score"], inputs={"in": dataset, "scorer": step["scorer_train"]}, executor=model_step,
             options={"batch_size": cfg.scorer.batch_size, "device": cfg.run.device})
    WORKER_CACHE.clear()  # the rater and the scorer this process held: the pretraining gets the memory
    run_step("score_filter", out=step["score_filter"], inputs={"in": step["score"]}, executor=executor,
             options={"drop_fraction": cfg.filter.drop_fraction, "by": cfg.filter.by})
    run_step("tokenize", out=step["tokenize"], inputs={"datasets": [step["score_filter"]]}, executor=executor,
             options={"tokenizer": tokenizer})
    next_model, trained = pretrain_round(cfg, round_dir, step["tokenize"], model_dir, k)
    next_tokenizer = model_tokenizer(next_model, "", f"round-{k}.pretrain")
    if cfg.oracle.agreement:
        if trained:  # a new M_{k+1} (same path as an earlier one): its old ratings describe another model
            _remove(step["agreement"])
        log(f"round {k}: agreement: the same {dataset_rows(step['oracle'])} files rated by M_{k + 1}")
        run_step("oracle", name="agreement", out=step["agreement"], inputs={"in": step["oracle"]},
                 executor=executor, options=oracle_options(cfg, next_model, dataset_rows(step["oracle"]), cfg.oracle.seed + k))
        WORKER_CACHE.clear()
    log(f"round {k}: done in {time.perf_counter() - started:.1f} s; M_{k + 1} = {next_model}")
    return {"round": k, "dir": round_dir, "model": model_dir, "tokenizer": tokenizer, "next_model": next_model,
            "next_tokenizer": next_tokenizer, **{f"{name}_dir": path for name, path in step.items()}}


# ------------------------------------------------------------------------------------------ the loop
def run_self_curation(cfg: SelfCurationConfig) -> dict[str, Any]:
    """Every round, in order (a rerun skips what finished); returns the report (also in <out>/report.json)."""
    out = os.path.abspath(cfg.run.out)
    if bool(cfg.input.dataset) == bool(cfg.input.curate_config):
        raise _key_error("input.dataset", "give exactly one of input.dataset (a curated dataset that passed the rules) "
                                          "and input.curate_config (a curation config whose rule steps make it)")
    if not cfg.input.model:
        raise _key_error("input.model", "required: the starting model M_0 (a checkpoint of ours)")
    model = resolve_model(cfg.input.model, "input.model")
    tokenizer = model_tokenizer(model, cfg.input.tokenizer, "input.tokenizer" if cfg.input.tokenizer else "input.model")
    if cfg.pretrain.config and not os.path.isfile(cfg.pretrain.config):
        raise _key_error("pretrain.config", f"{cfg.pretrain.config} does not exist")
    training_config(cfg, os.path.join(out, "round-0", "pretrain"), "", model, 0)  # its errors now, not after round 0's rating
    os.makedirs(out, exist_ok=True)
    dataset = prepare_dataset(cfg, out)
    executor = ExecutorConfig(kind="local", workers=cfg.run.workers, progress=cfg.run.progress)
    started = time.perf_counter()
    log(f"{cfg.run.rounds} round(s) on {dataset} ({dataset_rows(dataset):,} files) from M_0 = {model} -> {out}")
    done: list[dict[str, Any]] = []
    current, current_tokenizer = model, tokenizer
    report: dict[str, Any] = {}
    for k in range(cfg.run.rounds):
        paths = run_round(cfg, k, out, dataset, current, current_tokenizer, executor)
        done.append(paths)
        report = write_report(cfg, out, dataset, model, done)
        current, current_tokenizer = paths["next_model"], paths["next_tokenizer"]
    log(f"{cfg.run.rounds} round(s) in {time.perf_counter() - started:.1f} s; report: {os.path.join(out, 'report.md')}")
    return report


def _config_keys() -> str:
    """The keys of every section with their defaults and help, for --help."""
    lines = ["Config keys (TOML sections; on the command line --section.key=value):"]
    for section, cls in sections_of(SelfCurationConfig).items():
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            lines.append(f"  {section}.{f.name} = {json.dumps(default)}: {f.metadata['help']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=_config_keys(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="TOML", help="the loop's config (configs/self_curation_demo.toml)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input (one line on stderr naming the key) or a stopped pretraining run."""
    args, overrides = build_parser().parse_known_args(argv)

    def run() -> int:
        cfg = load_self_curation_config(args.config, overrides)
        try:
            run_self_curation(cfg)
        except CurateStateError as error:  # an output directory the loop cannot reuse, an unfinished input
            raise ConfigError(f"config key 'run.out': {error}") from None
        return 0

    return exit_on_user_error(PROG, run)


__all__ = ["ExperimentStopped", "SelfCurationConfig", "build_parser", "checkpoint_fingerprint", "load_self_curation_config",
           "main", "run_round", "run_self_curation", "training_config"]


if __name__ == "__main__":
    sys.exit(main())
