"""The training config (pretraining, continued pretraining, SFT): its sections, their value checks, and loading.

    cfg = load_config("configs/pretrain_1b.toml", ["--train.steps=100", "--lr=1e-4"])
    cfg.train.steps, cfg.optimizer.lr            # 100, 0.0001

A config has one table per section below ([run], [model], [data], [train], [optimizer], [schedule],
[parallel], [checkpoint], [logging]) and optionally `[[stages]]` (continued pretraining: the context grows in
stages; each stage overrides a few data/batch keys for its number of steps). Every key has a default, so a
file only names what it changes. Reading, overrides and type checks are the config system's (`seedcoder.config`);
`validate` adds the ranges, choices and consistency of training.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from seedcoder.config import ConfigError, load_sections, to_toml


# ------------------------------------------------------------------------------------------ sections
@dataclass
class RunSection:
    name: str = "run"
    out_dir: str = "runs/{name}"  # checkpoints, logs, plots; "{name}" is replaced by run.name
    seed: int = 1234  # model init and every other seed not given explicitly


@dataclass
class ModelSection:
    preset: str = "debug"  # a name in seedcoder.model.PRESETS
    vocab_size: int | None = None  # default: the dataset's tokenizer vocabulary (rounded up to a multiple of 64)
    rope_theta: float | None = None  # default: the preset's
    max_seq_len: int | None = None  # default: the preset's
    overrides: dict[str, Any] = field(default_factory=dict)  # any other ModelConfig field: {n_layers = 8}
    kernels: str = "triton"  # RMSNorm and rotary on the GPU: "triton", or "cuda" (the CUDA C++ extension seedcoder._cuda)


@dataclass
class DataSection:
    # a dataset directory (manifest.json + shards), e.g. from `seedcoder data build`, or a list of them made with one
    # tokenizer (e.g. curated files + the high-quality set; `mixture` weighs them by source: "hq", "repo", ...)
    path: str | list[str] = ""
    seq_len: int = 2048
    mode: str = "concat"  # "concat" or "best_fit" (see seedcoder.data.loader)
    fim_rate: float = 0.5  # Seed-Coder: 0.5 in pretraining, 0.1 in continued pretraining
    fim_token_level: bool = False
    mixture: dict[str, float] = field(default_factory=dict)
    min_score: float | None = None
    drop_bottom: float = 0.0
    score_temperature: float | None = None
    seed: int | None = None  # default: run.seed
    threads: int = 2  # loader worker threads per rank
    prefetch: int = 4  # batches built ahead per rank


@dataclass
class TrainSection:
    steps: int = 1000  # optimizer steps (with [[stages]]: their sum, may be left at the default)
    batch_size: int = 8  # rows (of data.seq_len tokens) per optimizer step, over all ranks
    micro_batch_size: int = 1  # rows per rank per forward/backward; accumulation = batch_size / (micro * ranks)
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    max_bad_steps: int = 5  # this many non-finite steps in a row stop the run (with a checkpoint)
    device: str = "auto"  # "auto" (cuda when available), "cuda" or "cpu"
    num_threads: int | None = None  # torch intra-op threads per rank on CPU (default: torch's, 1 under torchrun)


@dataclass
class OptimizerSection:
    lr: float = 3e-4  # peak learning rate
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1  # on matrices (embeddings included); norms are not decayed
    fused: bool | None = None  # default: fused AdamW on CUDA, foreach elsewhere


@dataclass
class ScheduleSection:
    kind: str = "cosine"  # "constant", "cosine", "wsd" (warmup-stable-decay) or "step"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine / wsd end at lr * min_lr_ratio
    decay_fraction: float = 0.2  # wsd: the last fraction of the steps decays linearly
    milestones: list[float] = field(default_factory=list)  # step: fractions of train.steps where the lr changes
    factors: list[float] = field(default_factory=list)  # step: lr * factors[i] from milestones[i] on


@dataclass
class ParallelSection:
    activation_checkpoint: str = "none"  # "none", "selective" (keep matmul outputs) or "full" (per block)
    compile: bool = False  # torch.compile each block
    param_dtype: str = "auto"  # compute dtype of parameters: "auto" (bfloat16 on CUDA, float32 on CPU), "bfloat16", "float32"
    reduce_dtype: str = "float32"  # gradient reduce-scatter dtype
    # The device mesh: ranks = dp_replicate x dp_shard x cp x tp (seedcoder.parallelize.build_mesh)
    dp_replicate: int = 1  # HSDP: replicas of the sharded model (usually across nodes); gradients all-reduced over them
    dp_shard: int = -1  # FSDP2 sharding degree; -1: the ranks the other dimensions leave
    cp: int = 1  # context parallel: each row's sequence split over cp ranks (ring attention); seq_len % (2 cp) == 0
    tp: int = 1  # tensor parallel (column/row-wise attention and MLP, sequence-parallel norms); within a node


@dataclass
class CheckpointSection:
    dir: str = ""  # default: {run.out_dir}/checkpoints
    interval: int = 1000  # save every this many steps (0: only at the end); also on stop / interrupt
    keep: int = 3  # complete checkpoints kept (oldest removed first)
    resume: bool = False  # continue from the latest complete checkpoint in dir (also: --resume)
    init_from: str = ""  # model-only init from a checkpoint dir (ours, or a converted HF model) when not resuming


@dataclass
class LoggingSection:
    jsonl: bool = True  # {out_dir}/metrics.jsonl, one record per step
    tensorboard: bool = True  # {out_dir}/tensorboard (needs the tensorboard package; skipped with a warning)
    progress_bar: bool = True  # tqdm, on a terminal only
    plot: bool = True  # {out_dir}/loss.png at the end (needs matplotlib)
    peak_tflops: float | None = None  # dense bf16 peak per device for MFU; default: from the detected GPU


@dataclass
class StageSection:
    """One stage of a staged run: its steps, and the data / batch keys it changes (the rest as configured)."""

    name: str = ""
    steps: int = 0
    seq_len: int | None = None
    batch_size: int | None = None
    micro_batch_size: int | None = None
    fim_rate: float | None = None
    data_path: str | list[str] | None = None


@dataclass
class TrainConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    stages: list[StageSection] = field(default_factory=list)

    @property
    def out_dir(self) -> str:
        return self.run.out_dir.replace("{name}", self.run.name)

    @property
    def checkpoint_dir(self) -> str:
        return self.checkpoint.dir or os.path.join(self.out_dir, "checkpoints")

    def resolved_stages(self) -> list[StageSection]:
        """The stages with every optional field filled from [data] / [train]; one stage when none are configured."""
        stages = self.stages or [StageSection(name="main", steps=self.train.steps)]
        filled = []
        for index, stage in enumerate(stages):
            def pick(value, default):
                return default if value is None else value

            filled.append(
                StageSection(
                    name=stage.name or f"stage{index}",
                    steps=stage.steps,
                    seq_len=pick(stage.seq_len, self.data.seq_len),
                    batch_size=pick(stage.batch_size, self.train.batch_size),
                    micro_batch_size=pick(stage.micro_batch_size, self.train.micro_batch_size),
                    fim_rate=pick(stage.fim_rate, self.data.fim_rate),
                    data_path=pick(stage.data_path, self.data.path),
                )
            )
        return filled

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as TOML that `load_config` reads back to an equal config (None values are left out)."""
        return to_toml(self)


