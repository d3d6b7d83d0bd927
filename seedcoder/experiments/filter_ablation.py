"""Does model-based quality filtering help? The ablation of Seed-Coder's claim, end to end, in one command.

    seedcoder experiment filter-ablation --config configs/ablation_filter_demo.toml [--section.key=value ...]
    python -m seedcoder.experiments.filter_ablation --config configs/ablation_filter_demo.toml

The same model (preset, token budget = steps x batch_size x seq_len, schedule, seeds) is pretrained on four
versions of one corpus:

    (a) every file that passed the rules (ingest, exact + near dedup, syntax, HumanEval decontamination);
    (b) (a) minus a random `drop_fraction` of its files (seeded);
    (c) (a) minus the scorer's bottom `drop_fraction`: the oracle rates a stratified sample, the scorer (our
        model + a regression head, from a pretrained checkpoint: by default the arm (a) model of the first seed,
        the paper's way) learns the ratings and scores every file;
    (d) (a) minus the oracle's own bottom `drop_fraction`: the oracle rates EVERY file (the bound (c) approximates).

Steps, each resumable (a rerun skips what finished; a run whose settings changed starts over):
  1. corpus/   `seedcoder.experiments.corpus`: stdlib + site-packages sampled with real quality spread, HumanEval
               matches left out, held-out files split off by path hash (never in any arm);
  2. curate/   the curation pipeline (`seedcoder.curate.pipeline.run_pipeline`): ingest ... decontaminate, the
               oracle on a sample (`oracle`) and on every file (`oracle_all`); the backend is passed through
               (`[oracle] backend`, `backend_options`: "rubric" offline, or an LLM / log-prob backend);
  3. arms/a/   arm (a)'s shards and the ONE tokenizer every arm uses (trained on arm (a), `tokenize` step);
  4. runs/a-s<first seed>/ when the scorer starts from it; then curate/scorer_train, curate/score;
  5. arms/b,c,d/  each arm's dataset (`seedcoder.experiments.arms`) and shards (the shared tokenizer);
  6. runs/<arm>-s<seed>/  `seedcoder.train.pretrain` in this process for every arm and seed (seed by seed, so a
               partial run holds complete pairs), checkpoints every steps / eval_points steps, each evaluated
               (`seedcoder.experiments.evals`: loss on HumanEval and on the held-out files; pass@k at the end),
               then result.json (the run's done marker);
  7. results.json, report.md, curves.png (`seedcoder.experiments.report`), after every seed and at the end.

Config sections (`seedcoder.config`; every key has a default): [run], [corpus], [curation], [oracle], [scorer],
[arms], [tokenizer], [pretrain], [eval]; see configs/ablation_filter_demo.toml and docs/experiments.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats

from seedcoder import checkpoint as ckpt
from seedcoder.config import ConfigError, load_sections, option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.pipeline import run_pipeline, run_step
from seedcoder.errors import UserError, exit_on_user_error
from seedcoder.experiments.arms import ARM_KEYS, ARMS, build_arm, dataset_column, dataset_ids, ratings_by_id
from seedcoder.experiments.corpus import FILES_FILE, CorpusSection, build_corpus, read_records
from seedcoder.experiments.evals import (
    checkpoint_losses,
    easy_problems,
    heldout_documents,
    humaneval_documents,
    pass_at_k_report,
)
from seedcoder.experiments.report import (
    LOSS_METRICS,
    RESULTS_FORMAT,
    RESULTS_VERSION,
    compare_arms,
    curves,
    summarize_runs,
    verdict,
    write_outputs,
)
from seedcoder.fileio import atomic_write_text
from seedcoder.metrics import read_jsonl
from seedcoder.model import Transformer, model_config
from seedcoder.tokenizer import TOKENIZER_FILE, load_tokenizer
from seedcoder.train import pretrain
from seedcoder.train_config import (
    CheckpointSection,
    DataSection,
    LoggingSection,
    ModelSection,
    OptimizerSection,
    RunSection,
    ScheduleSection,
    TrainConfig,
    TrainSection,
    validate,
)

PROG = "seedcoder experiment filter-ablation"
ORACLE_ALL = 1 << 40  # the oracle step's `n` that rates every file
RULE_STEPS = ("ingest", "exact_dedup", "near_dedup", "syntax", "decontaminate")


class AblationError(UserError):
    """The experiment cannot go on (a run that stopped early, an output folder it cannot reuse); names the path."""


# ------------------------------------------------------------------------------------------ config
@dataclass
class AblationRunSection:
    out_dir: str = option("runs/ablation_filter", "everything lands here: corpus/, curate/, arms/, runs/, report.md, "
                          "results.json, curves.png")
    workers: int = option(2, "processes of the curation steps")
    device: str = option("auto", "training, scoring and evaluation: auto (CUDA when present), cpu or cuda")
    until: str = option("report", "report: everything; arms: stop once the arms' shards exist (corpus, curation, "
                        "scorer, arms; no pretraining but the scorer's base run) to inspect them first")

    def __post_init__(self) -> None:
        if not self.out_dir:
            raise ValueError("out_dir: must not be empty")
        if self.until not in ("arms", "report"):
            raise ValueError(f"until: must be arms or report, got {self.until!r}")
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: must be auto, cpu or cuda, got {self.device!r}")


@dataclass
class CurationSection:
    max_file_bytes: int = option(1 << 20, "ingest: larger files are dropped")
    shard_bytes: int = option(4 << 20, "ingest: about this many bytes of text per shard")
    near_dedup_threshold: float = option(0.8, "near_dedup: MinHash Jaccard threshold")
    syntax_timeout_s: float = option(2.0, "syntax: seconds per file")
    decontaminate_ngram: int = option(10, "decontaminate: word n-gram length of the HumanEval check")

    def __post_init__(self) -> None:
        if not 0.0 < self.near_dedup_threshold <= 1.0:
            raise ValueError(f"near_dedup_threshold: must be in (0, 1], got {self.near_dedup_threshold}")
        if self.max_file_bytes < 1 or self.shard_bytes < 1 or self.decontaminate_ngram < 1 or self.syntax_timeout_s <= 0:
            raise ValueError("max_file_bytes, shard_bytes, decontaminate_ngram and syntax_timeout_s must be positive")


@dataclass
class OracleSection:
    n: int = option(500, "files rated for the scorer (a sample stratified by language); arm (d) rates every file")
    seed: int = option(0, "sampling seed")
    backend: str = option("rubric", "the oracle step's backend: rubric (offline proxy), openai, vllm, ... (passed "
                          "through; the oracle step checks it)")
    backend_options: dict[str, Any] = option({}, "the backend's options (model, base_url, cache_dir, ...)")

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"n: at least 2 ratings (the scorer holds some out), got {self.n}")


@dataclass
class ScorerSection:
    checkpoint: str = option("arm_a", "the scorer's base model: \"arm_a\" (the arm (a) model of the first seed, trained "
                             "first), \"\" (a fresh `model` preset) or a checkpoint path")
    model: str = option("tiny", "preset of a fresh scorer (checkpoint = \"\")")
    train: dict[str, Any] = option({}, "train_scorer arguments: epochs, lr, batch_size, max_tokens, ...")
    batch_size: int = option(32, "files per forward pass when scoring")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")


@dataclass
class ArmsSection:
    drop_fraction: float = option(0.2, "share of (a)'s files that arms (b), (c) and (d) drop")
    seed: int = option(0, "seed of the random arm (b) and of the tie-break of equal keys")

    def __post_init__(self) -> None:
        if not 0.0 < self.drop_fraction < 1.0:
            raise ValueError(f"drop_fraction: must be in (0, 1), got {self.drop_fraction}")


@dataclass
class TokenizerSection:
    vocab_size: int = option(4096, "the shared byte-level BPE's vocabulary (trained on arm (a))")
    sample_bytes: int = option(64 << 20, "bytes of arm (a) it is trained on")

    def __post_init__(self) -> None:
        if self.vocab_size < 300 or self.sample_bytes < 1:
            raise ValueError(f"vocab_size: must be >= 300 (bytes + specials), got {self.vocab_size}")


@dataclass
class PretrainSection:
    preset: str = option("tiny", "model preset (seedcoder.model.PRESETS)")
    overrides: dict[str, Any] = option({}, "ModelConfig fields over the preset, e.g. {dim = 128, n_layers = 2}")
    seq_len: int = option(256, "tokens per row")
    batch_size: int = option(16, "rows per optimizer step")
    micro_batch_size: int = option(16, "rows per forward/backward")
    steps: int = option(100, "optimizer steps per run: the token budget is steps x batch_size x seq_len")
    lr: float = option(2e-3, "peak learning rate")
    weight_decay: float = option(0.1, "AdamW weight decay")
    schedule: str = option("cosine", "constant, cosine or wsd")
    warmup_steps: int = option(10, "linear warmup steps")
    min_lr_ratio: float = option(0.1, "the schedule ends at lr x this")
    fim_rate: float = option(0.0, "fill-in-the-middle rate (0: plain next-token prediction, what the evals measure)")
    seeds: list[int] = option([0, 1, 2], "seeds: one run per arm and seed (model init and data order)")
    eval_points: int = option(4, "checkpoints evaluated per run (every steps / eval_points steps; a divisor)")
    num_threads: int | None = option(None, "torch threads on CPU (default: torch's)")
    keep_checkpoints: bool = option(False, "keep every evaluated checkpoint (default: only the final one)")

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: distinct seeds, at least one, got {self.seeds}")
        for name in ("seq_len", "batch_size", "micro_batch_size", "steps", "eval_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size: {self.batch_size} is not a multiple of micro_batch_size {self.micro_batch_size}")
        if self.steps % self.eval_points:
            raise ValueError(f"eval_points: must divide steps ({self.steps}), got {self.eval_points}")
        if self.schedule not in ("constant", "cosine", "wsd"):
            raise ValueError(f"schedule: must be constant, cosine or wsd, got {self.schedule!r}")
        if not 0.0 <= self.fim_rate <= 1.0:
            raise ValueError(f"fim_rate: must be in [0, 1], got {self.fim_rate}")


@dataclass
class EvalSection:
    humaneval_limit: int | None = option(None, "HumanEval problems in the loss (default: all 164)")
    heldout_max_files: int = option(200, "held-out files in the loss at most")
    heldout_tokens_per_file: int = option(1024, "the first this many tokens of each held-out file")
    heldout_max_tokens: int = option(50_000, "held-out tokens in all at most")
    batch_size: int = option(16, "windows per forward pass")
    passk_problems: int | None = option(None, "easy problems for pass@k (default: all of evals.EASY_FUNCTIONS)")
    passk_n: int = option(8, "samples per problem (0: no pass@k)")
    passk_ks: list[int] = option([1, 8], "the k of pass@k (each <= passk_n)")
    passk_temperature: float = option(0.8, "sampling temperature")
    passk_top_p: float = option(0.95, "nucleus sampling")
    passk_max_tokens: int = option(32, "tokens generated per sample")
    sandbox_workers: int = option(2, "sandbox runs at a time")

    def __post_init__(self) -> None:
        for name in ("heldout_max_files", "heldout_tokens_per_file", "heldout_max_tokens", "batch_size",
                     "passk_max_tokens", "sandbox_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.passk_n < 0:
            raise ValueError(f"passk_n: must be >= 0, got {self.passk_n}")
        if self.passk_n and (not self.passk_ks or any(not 1 <= k <= self.passk_n for k in self.passk_ks)):
            raise ValueError(f"passk_ks: each k must be in 1..passk_n ({self.passk_n}), got {self.passk_ks}")


@dataclass
class AblationConfig:
    run: AblationRunSection = field(default_factory=AblationRunSection)
    corpus: CorpusSection = field(default_factory=CorpusSection)
    curation: CurationSection = field(default_factory=CurationSection)
    oracle: OracleSection = field(default_factory=OracleSection)
    scorer: ScorerSection = field(default_factory=ScorerSection)
    arms: ArmsSection = field(default_factory=ArmsSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    eval: EvalSection = field(default_factory=EvalSection)


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> AblationConfig:
    """The experiment's config: a TOML file (None: all defaults) and `--section.key=value` overrides; ConfigError
    naming the key for a bad one (the model preset and overrides are checked here too)."""
    cfg = load_sections(AblationConfig, path, overrides)
    try:
        model_config(cfg.pretrain.preset, **cfg.pretrain.overrides)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"config section [pretrain]: preset / overrides: {error}") from None
    return cfg


# ------------------------------------------------------------------------------------------ layout
@dataclass(frozen=True)
class Layout:
    out: str

    @property
    def corpus(self) -> str:
        return os.path.join(self.out, "corpus")

    @property
    def curate(self) -> str:
        return os.path.join(self.out, "curate")

    def step(self, name: str) -> str:
        return os.path.join(self.curate, name)

    def arm_dataset(self, arm: str) -> str:
        return self.step("decontaminate") if arm == "a" else os.path.join(self.out, "arms", arm, "dataset")

    def arm_shards(self, arm: str) -> str:
        return os.path.join(self.out, "arms", arm, "shards")

    @property
    def tokenizer(self) -> str:
        return os.path.join(self.arm_shards("a"), TOKENIZER_FILE)

    def run(self, arm: str, seed: int) -> str:
        return os.path.join(self.out, "runs", f"{arm}-s{seed}")


def say(message: str) -> None:
    print(f"[ablation] {message}", flush=True)


def _device(cfg: AblationConfig) -> str:
    if cfg.run.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.run.device


# ------------------------------------------------------------------------------------------ curation
def pipeline_config(cfg: AblationConfig, layout: Layout, train_dir: str) -> dict[str, Any]:
    """The curation pipeline of the experiment (rules, both oracle runs, scorer, score) as a config dict."""
    base = cfg.scorer.checkpoint
    checkpoint = os.path.join(layout.run("a", cfg.pretrain.seeds[0]), "checkpoints") if base == "arm_a" else (base or None)
    device = None if cfg.run.device == "auto" else cfg.run.device
    oracle = {"in": "decontaminate", "seed": cfg.oracle.seed, "backend": cfg.oracle.backend,
              "backend_options": dict(cfg.oracle.backend_options)}
    steps = [
        # one directory input named "corpus": a row's id is a function of its corpus path (corpus.py)
        {"step": "ingest", "inputs": [{"path": train_dir, "kind": "dir", "repo": "corpus"}],
         "max_file_bytes": cfg.curation.max_file_bytes,
         "shard_bytes": cfg.curation.shard_bytes},
        {"step": "exact_dedup"},
        {"step": "near_dedup", "threshold": cfg.curation.near_dedup_threshold},
        {"step": "syntax", "timeout_s": cfg.curation.syntax_timeout_s},
        {"step": "decontaminate", "humaneval": True, "ngram": cfg.curation.decontaminate_ngram},
        {"step": "oracle", "n": cfg.oracle.n, **oracle},
        {"step": "oracle", "name": "oracle_all", "n": ORACLE_ALL, **oracle},
        {"step": "scorer_train", "ratings": "oracle", "checkpoint": checkpoint, "model": cfg.scorer.model,
         "tokenizer": None if checkpoint else layout.tokenizer, "device": device, "train": dict(cfg.scorer.train),
         "workers": 1},
        {"step": "score", "in": "decontaminate", "scorer": "scorer_train", "batch_size": cfg.scorer.batch_size,
         "device": device, "workers": 1},
    ]
    return {"out": layout.curate, "workers": cfg.run.workers, "steps": steps}


def forget_stale_scorer(cfg: AblationConfig, layout: Layout) -> None:
    """The scorer of "arm_a" starts from the run a-s<first seed>, whose folder keeps its name when its settings
    change: the scorer_train and score steps would then look finished. curate/scorer_base.json records which base
    run they were made from; when that changed, both are removed (and everything downstream follows their new
    fingerprints)."""
    marker = os.path.join(layout.curate, "scorer_base.json")
    if cfg.scorer.checkpoint == "arm_a":
        settings = run_settings(cfg, layout, "a", cfg.pretrain.seeds[0])
        base = {"run": layout.run("a", cfg.pretrain.seeds[0]),
                "settings_sha256": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()}
    else:
        base = {"checkpoint": cfg.scorer.checkpoint or None}
    if os.path.isfile(marker) and _read_json(marker) == base:
        return
    for step in ("scorer_train", "score"):
        if os.path.isdir(layout.step(step)) and os.path.isfile(os.path.join(layout.step(step), ds.STEP_FILE)):
            say(f"the scorer's base model changed: {layout.step(step)} is made again")
            shutil.rmtree(layout.step(step))
    _write_json(marker, base)


def tokenize_arm(cfg: AblationConfig, layout: Layout, arm: str) -> dict[str, Any]:
    """arms/<arm>/shards from the arm's dataset: arm (a) trains the shared tokenizer, the others use it."""
    options: dict[str, Any] = {"vocab_size": cfg.tokenizer.vocab_size, "tokenizer_sample_bytes": cfg.tokenizer.sample_bytes}
    if arm != "a":
        options["tokenizer"] = layout.tokenizer
    return run_step("tokenize", out=layout.arm_shards(arm), inputs={"datasets": [layout.arm_dataset(arm)]},
                    options=options, executor=ExecutorConfig(workers=cfg.run.workers), name=f"tokenize_{arm}")


