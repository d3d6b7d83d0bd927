"""Training entry point. Every stage is a subcommand in STAGES: `pretrain` (pretraining and long-context continued
pretraining) and `sft` (the same loop on chat shards with an assistant-only loss mask, `seedcoder.posttrain.sft`);
the scorer trains in `seedcoder.curate.scorer_train`.

    torchrun --nproc_per_node=8 -m seedcoder.train pretrain --config configs/pretrain_1b.toml [--key=value ...] [--resume]
    python -m seedcoder.train pretrain --config configs/pretrain_tiny_demo.toml      # one process, no torchrun needed

The same code runs on CPU (gloo) and GPU (nccl), on one machine or many (torchrun's rendezvous; see README).
A pretraining run, top to bottom (`pretrain`):

  1. processes: one per device; the device mesh of [parallel] (dp_replicate x dp_shard x tp, see
     `seedcoder.parallelize`: data-parallel ranks read different rows, the tp ranks of a group the same rows).
     Under torchrun every rank dies with the agent that started it (`die_with_launcher`), so killing torchrun,
     even with SIGKILL, leaves no rank behind.
  2. model: built on the meta device (no memory), sharded with FSDP2 per block (`seedcoder.parallelize`),
     materialized on the device and initialized (`init_weights(seed)`: the same weights for any number of ranks),
     or its weights loaded from `checkpoint.init_from` (continued pretraining from a pretraining checkpoint; a
     checkpoint folder, a checkpoints root or a run folder, by the rule of every stage: `resolve_init_from`).
  3. optimizer: AdamW (fused on CUDA), weight decay on matrices only (`seedcoder.optim`); the LR schedule
     (`seedcoder.lr_schedule`).
  4. resume: with `--resume`, the newest complete checkpoint restores model, optimizer, step, stage, the data
     loader's position and RNG; any number of ranks (DCP reshards). A damaged one (a truncated or missing file)
     is skipped with a warning naming it and the problem, for the newest intact one (`checkpoint.resume_latest`).
  5. steps: per stage (`[[stages]]`: the context grows 8K -> 32K in continued pretraining), a `ShardLoader` feeds
     `micro_batch_size` rows per rank per micro-batch; `batch_size / (micro_batch_size * ranks)` micro-batches
     are accumulated. The loss is the mean over every non-masked token of the global batch: each micro-batch's
     summed loss is divided by the global count of loss tokens (all-reduced once per step, before the first
     backward, from the batches already fetched), and gradients are summed over ranks. One host sync per step
     (loss, grad norm, the stop flag) decides the update (`seedcoder.optim.OptimizerStep`, the update of every
     stage): a non-finite loss or grad norm skips it with a warning, `train.max_bad_steps` in a row stop the run
     with a checkpoint (exit 1).
  6. checkpoints every `checkpoint.interval` steps, at a stage's end, at the end, and when SIGTERM/SIGINT asks
     the run to stop (preemption: every rank finishes the step, saves, exits 0; resume with `--resume`).
  7. logs: one line per step, metrics.jsonl, TensorBoard, and loss.png at the end (`seedcoder.metrics`).

Bad input (a config key, a damaged shard or checkpoint) ends the run with one line on stderr from rank 0 and exit
code 2 (`seedcoder.errors`); a traceback means a bug of ours.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from seedcoder import checkpoint as ckpt
from seedcoder.config import ConfigError
from seedcoder.data.loader import IGNORE_INDEX, ShardLoader
from seedcoder.data.manifest import load_manifest
from seedcoder.errors import exit_on_user_error
from seedcoder.fileio import atomic_write_text
from seedcoder.kernels._cuda_ext import cuda_ops
from seedcoder.lr_schedule import LRSchedule
from seedcoder.metrics import MetricsLogger, plot_loss_curve
from seedcoder.model import ModelConfig, Transformer, check_cu_seqlens, model_config
from seedcoder.optim import OptimizerStep, build_optimizer
from seedcoder.parallelize import (
    MeshCoordinates,
    build_mesh,
    context_parallel_batch,
    describe,
    mesh_coordinates,
    mesh_shape,
    parallelize,
    reduce_replicated_gradients,
)
from seedcoder.posttrain.sft import sft
from seedcoder.processes import die_with_parent, exit_process, init_process_group
from seedcoder.train_config import ParallelSection, StageSection, TrainConfig, load_config

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
EXIT_BAD_STEPS = 1
_LAUNCHER_PID = os.getppid()  # the process that started this one, as early as this module can tell


# ------------------------------------------------------------------------------------------ processes
@dataclass
class Distributed:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    mesh: DeviceMesh
    where: MeshCoordinates = field(default_factory=MeshCoordinates)  # which rows / sequence shard this rank reads

    @property
    def dp_rank(self) -> int:
        return self.where.dp_rank

    @property
    def dp_size(self) -> int:
        return self.where.dp_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_launcher() -> None:
    """Under torchrun, have this rank die with the torchrun agent that started it, however the agent dies (kill -9
    included): the agent starts every rank in a session of its own, so nothing else would reach the ranks, and they
    would train on as orphans. (An agent that dies during this interpreter's first imports, before this module
    recorded its parent, is not caught.)"""
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a plain process keeps running when its shell goes away
        die_with_parent(_LAUNCHER_PID, "seedcoder.train: the torchrun agent")


def init_distributed(device_kind: str, parallel: ParallelSection | None = None) -> Distributed:
    """One process group over every rank (torchrun's environment; a 1-rank group when run without torchrun) and the
    device mesh of `parallel` (all data parallel when None)."""
    die_with_launcher()
    if "RANK" not in os.environ:  # plain `python -m seedcoder.train`: a group of one, same code path
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    rank, local_rank, world_size = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    use_cuda = device_kind == "cuda" or (device_kind == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("config key 'train.device': 'cuda' but no CUDA device is available")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        init_process_group("gloo")
    parallel = parallel or ParallelSection()
    try:
        shape = mesh_shape(world_size, dp_replicate=parallel.dp_replicate, dp_shard=parallel.dp_shard, cp=parallel.cp,
                           tp=parallel.tp)
    except ValueError as error:
        dist.destroy_process_group()
        raise ConfigError(f"config section [parallel] (dp_replicate, dp_shard, cp, tp): {error}") from None
    mesh = build_mesh(device.type, world_size, dp_replicate=shape[0], dp_shard=shape[1], cp=shape[2], tp=shape[3])
    return Distributed(rank, local_rank, world_size, device, mesh, mesh_coordinates(mesh))


_STOP_REQUESTED = False


def _request_stop(signum, frame) -> None:
    """SIGTERM / SIGINT: finish the step, checkpoint, exit 0. (torchrun forwards its signal to the workers and
    kills them 30 s later; SIGKILL stops at once and the run resumes from the last complete checkpoint.)"""
    global _STOP_REQUESTED
    _STOP_REQUESTED = True


def _describe_mesh(mesh: DeviceMesh) -> str:
    names = mesh.mesh_dim_names or ("dp",)
    return " x ".join(f"{name} {size}" for name, size in zip(names, mesh.shape))


# ------------------------------------------------------------------------------------------ building blocks
def dataset_vocab_size(data_path: str | list[str]) -> int:
    """The vocabulary of the tokenizer the dataset (or the largest of a list of datasets) was made with."""
    if isinstance(data_path, list):
        return max(dataset_vocab_size(path) for path in data_path)
    try:
        manifest = load_manifest(data_path, check="none")
    except Exception as error:
        raise ConfigError(f"config key 'data.path': cannot read a dataset at {data_path!r}: {error}") from None
    return int(manifest["tokenizer"]["vocab_size"])


def build_model_config(cfg: TrainConfig) -> ModelConfig:
    """The ModelConfig of the run: the preset, the explicit [model] keys, then model.overrides."""
    stages = cfg.resolved_stages()
    data_vocab = max(dataset_vocab_size(stage.data_path) for stage in stages if stage.data_path) if any(
        stage.data_path for stage in stages) else None
    vocab_size = cfg.model.vocab_size
    if vocab_size is None:
        if data_vocab is None:
            raise ConfigError("config key 'data.path' is not set (and model.vocab_size is not given)")
        vocab_size = -(-data_vocab // 64) * 64  # a multiple of 64: friendlier matmul shapes
    elif data_vocab is not None and vocab_size < data_vocab:
        raise ConfigError(f"config key 'model.vocab_size': {vocab_size} is smaller than the dataset tokenizer's {data_vocab}")
    explicit = {"vocab_size": vocab_size}
    if cfg.model.rope_theta is not None:
        explicit["rope_theta"] = cfg.model.rope_theta
    if cfg.model.max_seq_len is not None:
        explicit["max_seq_len"] = cfg.model.max_seq_len
    try:
        model_cfg = model_config(cfg.model.preset, **{**cfg.model.overrides, **explicit})
    except ValueError as error:
        raise ConfigError(f"config section [model]: {error}") from None
    for index, stage in enumerate(stages):
        if stage.seq_len > model_cfg.max_seq_len:
            key = f"stages[{index}].seq_len" if cfg.stages else "data.seq_len"
            raise ConfigError(f"config key {key!r}: {stage.seq_len} exceeds the model's max_seq_len {model_cfg.max_seq_len} "
                              "(set model.max_seq_len)")
    return model_cfg


def resolved_param_dtype(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.parallel.param_dtype == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return cfg.parallel.param_dtype


def build_model(cfg: TrainConfig, model_cfg: ModelConfig, dist_env: Distributed) -> Transformer:
    """Construct, shard (FSDP2 + AC + compile) and initialize the model on this rank's device."""
    param_dtype = resolved_param_dtype(cfg, dist_env.device)
    if cfg.model.kernels == "cuda" and dist_env.device.type == "cuda":
        try:
            cuda_ops()  # loads seedcoder._cuda, or says how to build it
        except RuntimeError as error:
            raise ConfigError(f"config key 'model.kernels': {error}") from None
    with torch.device("meta"):  # built without memory, sharded, then materialized: no rank ever holds the whole model
        model = Transformer(model_cfg, kernels=cfg.model.kernels)
    try:
        parallelize(
            model,
            dist_env.mesh,
            param_dtype=DTYPES[param_dtype],
            reduce_dtype=DTYPES[cfg.parallel.reduce_dtype],
            activation_checkpoint=cfg.parallel.activation_checkpoint,
            compile=cfg.parallel.compile,
        )
    except ValueError as error:  # e.g. a tp size that does not divide the heads
        raise ConfigError(f"config key 'parallel.tp': {error}") from None
    model.to_empty(device=dist_env.device)
    model.init_weights(cfg.run.seed)  # every parameter drawn whole and sliced: identical for any world size
    return model


def build_loader(cfg: TrainConfig, stage: StageSection, stage_index: int, dist_env: Distributed) -> ShardLoader:
    if not stage.data_path:
        raise ConfigError("config key 'data.path' is not set: the dataset directory to train on")
    seed = (cfg.data.seed if cfg.data.seed is not None else cfg.run.seed) + stage_index  # a stage sees a fresh order
    try:
        return ShardLoader(
            stage.data_path,
            seq_len=stage.seq_len,
            batch_size=stage.micro_batch_size,
            mode=cfg.data.mode,
            seed=seed,
            mixture=cfg.data.mixture or None,
            min_score=cfg.data.min_score,
            drop_bottom=cfg.data.drop_bottom,
            score_temperature=cfg.data.score_temperature,
            fim_rate=stage.fim_rate,
            fim_token_level=cfg.data.fim_token_level,
            rank=dist_env.dp_rank,
            world_size=dist_env.dp_size,
            threads=cfg.data.threads,
            prefetch=cfg.data.prefetch,
        )
    except (OSError, ValueError) as error:
        raise ConfigError(f"config key 'data.path' ({stage.data_path}): {error}") from None


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    # the document boundaries are checked here, on the host: on the GPU the check would cost a sync every step
    check_cu_seqlens(batch["cu_seqlens"], *batch["input_ids"].shape, max_seqlen=int(batch["max_seqlen"]))
    return {
        "input_ids": batch["input_ids"].to(device, non_blocking=True),
        "labels": batch["labels"].to(device, non_blocking=True),
        "position_ids": batch["position_ids"].to(device, non_blocking=True),
        "cu_seqlens": batch["cu_seqlens"].to(device, non_blocking=True),
        "max_seqlen": int(batch["max_seqlen"]),
    }


def _stage_bounds(stages: Sequence[StageSection]) -> list[tuple[int, int]]:
    """[(first step, last step)] of each stage (steps are 1-based and global)."""
    bounds, start = [], 0
    for stage in stages:
        bounds.append((start + 1, start + stage.steps))
        start += stage.steps
    return bounds


# ------------------------------------------------------------------------------------------ pretraining
def resolve_init_from(cfg: TrainConfig) -> None:
    """Resolve checkpoint.init_from in place by the one rule of every stage (seedcoder.checkpoint.resolve_dcp_checkpoint:
    a checkpoint folder, a checkpoints root or a run folder: its newest complete checkpoint); a ConfigError naming the
    key and the path otherwise. The resolved path is the one config.toml records."""
    if cfg.checkpoint.init_from:
        try:
            cfg.checkpoint.init_from = ckpt.resolve_dcp_checkpoint(cfg.checkpoint.init_from)
        except ckpt.CheckpointError as error:
            raise ConfigError(f"config key 'checkpoint.init_from': {error}") from None


def pretrain(cfg: TrainConfig) -> int:
    resolve_init_from(cfg)  # before any process group: a bad path is one line, not a failure on every rank
    dist_env = init_distributed(cfg.train.device, cfg.parallel)
    try:
        return _pretrain(cfg, dist_env)
    finally:
        dist.destroy_process_group()


def _pretrain(cfg: TrainConfig, dist_env: Distributed) -> int:
    global _STOP_REQUESTED
    _STOP_REQUESTED = False
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.run.seed)
    main = dist_env.is_main
    say = (lambda message: print(message, flush=True)) if main else (lambda message: None)
    out_dir, ckpt_dir = cfg.out_dir, cfg.checkpoint_dir
    stages = cfg.resolved_stages()
    bounds = _stage_bounds(stages)
    total_steps = cfg.train.steps
    for index, stage in enumerate(stages):
        cp, tp = dist_env.where.cp_size, dist_env.where.tp_size
        if stage.seq_len % (2 * cp) or (stage.seq_len // cp) % tp:
            key = f"stages[{index}].seq_len" if cfg.stages else "data.seq_len"
            raise ConfigError(f"config key {key!r}: {stage.seq_len} tokens cannot be split into 2 x parallel.cp {cp} "
                              f"zig-zag chunks, then parallel.tp {tp} sequence slices")
        if stage.batch_size % (stage.micro_batch_size * dist_env.dp_size):
            key = f"stages[{index}].batch_size" if cfg.stages else "train.batch_size"
            raise ConfigError(f"config key {key!r}: {stage.batch_size} rows is not a multiple of micro_batch_size "
                              f"{stage.micro_batch_size} x {dist_env.dp_size} data-parallel ranks")
    if main:
        os.makedirs(out_dir, exist_ok=True)
        for name in ckpt.remove_incomplete(ckpt_dir):
            say(f"removed an incomplete checkpoint: {os.path.join(ckpt_dir, name)}")
        text = cfg.to_toml()
        atomic_write_text(os.path.join(out_dir, "config.toml"), text)

    # -- model, optimizer, schedule
    model_cfg = build_model_config(cfg)
    model = build_model(cfg, model_cfg, dist_env)
    optimizer = build_optimizer(model, cfg.optimizer, dist_env.device)
    schedule = LRSchedule.from_config(cfg.schedule, lr=cfg.optimizer.lr, total_steps=total_steps)
    update = OptimizerStep(optimizer, model, grad_clip=cfg.train.grad_clip, schedule=schedule,
                           max_bad_steps=cfg.train.max_bad_steps,
                           warn=lambda message: logger.print(message))  # the logger is built below

    # -- where to start: a checkpoint of this run, a model to start from, or step 0
    step, stage_of_loader, loader_state = 0, -1, None
    counters = {"tokens_seen": 0, "elapsed_s": 0.0}
    resume_path, state = None, None
    if cfg.checkpoint.resume:  # the newest intact checkpoint; damaged newer ones are skipped with a warning
        resume_path, state = ckpt.resume_latest(ckpt_dir, model=model, optimizer=optimizer,
                                                model_config=model_cfg.to_dict()) or (None, None)
        if resume_path is None:
            say(f"--resume: no complete checkpoint in {ckpt_dir}; starting at step 0")
    if resume_path is not None:
        step, stage_of_loader, loader_state = state["step"], state["stage"], state["loader"]
        counters.update({key: state[key] for key in counters if key in state})
        update.load_state_dict(state)
        say(f"resumed from {resume_path} (step {step}, written by {state['world_size']} rank(s), now {dist_env.world_size})")
    elif cfg.checkpoint.init_from:
        ckpt.load_model_only(cfg.checkpoint.init_from, model)
        say(f"model weights from {cfg.checkpoint.init_from}")

    say(f"model {cfg.model.preset}: {model.num_params():,} parameters ({model.num_params(exclude_embedding=True):,} "
        f"without the embedding), {model_cfg.n_layers} blocks [{describe(model)}]")
    say(f"{dist_env.world_size} rank(s) on {dist_env.device.type}, mesh {_describe_mesh(dist_env.mesh)}, "
        f"compute in {resolved_param_dtype(cfg, dist_env.device)}, "
        f"activation checkpointing {cfg.parallel.activation_checkpoint}, compile {cfg.parallel.compile}; out {out_dir}")

    logger = MetricsLogger(
        out_dir,
        total_steps=total_steps,
        start_step=step,
        device=dist_env.device,
        world_size=dist_env.world_size,
        flops_per_token=model.flops_per_token(stages[0].seq_len),
        peak_tflops=cfg.logging.peak_tflops,
        jsonl=cfg.logging.jsonl,
        tensorboard=cfg.logging.tensorboard,
        progress_bar=cfg.logging.progress_bar,
        enabled=main,
    )
    previous_handlers = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    started = time.perf_counter()
    elapsed_before = counters["elapsed_s"]
    loader: ShardLoader | None = None
    stage_index = -1
    last_saved = step if resume_path is not None else -1

    def save(reason: str) -> None:
        nonlocal last_saved
        if last_saved == step:
            return
        train_state = {
            "stage": stage_index,
            "stage_name": stages[stage_index].name if stage_index >= 0 else None,
            "loader": loader.state_dict() if loader is not None else None,
            "schedule": {**schedule.state_dict(), "step": step},
            **counters,
            **update.state_dict(),
            "elapsed_s": elapsed_before + time.perf_counter() - started,
            "config": cfg.to_dict(),
        }
        path = ckpt.save_checkpoint(ckpt_dir, step, model=model, optimizer=optimizer, model_config=model_cfg.to_dict(),
                                    train_state=train_state, keep=cfg.checkpoint.keep)
        last_saved = step
        logger.print(f"checkpoint ({reason}): {path}")

    try:
        while step < total_steps:
            # -- the stage this step belongs to; a fresh loader at a stage's start, the saved position on resume
            stage_index = next(i for i, (_, last) in enumerate(bounds) if step < last)
            stage = stages[stage_index]
            if loader is not None:
                loader.close()
            loader = build_loader(cfg, stage, stage_index, dist_env)
            if loader_state is not None and stage_of_loader == stage_index:
                try:
                    loader.load_state_dict(loader_state)
                except ValueError as error:  # other shards or data options than the checkpointed run
                    raise ConfigError(f"--resume: the [data] section no longer matches the checkpoint: {error}") from None
            loader_state = None
            accumulation = stage.batch_size // (stage.micro_batch_size * dist_env.dp_size)
            tp_size = dist_env.world_size // dist_env.dp_size  # the cp x tp ranks that share each row
            tokens_per_step = stage.batch_size * stage.seq_len
            logger.flops_per_token = model.flops_per_token(stage.seq_len)
            logger.print(f"stage {stage.name}: steps {bounds[stage_index][0]}-{bounds[stage_index][1]}, seq_len "
                         f"{stage.seq_len}, {stage.batch_size} rows/step ({tokens_per_step:,} tokens) = "
                         f"{stage.micro_batch_size} row(s) x {dist_env.dp_size} rank(s) x {accumulation} micro-batch(es)"
                         + (f" (each row on {tp_size} cp x tp ranks)" if tp_size > 1 else ""))

            while step < bounds[stage_index][1]:
                step_start = time.perf_counter()
                data_time = 0.0
                micro_batches = []
                for _ in range(accumulation):
                    fetch_start = time.perf_counter()
                    batch = next(loader)
                    data_time += time.perf_counter() - fetch_start
                    micro_batches.append(context_parallel_batch(_to_device(batch, dist_env.device), dist_env.mesh))
                # the global count of loss tokens, once per step and before any backward (no host sync); the tp
                # ranks of a group hold the same rows and loss: only the first of them counts (sums below are over all)
                counts = dist_env.where.tp_rank == 0
                local_tokens = sum((mb["labels"] != IGNORE_INDEX).sum() for mb in micro_batches) * counts
                global_tokens = local_tokens.to(torch.float64).reshape(1)
                dist.all_reduce(global_tokens)
                divisor = global_tokens[0].clamp(min=1.0).to(torch.float32)

                loss_sum = torch.zeros((), dtype=torch.float32, device=dist_env.device)
                for mb in micro_batches:
                    micro_loss = model(mb["input_ids"], position_ids=mb["position_ids"], cu_seqlens=mb["cu_seqlens"],
                                       max_seqlen=mb["max_seqlen"], labels=mb["labels"], loss_reduction="sum")
                    (micro_loss / divisor).backward()
                    loss_sum += micro_loss.detach().float()
                reduce_replicated_gradients(model)  # tensor parallelism: norms / embedding / head summed over tp
                grad_norm = update.clip()
                reduced = torch.stack([loss_sum * counts, torch.tensor(float(_STOP_REQUESTED), device=dist_env.device)])
                dist.all_reduce(reduced)  # loss of the global batch, and whether any rank was asked to stop
                loss_value, stop_votes, grad_norm_value, loss_tokens = torch.stack(
                    [reduced[0] / divisor, reduced[1], grad_norm.float(), global_tokens[0].float()]).tolist()
                step += 1
                outcome = update.apply(step, loss_value, grad_norm_value)
                counters["tokens_seen"] += tokens_per_step
                if dist_env.device.type == "cuda":
                    torch.cuda.synchronize(dist_env.device)  # the step time includes the optimizer
                logger.log_step(step, loss=loss_value, grad_norm=grad_norm_value, lr=outcome.lr, tokens=tokens_per_step,
                                loss_tokens=int(loss_tokens), step_time=time.perf_counter() - step_start,
                                data_time=data_time, seq_len=stage.seq_len, skipped=not outcome.applied,
                                extra={"stage": stage.name, "tokens_seen": counters["tokens_seen"]})
                ckpt.fault_point("after_step", step)

                if update.gave_up:
                    save("too many non-finite steps")
                    logger.print(f"stopping: {update.bad_steps_in_a_row} non-finite steps in a row "
                                 "(lower optimizer.lr, check the data; resume with --resume)")
                    return EXIT_BAD_STEPS
                if stop_votes > 0:
                    save("stop requested")
                    logger.print(f"stopped at step {step}/{total_steps} on request; continue with --resume")
                    return 0
                if cfg.checkpoint.interval and step % cfg.checkpoint.interval == 0:
                    save("interval")
            save(f"end of stage {stage.name}" if step < total_steps else "end of training")
        if stage_index < 0:  # resumed from the final checkpoint: nothing left to do
            logger.print(f"the run is already complete (step {step}/{total_steps})")
        return 0
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        if loader is not None:
            loader.close()
        logger.close()
        if main and cfg.logging.plot and cfg.logging.jsonl:
            png = plot_loss_curve(os.path.join(out_dir, "metrics.jsonl"), os.path.join(out_dir, "loss.png"),
                                  title=f"{cfg.run.name}: training loss")
            if png:
                print(f"loss curve: {png}", flush=True)


# ------------------------------------------------------------------------------------------ command line
def _sft(cfg: TrainConfig) -> int:  # SFT's data checks, then this module's pretraining loop
    return sft(cfg, loop=pretrain)


STAGES: dict[str, Callable[[TrainConfig], int]] = {"pretrain": pretrain, "sft": _sft}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m seedcoder.train",
        description="Train a seedcoder model. Launch with torchrun for several processes; every config key can be "
        "overridden with --section.key=value (or --key=value when the key is unique).",
    )
    parser.add_argument("stage", choices=sorted(STAGES), help="the training stage")
    parser.add_argument("--config", metavar="TOML", help="the run's config file (default: all defaults)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done (or stopped on request), 1 too many non-finite steps, 2 bad input (one line on stderr:
    a config key, a damaged shard or checkpoint; see seedcoder.errors)."""
    args, overrides = build_parser().parse_known_args(argv)

    def run() -> int:
        cfg = load_config(args.config, overrides)
        if args.resume:
            cfg.checkpoint.resume = True
        return STAGES[args.stage](cfg)

    return exit_on_user_error("seedcoder.train", run)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        exit_process(main())