# The allowed values of string keys that name a choice.
CHOICES = {
    ("model", "kernels"): ("triton", "cuda"),
    ("data", "mode"): ("concat", "best_fit"),
    ("train", "device"): ("auto", "cuda", "cpu"),
    ("schedule", "kind"): ("constant", "cosine", "wsd", "step"),
    ("parallel", "activation_checkpoint"): ("none", "selective", "full"),
    ("parallel", "param_dtype"): ("auto", "bfloat16", "float32"),
    ("parallel", "reduce_dtype"): ("bfloat16", "float32"),
}


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a training TOML config (None: all defaults), apply `--key=value` overrides, validate. Raises ConfigError."""
    cfg = load_sections(TrainConfig, path, overrides)
    validate(cfg)
    return cfg


# ------------------------------------------------------------------------------------------ validation
def validate(cfg: TrainConfig) -> None:
    """Value checks beyond types: ranges, choices, consistency. Raises ConfigError naming the key."""

    def fail(key: str, problem: str) -> None:
        raise ConfigError(f"config key {key!r}: {problem}")

    for (section, name), choices in CHOICES.items():
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            fail(f"{section}.{name}", f"expected one of {', '.join(map(repr, choices))}, got {value!r}")

    def positive(key: str, value: float | None, *, allow_zero: bool = False, optional: bool = False) -> None:
        if value is None and optional:
            return
        if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            fail(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

    if not cfg.run.name or "/" in cfg.run.name:
        fail("run.name", f"must be a non-empty name without '/', got {cfg.run.name!r}")
    if not cfg.run.out_dir:
        fail("run.out_dir", "must not be empty")
    from seedcoder.model import PRESETS, ModelConfig  # here: the model's own field list is the schema of model.overrides

    if cfg.model.preset not in PRESETS:
        fail("model.preset", f"unknown preset {cfg.model.preset!r} (presets: {', '.join(PRESETS)})")
    model_fields = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in cfg.model.overrides:
        if key in ("vocab_size", "rope_theta", "max_seq_len"):
            fail(f"model.overrides.{key}", f"set model.{key} instead")
        if key not in model_fields:
            close = difflib.get_close_matches(key, model_fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"fields: {', '.join(model_fields)}"
            fail(f"model.overrides.{key}", f"ModelConfig has no field {key!r} ({hint})")
    positive("model.vocab_size", cfg.model.vocab_size, optional=True)
    positive("model.rope_theta", cfg.model.rope_theta, optional=True)
    positive("model.max_seq_len", cfg.model.max_seq_len, optional=True)
    positive("data.seq_len", cfg.data.seq_len)
    if not 0.0 <= cfg.data.fim_rate <= 1.0:
        fail("data.fim_rate", f"must be in [0, 1], got {cfg.data.fim_rate}")
    if not 0.0 <= cfg.data.drop_bottom < 1.0:
        fail("data.drop_bottom", f"must be in [0, 1), got {cfg.data.drop_bottom}")
    positive("data.score_temperature", cfg.data.score_temperature, optional=True)
    positive("data.threads", cfg.data.threads)
    positive("data.prefetch", cfg.data.prefetch)
    for key, weight in cfg.data.mixture.items():
        if not math.isfinite(weight) or weight < 0:
            fail(f"data.mixture.{key}", f"weights must be finite and >= 0, got {weight}")
    positive("parallel.dp_replicate", cfg.parallel.dp_replicate)
    positive("parallel.tp", cfg.parallel.tp)
    positive("parallel.cp", cfg.parallel.cp)
    if cfg.parallel.dp_shard != -1 and cfg.parallel.dp_shard < 1:
        fail("parallel.dp_shard", f"must be >= 1, or -1 for the ranks the other dimensions leave, got {cfg.parallel.dp_shard}")
    positive("train.steps", cfg.train.steps)
    positive("train.batch_size", cfg.train.batch_size)
    positive("train.micro_batch_size", cfg.train.micro_batch_size)
    if cfg.train.batch_size % cfg.train.micro_batch_size:
        fail("train.batch_size", f"{cfg.train.batch_size} is not a multiple of train.micro_batch_size "
             f"({cfg.train.micro_batch_size})")
    positive("train.grad_clip", cfg.train.grad_clip, allow_zero=True)
    positive("train.max_bad_steps", cfg.train.max_bad_steps)
    positive("train.num_threads", cfg.train.num_threads, optional=True)
    positive("optimizer.lr", cfg.optimizer.lr)
    if len(cfg.optimizer.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in cfg.optimizer.betas):
        fail("optimizer.betas", f"expected two numbers in [0, 1), got {cfg.optimizer.betas}")
    positive("optimizer.eps", cfg.optimizer.eps)
    positive("optimizer.weight_decay", cfg.optimizer.weight_decay, allow_zero=True)
    positive("schedule.warmup_steps", cfg.schedule.warmup_steps, allow_zero=True)
    if not 0.0 <= cfg.schedule.min_lr_ratio <= 1.0:
        fail("schedule.min_lr_ratio", f"must be in [0, 1], got {cfg.schedule.min_lr_ratio}")
    if not 0.0 < cfg.schedule.decay_fraction <= 1.0:
        fail("schedule.decay_fraction", f"must be in (0, 1], got {cfg.schedule.decay_fraction}")
    milestones, factors = cfg.schedule.milestones, cfg.schedule.factors
    if len(milestones) != len(factors):
        fail("schedule.factors", f"needs one factor per milestone: {len(milestones)} milestones, {len(factors)} factors")
    if any(not 0.0 < m < 1.0 for m in milestones) or any(b <= a for a, b in zip(milestones, milestones[1:])):
        fail("schedule.milestones", f"must be increasing fractions of the steps in (0, 1), got {milestones}")
    if any(not (math.isfinite(f) and f > 0) for f in factors):
        fail("schedule.factors", f"must be positive numbers, got {factors}")
    if cfg.schedule.kind == "step" and not milestones:
        fail("schedule.milestones", "schedule.kind 'step' needs milestones (and factors)")
    positive("checkpoint.interval", cfg.checkpoint.interval, allow_zero=True)
    positive("checkpoint.keep", cfg.checkpoint.keep)
    positive("logging.peak_tflops", cfg.logging.peak_tflops, optional=True)
    if cfg.stages:
        for index, stage in enumerate(cfg.stages):
            positive(f"stages[{index}].steps", stage.steps)
            positive(f"stages[{index}].seq_len", stage.seq_len, optional=True)
            positive(f"stages[{index}].batch_size", stage.batch_size, optional=True)
            positive(f"stages[{index}].micro_batch_size", stage.micro_batch_size, optional=True)
            if stage.fim_rate is not None and not 0.0 <= stage.fim_rate <= 1.0:
                fail(f"stages[{index}].fim_rate", f"must be in [0, 1], got {stage.fim_rate}")
        total = sum(stage.steps for stage in cfg.stages)
        default_steps = TrainSection().steps
        if cfg.train.steps not in (total, default_steps):
            fail("train.steps", f"is {cfg.train.steps} but the [[stages]] add up to {total} steps (leave train.steps out)")
        cfg.train.steps = total
        for index, stage in enumerate(cfg.resolved_stages()):
            if stage.batch_size % stage.micro_batch_size:
                fail(f"stages[{index}].batch_size", f"{stage.batch_size} is not a multiple of its micro_batch_size "
                     f"({stage.micro_batch_size})")


__all__ = [
    "CHOICES",
    "CheckpointSection",
    "DataSection",
    "LoggingSection",
    "ModelSection",
    "OptimizerSection",
    "ParallelSection",
    "RunSection",
    "ScheduleSection",
    "StageSection",
    "TrainConfig",
    "TrainSection",
    "load_config",
    "validate",
]