# ------------------------------------------------------------------------------------------ runs
def eval_steps(cfg: AblationConfig) -> list[int]:
    every = cfg.pretrain.steps // cfg.pretrain.eval_points
    return [every * index for index in range(1, cfg.pretrain.eval_points + 1)]


def train_config(cfg: AblationConfig, layout: Layout, arm: str, seed: int) -> TrainConfig:
    p = cfg.pretrain
    tc = TrainConfig(
        run=RunSection(name=f"{arm}-s{seed}", out_dir=layout.run(arm, seed), seed=seed),
        model=ModelSection(preset=p.preset, overrides=dict(p.overrides)),
        data=DataSection(path=layout.arm_shards(arm), seq_len=p.seq_len, fim_rate=p.fim_rate, threads=1),
        train=TrainSection(steps=p.steps, batch_size=p.batch_size, micro_batch_size=p.micro_batch_size,
                           device=cfg.run.device, num_threads=p.num_threads),
        optimizer=OptimizerSection(lr=p.lr, weight_decay=p.weight_decay),
        schedule=ScheduleSection(kind=p.schedule, warmup_steps=p.warmup_steps, min_lr_ratio=p.min_lr_ratio),
        checkpoint=CheckpointSection(interval=p.steps // p.eval_points, keep=p.eval_points + 1, resume=True),
        logging=LoggingSection(tensorboard=False, progress_bar=False, plot=False),
    )
    validate(tc)
    return tc


@dataclass
class EvalContext:
    """What every run's evaluation shares: the tokenizer and the document sets, the pass@k problems."""

    tokenizer: Any
    sets: dict[str, list]
    problems: list


def run_settings(cfg: AblationConfig, layout: Layout, arm: str, seed: int) -> dict[str, Any]:
    """What a run's results are a function of: its training config, its data, the evaluation settings."""
    tc = train_config(cfg, layout, arm, seed).to_dict()
    tc["checkpoint"].pop("resume", None)
    with open(os.path.join(layout.arm_shards(arm), "manifest.json"), "rb") as file:
        data = hashlib.sha256(file.read()).hexdigest()
    return json.loads(json.dumps({"train": tc, "data_manifest_sha256": data, "eval": asdict(cfg.eval),
                                  "eval_steps": eval_steps(cfg), "device": _device(cfg)}))


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _write_json(path: str, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, default=str) + "\n")


