"""Training configs: TOML files read into dataclasses, with `--key=value` overrides from the command line.

    cfg = load_config("configs/pretrain_1b.toml", ["--train.steps=100", "--lr=1e-4"])
    cfg.train.steps, cfg.optimizer.lr            # 100, 0.0001

A config has one table per section below ([run], [model], [data], [train], [optimizer], [schedule],
[parallel], [checkpoint], [logging]) and optionally `[[stages]]` (continued pretraining: the context grows in
stages; each stage overrides a few data/batch keys for its number of steps). Every key has a default, so a
file only names what it changes.

Overrides: `--section.key=value`, or `--key=value` when `key` names a field of exactly one section. The value
is read as a TOML value (`--train.steps=100`, `--optimizer.betas=[0.9,0.95]`, `--logging.tensorboard=false`);
for a string field the raw text is taken (`--data.path=runs/demo/data`). An unknown key, a value of the wrong
type or out of range raises `ConfigError` naming the key (and, for a typo, the nearest known key).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import keyword
import math
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seedcoder.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(UserError, ValueError):
    """A bad config: unknown key, wrong type or bad value. The message names the key (and the file)."""


# ------------------------------------------------------------------------------------------ sections
def option(default: Any, help: str) -> Any:
    """A config field with a help text (`fields(...)[i].metadata["help"]`), for the command lines built from a
    section (curation steps); a list or dict default is copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


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
    path: str = ""  # a dataset directory (manifest.json + shards), e.g. from `seedcoder data build`
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
    data_path: str | None = None


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
        lines: list[str] = []
        for section in dataclasses.fields(self):
            if section.name == "stages":
                continue
            values = getattr(self, section.name)
            lines.append(f"[{section.name}]")
            nested = []
            for f in dataclasses.fields(values):
                value = getattr(values, f.name)
                if value is None:
                    continue
                if isinstance(value, dict):
                    nested.append((f.name, value))
                else:
                    lines.append(f"{f.name} = {_toml_value(value)}")
            for name, table in nested:
                lines.append(f"[{section.name}.{name}]")
                lines.extend(f"{_toml_key(key)} = {_toml_value(value)}" for key, value in table.items())
            lines.append("")
        for stage in self.stages:
            lines.append("[[stages]]")
            for f in dataclasses.fields(stage):
                value = getattr(stage, f.name)
                if value is not None:
                    lines.append(f"{f.name} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)



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


# ------------------------------------------------------------------------------------------ TOML output
def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


# ------------------------------------------------------------------------------------------ type checks
def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    if annotation is Any:
        return "any value"
    if origin in (typing.Union, types.UnionType):
        options = [_describe(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = type(None) in typing.get_args(annotation)
        return " or ".join(options) + (" (or leave the key out)" if optional else "")
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"a list of {_describe(item).removeprefix('an ').removeprefix('a ')}s"
    if origin is dict or dataclasses.is_dataclass(annotation):
        return "a table"
    return str(annotation)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` checked against `annotation` (ints accepted for floats); raises ConfigError naming `key`."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):  # a section, or one table of an array of tables
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            return build_section(annotation, value, f"{key}.", "")
    elif origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key!r}: expected {_describe(annotation)}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(annotation)
            return [_coerce(element, item, f"{key}[{index}]") for index, element in enumerate(value)]
    elif origin is dict:
        if isinstance(value, Mapping):
            _, item = typing.get_args(annotation)
            return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    raise ConfigError(f"config key {key!r}: expected {_describe(annotation)}, got {value!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(key: str, known: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return ConfigError(f"{where}unknown config key {key!r}{hint}")


def field_name(key: str) -> str:
    """The dataclass field a config key sets: the key, or for a Python keyword (`in`) the key + "_" (`in_`)."""
    return f"{key}_" if keyword.iskeyword(key) else key


def build_section(cls: type, table: Mapping[str, Any], prefix: str = "", where: str = "") -> Any:
    """`cls(**table)` with every key known and typed: unknown keys (with the nearest known one), wrong types, missing
    required fields and the dataclass's own value checks raise ConfigError naming `prefix + key` (and `where`)."""
    hints = _hints(cls)
    values = {}
    for key, value in table.items():
        name = field_name(key)
        if name not in hints:
            keys = [known[:-1] if keyword.iskeyword(known[:-1]) else known for known in hints]
            raise _unknown_key(f"{prefix}{key}", [f"{prefix}{known}" for known in keys], where)
        try:
            values[name] = _coerce(value, hints[name], f"{prefix}{key}")
        except ConfigError as error:
            raise ConfigError(f"{where}{error}") from None
    for f in dataclasses.fields(cls):
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}config key {prefix + f.name!r} is missing: expected {_describe(hints[f.name])}")
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None
    except ValueError as error:  # a section's own value checks (__post_init__) name the field
        section, message = prefix.rstrip("."), str(error).removeprefix(f"{cls.__name__}.")
        raise ConfigError(f"{where}config section [{section}]: {message}" if section else f"{where}{message}") from None


def parse_stages(value: Any, cls: type = StageSection, *, key: str = "stages", where: str = "") -> list:
    """An array of tables ([[stages]]) -> a list of `cls` dataclasses: unknown keys, wrong types and missing
    required fields raise ConfigError naming `key[index].field`. Training uses StageSection; other stages pass
    their own stage dataclass (e.g. GRPO's progressive length)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(stage, Mapping) for stage in value):
        raise ConfigError(f"{where}config key {key!r}: expected an array of tables ([[{key}]])")
    return [build_section(cls, stage, f"{key}[{index}].", where) for index, stage in enumerate(value)]


# ------------------------------------------------------------------------------------------ loading
def sections_of(root: type) -> dict[str, type]:
    """The [section] tables of a config dataclass: {name: section dataclass} (arrays of tables are not sections)."""
    return {name: hint for name, hint in typing.get_type_hints(root).items() if dataclasses.is_dataclass(hint)}


def config_from_dict(raw: Mapping[str, Any], root: type = None, *, where: str = ""):
    """A config (default: TrainConfig) from a parsed TOML document: unknown sections / keys and wrong types raise
    ConfigError naming them, as do a section's own value checks."""
    root = root or TrainConfig
    for name, value in raw.items():
        if name in sections_of(root) and not isinstance(value, Mapping):
            raise ConfigError(f"{where}config key {name!r}: expected a table [{name}], got {value!r}")
    return build_section(root, raw, "", where)


def parse_value(text: str, annotation: Any) -> Any:
    """A command-line value: the raw text for string fields, else a TOML value (falling back to the raw text)."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    try:
        parsed = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        parsed = text
    if str in options and not isinstance(parsed, str):
        return text  # e.g. --run.name=2024 stays the string "2024"
    return parsed


def split_overrides(argv: Sequence[str]) -> list[tuple[str, str]]:
    """["--train.steps=10", "--lr", "1e-4"] -> [("train.steps", "10"), ("lr", "1e-4")]; anything else is an error."""
    pairs, index = [], 0
    argv = list(argv)
    while index < len(argv):
        arg = argv[index]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"expected --key=value, got {arg!r}")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            key, value = body, argv[index + 1]
            index += 1
        else:
            raise ConfigError(f"config override {arg!r} has no value (write --{body}=VALUE)")
        pairs.append((key.replace("-", "_"), value))
        index += 1
    return pairs


def _resolve_key(key: str, root: type) -> tuple[str, str]:
    """"train.steps" -> ("train", "steps"); "steps" -> ("train", "steps") when exactly one section has it; a
    top-level key that is not a section (an array of tables) -> ("", key)."""
    sections = sections_of(root)
    top = _hints(root)
    if "." in key:
        section, name = key.split(".", 1)
        if section not in sections:
            close = difflib.get_close_matches(section, list(sections), n=1)
            hint = f"did you mean [{close[0]}]?" if close else f"sections: {', '.join(sections)}"
            raise ConfigError(f"unknown config key {key!r}: no section [{section}] ({hint})")
        hints = _hints(sections[section])
        base = name.split(".", 1)[0]
        if base not in hints or ("." in name and typing.get_origin(hints[base]) is not dict):
            raise _unknown_key(key, [f"{section}.{n}" for n in hints], "")
        return section, name
    if key in top and key not in sections:
        return "", key
    owners = [section for section in sections if key in _hints(sections[section])]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(f"config key {key!r} is ambiguous: write one of {', '.join(f'{s}.{key}' for s in owners)}")
    raise _unknown_key(key, [n for s in sections for n in _hints(sections[s])], "")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[tuple[str, str]], root: type = None) -> dict[str, Any]:
    """Set each (key, text) of `overrides` in the parsed TOML document `raw` (in place; also returned)."""
    root = root or TrainConfig
    for key, text in overrides:
        section, name = _resolve_key(key, root)
        if not section:  # an array of tables: --stages=[{steps=10}]
            raw[name] = parse_value(text, _hints(root)[name])
            continue
        hints = _hints(sections_of(root)[section])
        table = raw.setdefault(section, {})
        if "." in name:  # a key inside a table field: --model.overrides.n_layers=4, --data.mixture.python=0.5
            base, inner = name.split(".", 1)
            value_type = typing.get_args(hints[base])[1]
            table.setdefault(base, {})[inner] = parse_value(text, value_type)
        else:
            table[name] = parse_value(text, hints[name])
    return raw


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a ConfigError naming it."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {os.fspath(path)} is a directory") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{os.fspath(path)}: not valid TOML: {error}") from None


def load_sections(root: type, path: str | os.PathLike | None = None, overrides: Sequence[str] = ()):
    """Any stage's config: a dataclass of [section] dataclasses (and arrays of tables), read from a TOML file
    (None: all defaults), then `--section.key=value` overrides. Raises ConfigError naming the key (and the file)."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_toml(path)
        config_from_dict(raw, root, where=f"{os.fspath(path)}: ")  # the file alone: errors name the file
    apply_overrides(raw, split_overrides(overrides), root)
    return config_from_dict(raw, root)


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
    "ConfigError",
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
    "apply_overrides",
    "build_section",
    "option",
    "parse_value",
    "config_from_dict",
    "field_name",
    "load_config",
    "load_sections",
    "read_toml",
    "sections_of",
    "parse_stages",
    "split_overrides",
    "validate",
]