def run_one(cfg: AblationConfig, layout: Layout, arm: str, seed: int, context: EvalContext) -> dict[str, Any]:
    """Train (or finish training) one arm and seed, evaluate its checkpoints; returns its result.json."""
    run_dir = layout.run(arm, seed)
    name = f"{arm}-s{seed}"
    settings = run_settings(cfg, layout, arm, seed)
    result_path, settings_path = os.path.join(run_dir, "result.json"), os.path.join(run_dir, "settings.json")
    if os.path.isfile(result_path):
        result = _read_json(result_path)
        if result.get("settings") == settings:
            say(f"run {name}: finished earlier ({result_path}); skipped")
            return result
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        if not os.path.isfile(settings_path):
            raise AblationError(f"{run_dir} is not empty and was not made by this experiment; choose another "
                                "run.out_dir or empty it")
        if _read_json(settings_path) != settings:
            say(f"run {name}: its settings changed since {run_dir} was made; starting it over")
            shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    _write_json(settings_path, settings)
    started = time.perf_counter()
    say(f"run {name}: pretraining {cfg.pretrain.steps} steps on arm ({arm}) {ARMS[arm]} -> {run_dir}")
    code = pretrain(train_config(cfg, layout, arm, seed))
    checkpoints = dict(ckpt.list_checkpoints(os.path.join(run_dir, "checkpoints")))
    if code != 0 or cfg.pretrain.steps not in checkpoints:
        raise AblationError(f"run {name}: training stopped before step {cfg.pretrain.steps} (exit {code}); rerun the "
                            f"same command to continue from {os.path.join(run_dir, 'checkpoints')}")
    train_seconds = time.perf_counter() - started
    evals = []
    device = _device(cfg)
    for step in eval_steps(cfg):
        cache = os.path.join(run_dir, "evals", f"step-{step:08d}.json")
        if os.path.isfile(cache):
            evals.append(_read_json(cache))
            continue
        if step not in checkpoints:
            raise AblationError(f"run {name}: checkpoint of step {step} is missing in {run_dir}/checkpoints and its "
                                f"evaluation was not saved; delete {run_dir} and rerun")
        tick = time.perf_counter()
        model, _ = ckpt.load_model(checkpoints[step], device, torch.float32)
        record = {"step": step, **checkpoint_losses(model, context.sets, seq_len=cfg.pretrain.seq_len,
                                                    batch_size=cfg.eval.batch_size)}
        if step == cfg.pretrain.steps and cfg.eval.passk_n:
            passk = pass_at_k_report(model, context.tokenizer, context.problems, n=cfg.eval.passk_n,
                                     ks=cfg.eval.passk_ks, temperature=cfg.eval.passk_temperature,
                                     top_p=cfg.eval.passk_top_p, max_tokens=cfg.eval.passk_max_tokens,
                                     workers=cfg.eval.sandbox_workers, seed=seed)
            record["passk"] = passk
            record.update({key: value for key, value in passk.items() if key.startswith("pass@")})
        record["seconds"] = round(time.perf_counter() - tick, 2)
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        _write_json(cache, record)
        evals.append(record)
        shown = ", ".join(f"{key} {record[key]:.4f}" for key in LOSS_METRICS if record.get(key) is not None)
        passk_text = "".join(f", {k} {v:.3f}" for k, v in record.items() if k.startswith("pass@"))
        say(f"run {name}: step {step}: {shown}{passk_text} ({record['seconds']:.1f} s)")
        del model
    metrics = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    train_loss = {int(r["step"]): float(r["loss"]) for r in metrics if not r.get("skipped") and r.get("loss") is not None}
    result = {"arm": arm, "seed": seed, "settings": settings, "evals": evals,
              "train_loss": sorted(train_loss.items()),
              "tokens_seen": cfg.pretrain.steps * cfg.pretrain.batch_size * cfg.pretrain.seq_len,
              "seconds": round(time.perf_counter() - started, 2), "train_seconds": round(train_seconds, 2)}
    _write_json(result_path, result)
    if not cfg.pretrain.keep_checkpoints:
        for step, path in checkpoints.items():
            if step != cfg.pretrain.steps:
                shutil.rmtree(path, ignore_errors=True)
    return result


# ------------------------------------------------------------------------------------------ summaries
def _kind_of_paths(corpus_dir: str) -> dict[str, str]:
    return {record["path"]: record["kind"] for record in read_records(os.path.join(corpus_dir, FILES_FILE))}


def arm_stats(cfg: AblationConfig, layout: Layout, arm: str, kinds: dict[str, str]) -> dict[str, Any]:
    manifest = _read_json(os.path.join(layout.arm_shards(arm), "manifest.json"))
    totals = manifest["totals"]
    budget = cfg.pretrain.steps * cfg.pretrain.batch_size * cfg.pretrain.seq_len
    dropped_kinds: dict[str, tuple[int, float]] = {}
    dropped = 0
    if arm != "a":
        dropped_paths = dataset_column(layout.arm_dataset(arm), "path", dropped=True)
        dropped = len(dropped_paths)
        all_kinds = Counter(kinds.get(path, "?") for path in dataset_column(layout.arm_dataset("a"), "path"))
        counts = Counter(kinds.get(path, "?") for path in dropped_paths)
        dropped_kinds = {kind: (count, count / all_kinds[kind]) for kind, count in counts.most_common()}
    return {"label": ARMS[arm], "documents": int(totals["documents"]), "tokens": int(totals["tokens"]),
            "epochs": budget / max(1, int(totals["tokens"])), "dropped": dropped, "dropped_kinds": dropped_kinds,
            "shards": layout.arm_shards(arm)}


def curation_summary(cfg: AblationConfig, layout: Layout) -> dict[str, Any]:
    rules = {}
    for step in RULE_STEPS:
        totals = (ds.success_record(layout.step(step)) or {}).get("totals", {})
        rules[step] = {"kept_rows": totals.get("kept_rows", 0), "dropped_rows": totals.get("dropped_rows", 0),
                       "drop_reasons": totals.get("drop_reasons", {})}
    ratings_all = dict(zip(dataset_ids(layout.step("oracle_all")), dataset_column(layout.step("oracle_all"), "rating")))
    scores_all = ratings_by_id(layout.step("oracle_all"))  # rating_score where present: what (c) and (d) rank by
    oracle_names = sorted({value for value in dataset_column(layout.step("oracle"), "oracle") if value})
    sampled = len(dataset_ids(layout.step("oracle")))
    scorer_success = ds.success_record(layout.step("scorer_train")) or {}
    summary: dict[str, Any] = {
        "rules": rules,
        "oracle": {"backend": cfg.oracle.backend, "names": oracle_names, "sampled": sampled,
                   "rated_all": len(ratings_all),
                   "mean_rating": float(np.mean(list(ratings_all.values()))) if ratings_all else None,
                   "histogram": dict(sorted(Counter(int(r) for r in ratings_all.values()).items()))},
        "scorer": {"base": _scorer_base(cfg), "metrics": scorer_success.get("metrics")},
    }
    if ds.is_finished(layout.step("score")):
        ids = dataset_ids(layout.step("score"))
        scores = dataset_column(layout.step("score"), "score")
        pairs = [(score, scores_all[row_id]) for row_id, score in zip(ids, scores) if row_id in scores_all]
        agreement: dict[str, Any] = {"files": len(pairs)}
        if len(pairs) > 2:
            x, y = np.asarray(pairs, dtype=np.float64).T
            if x.std() > 0 and y.std() > 0:
                agreement["spearman"] = float(stats.spearmanr(x, y).statistic)
                agreement["pearson"] = float(np.corrcoef(x, y)[0, 1])
            agreement["mae"] = float(np.mean(np.abs(x - y)))
        if ds.is_finished(layout.arm_dataset("c")) and ds.is_finished(layout.arm_dataset("d")):
            c = set(dataset_ids(layout.arm_dataset("c"), dropped=True))
            d = set(dataset_ids(layout.arm_dataset("d"), dropped=True))
            agreement["dropped_overlap"] = len(c & d) / len(c) if c else None
        summary["scorer"]["agreement"] = agreement
    return summary


def _redacted(config: dict[str, Any]) -> dict[str, Any]:
    """The config as results.json shows it: backend options that look like credentials are masked."""
    options = config["oracle"]["backend_options"]
    config["oracle"]["backend_options"] = {
        key: "***" if any(word in key.lower() for word in ("key", "token", "secret", "password")) else value
        for key, value in options.items()}
    return config


def _scorer_base(cfg: AblationConfig) -> str:
    if cfg.scorer.checkpoint == "arm_a":
        return f"the arm (a) model of seed {cfg.pretrain.seeds[0]} (pretrained on the unfiltered corpus)"
    return cfg.scorer.checkpoint or f"a fresh {cfg.scorer.model!r} model (no pretraining)"


def passk_note(runs: Sequence[dict[str, Any]], cfg: AblationConfig) -> dict[str, Any]:
    if not cfg.eval.passk_n:
        return {"note": "pass@k was not measured (eval.passk_n = 0)."}
    finals = [run["evals"][-1].get("passk") for run in runs if run.get("evals")]
    finals = [final for final in finals if final]
    solved = sum(final["solved"] for final in finals)
    problems = finals[0]["problems"] if finals else 0
    if finals and solved == 0:
        note = (f"No model solved any of the {problems} easy problems ({cfg.eval.passk_n} samples each, every arm and "
                f"seed): pass@k is 0 everywhere. The models are too small and too briefly trained to write even "
                f"one-line functions, so pass@k cannot tell the arms apart here; the losses above can.")
    else:
        note = (f"{solved} problem-solves over {len(finals)} runs ({problems} easy problems, {cfg.eval.passk_n} samples "
                f"each); per-arm pass@k is in the results table.")
    return {"note": note, "solved_total": solved}


def collect_results(cfg: AblationConfig, layout: Layout, runs: list[dict[str, Any]], *, command: str,
                    corpus: dict[str, Any], started: float, timing: dict[str, float]) -> dict[str, Any]:
    arms_done = [arm for arm in ARMS if os.path.isfile(os.path.join(layout.arm_shards(arm), "manifest.json"))]
    kinds = _kind_of_paths(layout.corpus)
    metrics = dict((key, label) for key, (label, _) in LOSS_METRICS.items())
    directions = dict(LOSS_METRICS)
    for k in (cfg.eval.passk_ks if cfg.eval.passk_n else []):
        metrics[f"pass@{k}"] = f"pass@{k} on the easy problems"
        directions[f"pass@{k}"] = (metrics[f"pass@{k}"], False)
    solved = any(run["evals"][-1].get(metric) for run in runs if run.get("evals")
                 for metric in directions if metric.startswith("pass@"))
    # pass@k that is 0 for every run compares nothing: those rows are left out (the report says why)
    comparisons = compare_arms(runs, {metric: value for metric, value in directions.items()
                                      if solved or not metric.startswith("pass@")})
    vocab_size = -(-load_tokenizer(layout.tokenizer).get_vocab_size() // 64) * 64  # as the trainer rounds it
    with torch.device("meta"):
        parameters = Transformer(model_config(cfg.pretrain.preset, **{**cfg.pretrain.overrides,
                                                                      "vocab_size": vocab_size})).num_params()
    return {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "command": command,
        "config": _redacted(asdict(cfg)),
        "setup": {"preset": cfg.pretrain.preset, "overrides": dict(cfg.pretrain.overrides),
                  "parameters": int(parameters), "steps": cfg.pretrain.steps,
                  "batch_size": cfg.pretrain.batch_size, "seq_len": cfg.pretrain.seq_len,
                  "token_budget": cfg.pretrain.steps * cfg.pretrain.batch_size * cfg.pretrain.seq_len,
                  "lr": cfg.pretrain.lr, "schedule": cfg.pretrain.schedule, "warmup_steps": cfg.pretrain.warmup_steps,
                  "fim_rate": cfg.pretrain.fim_rate, "seeds": list(cfg.pretrain.seeds),
                  "vocab_size": cfg.tokenizer.vocab_size, "drop_fraction": cfg.arms.drop_fraction,
                  "eval_steps": eval_steps(cfg), "device": _device(cfg)},
        "corpus": {key: corpus[key] for key in ("settings", "candidates", "splits", "skipped", "humaneval_matches")},
        "curation": curation_summary(cfg, layout),
        "arms": {arm: arm_stats(cfg, layout, arm, kinds) for arm in arms_done},
        "metrics": metrics,
        "summary": summarize_runs(runs, arms_done, list(metrics)),
        "curves": curves(runs, arms_done, list(LOSS_METRICS)),
        "comparisons": comparisons,
        "verdict": verdict(comparisons, ARMS),
        "passk": passk_note(runs, cfg),
        "runs": [{"arm": run["arm"], "seed": run["seed"], "final": {k: v for k, v in run["evals"][-1].items()
                                                                   if k != "passk"} if run.get("evals") else {},
                  "passk": run["evals"][-1].get("passk") if run.get("evals") else None,
                  "evals": [{k: v for k, v in record.items() if k != "passk"} for record in run.get("evals", [])],
                  "seconds": run.get("seconds"), "path": layout.run(run["arm"], run["seed"])} for run in runs],
        "progress": {"finished_runs": len(runs), "planned_runs": len(ARMS) * len(cfg.pretrain.seeds)},
        "timing": {**timing, "total_s": time.perf_counter() - started},
    }


# ------------------------------------------------------------------------------------------ the experiment
def run_ablation(cfg: AblationConfig, *, command: str = "") -> dict[str, Any]:
    """Everything of the module docstring; returns results.json's content."""
    started = time.perf_counter()
    timing: dict[str, float] = {}
    layout = Layout(os.path.abspath(cfg.run.out_dir))
    os.makedirs(layout.out, exist_ok=True)
    seeds = list(cfg.pretrain.seeds)
    say(f"{len(ARMS)} arms x {len(seeds)} seeds, {cfg.pretrain.steps} steps x {cfg.pretrain.batch_size} x "
        f"{cfg.pretrain.seq_len} tokens per run, drop fraction {cfg.arms.drop_fraction:.0%} -> {layout.out}")

    def phase(name: str, tick: float) -> None:
        timing[name] = round(timing.get(name, 0.0) + time.perf_counter() - tick, 2)

    tick = time.perf_counter()
    say("1/7 corpus")
    corpus = build_corpus(cfg.corpus, layout.corpus, log=print)
    phase("corpus_s", tick)

    tick = time.perf_counter()
    say("2/7 curation rules and oracle ratings")
    pipeline = pipeline_config(cfg, layout, corpus["train"])
    rules_and_oracle = [*RULE_STEPS, "oracle", "oracle_all"]
    run_pipeline(pipeline, only=rules_and_oracle)
    phase("curation_s", tick)

    tick = time.perf_counter()
    say("3/7 arm (a) shards and the shared tokenizer")
    tokenize_arm(cfg, layout, "a")
    phase("tokenize_s", tick)

    tokenizer = load_tokenizer(layout.tokenizer)
    heldout_texts = [record["text"] for record in read_records(corpus["heldout"])]
    context = EvalContext(tokenizer=tokenizer, problems=easy_problems(cfg.eval.passk_problems), sets={
        "humaneval": humaneval_documents(tokenizer, limit=cfg.eval.humaneval_limit),
        "heldout": heldout_documents(tokenizer, heldout_texts, max_files=cfg.eval.heldout_max_files,
                                     tokens_per_file=cfg.eval.heldout_tokens_per_file,
                                     max_tokens=cfg.eval.heldout_max_tokens)})
    say(f"eval sets: HumanEval {len(context.sets['humaneval'])} documents, held-out {len(context.sets['heldout'])} "
        f"files ({sum(len(d.ids) for d in context.sets['heldout']):,} tokens), pass@k on {len(context.problems)} "
        "easy problems")
    runs: dict[tuple[str, int], dict[str, Any]] = {}

    def train(arm: str, seed: int) -> None:
        tick = time.perf_counter()
        runs[(arm, seed)] = run_one(cfg, layout, arm, seed, context)
        phase("runs_s", tick)

    if cfg.scorer.checkpoint == "arm_a":
        say(f"4/7 the scorer's base model: arm (a), seed {seeds[0]}")
        train("a", seeds[0])
    tick = time.perf_counter()
    say("4/7 scorer: trained on the oracle's sample, then every file scored")
    forget_stale_scorer(cfg, layout)
    run_pipeline(pipeline, only=["scorer_train", "score"])
    phase("scorer_s", tick)

    tick = time.perf_counter()
    say("5/7 arms (b), (c), (d): datasets and shards")
    executor = ExecutorConfig(workers=cfg.run.workers)
    for arm in ARM_KEYS:
        build_arm(arm, scored_dir=layout.step("score"), out_dir=layout.arm_dataset(arm),
                  drop_fraction=cfg.arms.drop_fraction, seed=cfg.arms.seed,
                  ratings_dir=layout.step("oracle_all"), executor=executor)
        tokenize_arm(cfg, layout, arm)
    phase("arms_s", tick)
    if cfg.run.until == "arms":
        kinds = _kind_of_paths(layout.corpus)
        arms = {arm: arm_stats(cfg, layout, arm, kinds) for arm in ARMS}
        for arm, info in arms.items():
            say(f"({arm}) {info['label']}: {info['documents']:,} files, {info['tokens']:,} tokens, dropped "
                f"{info['dropped']:,} " + ", ".join(f"{kind} {count}" for kind, (count, _) in info["dropped_kinds"].items()))
        say(f"stopped after the arms (run.until = \"arms\") in {(time.perf_counter() - started) / 60:.1f} min: "
            f"{os.path.join(layout.out, 'arms')}")
        return {"arms": arms, "curation": curation_summary(cfg, layout), "timing": timing}

    results: dict[str, Any] = {}
    for index, seed in enumerate(seeds):
        say(f"6/7 runs of seed {seed} ({index + 1}/{len(seeds)})")
        for arm in ARMS:
            if (arm, seed) not in runs:
                train(arm, seed)
        ordered = [runs[key] for key in sorted(runs, key=lambda key: (key[1], key[0]))]
        results = collect_results(cfg, layout, ordered, command=command, corpus=corpus, started=started, timing=timing)
        paths = write_outputs(results, layout.out)
        say(f"7/7 report after seed {seed}: {paths['report.md']}")
    say(f"verdict: {results['verdict']}")
    for arm, entry in results["summary"].items():
        say(f"({arm}) {ARMS[arm]}: " + ", ".join(f"{metric} {value['mean']:.4f} ± {value['std']:.4f}"
                                                 for metric, value in entry.items() if value["mean"] is not None))
    say(f"done in {(time.perf_counter() - started) / 60:.1f} min: {layout.out}/report.md, results.json, curves.png")
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     epilog="Any config key: --section.key=value (e.g. --pretrain.steps=40 "
                                            "--oracle.backend=openai). See docs/experiments.md.")
    parser.add_argument("--config", metavar="TOML", help="the experiment's config (default: all defaults)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input or a run that must be continued (one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = build_parser().parse_known_args(argv)
    command = " ".join([PROG, *argv])

    def run() -> int:
        cfg = load_config(args.config, overrides)
        try:
            run_ablation(cfg, command=command)
        except CurateStateError as error:  # an output folder the pipeline cannot reuse: the user's to fix
            raise AblationError(str(error)) from None
        return 0

    return exit_on_user_error(PROG, run)


__all__ = ["AblationConfig", "AblationError", "Layout", "build_parser", "collect_results", "eval_steps",
           "load_config", "main", "pipeline_config", "run_ablation", "run_one", "run_settings", "train_config"]


if __name__ == "__main__":
    sys.exit(main())
