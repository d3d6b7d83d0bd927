"""The `seedcoder` command line: `python -m seedcoder.cli GROUP COMMAND ...` (or `seedcoder ...` once installed).

Each command group is a function that adds its subparser to the tree and sets `handler` on each command;
to add a group, write such a function and append it to COMMAND_GROUPS. Handlers import their modules
lazily, so `seedcoder --help` stays fast and a group's dependencies load only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from seedcoder.errors import UserError


def add_shards_commands(groups: argparse._SubParsersAction) -> None:
    shards = groups.add_parser("shards", help="scored code shards (.scs) and dataset manifests")
    commands = shards.add_subparsers(dest="command", metavar="COMMAND", required=True)

    inspect = commands.add_parser(
        "inspect",
        help="print counts, score histograms per language/source and a sample document",
        description="PATH is a shard (.scs), a manifest.json, or a dataset directory holding one.",
    )
    inspect.add_argument("path", metavar="PATH")
    inspect.add_argument("--tokenizer", metavar="TOKENIZER_JSON", help="decode the sample with this tokenizer.json")
    inspect.add_argument("--doc", type=int, default=0, help="index of the sample document in its shard (default 0)")
    inspect.add_argument("--max-chars", type=int, default=2000, help="cut the decoded sample after this many characters")
    inspect.add_argument("--no-verify", action="store_true", help="skip the CRC32C pass over the sample shard")
    inspect.set_defaults(handler=run_shards_inspect)


def run_shards_inspect(args: argparse.Namespace) -> int:
    from seedcoder.data.shard_inspect import inspect_path
    from seedcoder.data.shards import ShardError

    try:
        inspect_path(
            args.path,
            tokenizer_path=args.tokenizer,
            document_index=args.doc,
            verify_checksums=not args.no_verify,
            max_chars=args.max_chars,
        )
    except ShardError as error:
        print(f"seedcoder shards inspect: {error}", file=sys.stderr)
        return 1
    return 0


def add_convert_commands(groups: argparse._SubParsersAction) -> None:
    convert = groups.add_parser(
        "convert",
        help="Hugging Face Llama folder <-> seedcoder checkpoint",
        description="--from-hf HF_DIR --out CKPT_DIR: a Hugging Face Llama folder (config.json + safetensors, e.g. "
                    "Seed-Coder-8B-Base) to our checkpoint. --to-hf CKPT_DIR --out HF_DIR: our checkpoint (or a "
                    "trainer checkpoint) to a folder transformers and vLLM load.",
    )
    direction = convert.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-hf", metavar="HF_DIR", help="Hugging Face folder to convert to our checkpoint")
    direction.add_argument("--to-hf", metavar="CKPT_DIR", help="our checkpoint directory to convert to Hugging Face")
    convert.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist or be empty)")
    convert.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="cast the weights (default: keep their dtype)")
    convert.add_argument("--max-shard-size", default="5GB", help="--to-hf: largest safetensors file (default 5GB)")
    convert.add_argument("--tokenizer", metavar="PATH",
                         help="--to-hf: tokenizer.json or a folder of tokenizer files to include (default: the "
                              "files kept from the original HF folder, if any)")
    convert.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from seedcoder.hf_convert import DTYPES, convert_from_hf, convert_to_hf, parse_size

    dtype = DTYPES[args.dtype] if args.dtype else None
    try:
        if args.from_hf:
            if args.tokenizer or args.max_shard_size != "5GB":
                raise UserError("--tokenizer and --max-shard-size apply to --to-hf only")
            convert_from_hf(args.from_hf, args.out, dtype=dtype)
        else:
            convert_to_hf(args.to_hf, args.out, dtype=dtype, max_shard_bytes=parse_size(args.max_shard_size),
                          tokenizer=args.tokenizer)
    except UserError as error:  # ConvertError, or CheckpointError for what is not our checkpoint
        print(f"seedcoder convert: {error}", file=sys.stderr)
        return 1
    return 0


def add_data_commands(groups: argparse._SubParsersAction) -> None:
    data = groups.add_parser("data", help="build training data: source files -> tokenizer -> shards")
    commands = data.add_subparsers(dest="command", metavar="COMMAND", required=True)

    build = commands.add_parser(
        "build",
        help="tokenize a folder of source files into a dataset (training a byte-level BPE tokenizer unless given one)",
        description="SRC is a folder of source files, OUT the dataset directory (plan.json, tokenizer.json, shards, "
        "manifest.json). Re-running continues an interrupted build.",
    )
    build.add_argument("src", metavar="SRC")
    build.add_argument("out", metavar="OUT")
    build.add_argument("--tokenizer", metavar="TOKENIZER_JSON", help="use this tokenizer.json instead of training one")
    build.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the trained tokenizer (default 8192)")
    build.add_argument("--include", action="append", metavar="GLOB", help="files to take (repeatable; default '*.py')")
    build.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="files to skip (repeatable)")
    build.add_argument("--max-file-kb", type=int, default=1024, help="skip files larger than this (default 1024 KiB)")
    build.add_argument("--shard-mb", type=int, default=64, help="source MiB per shard (default 64)")
    build.add_argument("--tokenizer-sample-mb", type=int, default=256, help="MiB of files to train the tokenizer on")
    build.set_defaults(handler=run_data_build)

    # SFT data parses its own arguments (seedcoder.posttrain.sft.build_parser): `build` and `steps`
    sft = commands.add_parser("sft", add_help=False, help="chat data -> SFT shards (`build`); train.steps for N epochs "
                                                         "(`steps`) (`seedcoder data sft --help`)")
    sft.add_argument("-h", "--help", action="store_true", dest="sft_help")  # REMAINDER cannot start with "-"
    sft.add_argument("arguments", nargs=argparse.REMAINDER)
    sft.set_defaults(handler=run_data_sft)


def run_data_build(args: argparse.Namespace) -> int:
    from seedcoder.data.build import BuildError, build_dataset
    from seedcoder.data.shards import ShardError

    try:
        build_dataset(
            args.src,
            args.out,
            tokenizer=args.tokenizer,
            vocab_size=args.vocab_size,
            include=args.include or ["*.py"],
            exclude=args.exclude,
            max_file_bytes=args.max_file_kb << 10,
            shard_bytes=args.shard_mb << 20,
            tokenizer_sample_bytes=args.tokenizer_sample_mb << 20,
        )
    except (BuildError, ShardError) as error:
        print(f"seedcoder data build: {error}", file=sys.stderr)
        return 1
    return 0


def run_data_sft(args: argparse.Namespace) -> int:
    from seedcoder.posttrain.sft import main

    return main((["--help"] if args.sft_help else []) + args.arguments)


def add_curate_commands(groups: argparse._SubParsersAction) -> None:
    # The curate group parses its own arguments (seedcoder.curate.pipeline.build_curate_parser), so its per-step
    # options, built from the step registry, load only when `seedcoder curate` runs.
    curate = groups.add_parser(
        "curate", add_help=False,
        help="the curation pipeline: ingest, dedup, syntax, oracle, scorer, score, commits, tokenize, report "
             "(`seedcoder curate --help`)",
    )
    curate.add_argument("-h", "--help", action="store_true", dest="curate_help")  # REMAINDER cannot start with "-"
    curate.add_argument("arguments", nargs=argparse.REMAINDER)
    curate.set_defaults(handler=run_curate)


def run_curate(args: argparse.Namespace) -> int:
    from seedcoder.curate.pipeline import curate_main

    return curate_main((["--help"] if args.curate_help else []) + args.arguments)


TRAIN_STAGES = {"pretrain": "seedcoder.train", "sft": "seedcoder.train", "dpo": "seedcoder.posttrain.dpo",
                "rl": "seedcoder.posttrain.grpo"}


def add_train_commands(groups: argparse._SubParsersAction) -> None:
    # Each stage parses its own arguments (--config, --section.key=value overrides, --resume), as it does under
    # `torchrun -m seedcoder.train`, which stays the way to start several processes.
    train = groups.add_parser(
        "train", add_help=False,
        help="a training stage in one process: pretrain, sft, dpo, rl (GRPO) (`seedcoder train STAGE --help`; "
             "several processes: torchrun ... -m seedcoder.train pretrain|sft)",
    )
    train.add_argument("-h", "--help", action="help", help="show this help (a stage's own: seedcoder train STAGE --help)")
    train.add_argument("stage", choices=list(TRAIN_STAGES), metavar="{" + ",".join(TRAIN_STAGES) + "}")
    train.add_argument("arguments", nargs=argparse.REMAINDER)
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    if TRAIN_STAGES[args.stage] == "seedcoder.train":
        from seedcoder.train import main

        return main([args.stage, *args.arguments])
    if args.stage == "dpo":
        from seedcoder.posttrain.dpo import main
    else:
        from seedcoder.posttrain.grpo import main
    return main(args.arguments)


EXPERIMENTS = {"filter-ablation": "seedcoder.experiments.filter_ablation", "self-curate": "seedcoder.experiments.self_curation"}


def add_experiment_commands(groups: argparse._SubParsersAction) -> None:
    # Each experiment parses its own arguments (--config, --section.key=value overrides)
    experiment = groups.add_parser(
        "experiment", add_help=False,
        help="experiments over the whole stack: filter-ablation (does quality filtering help?), self-curate (the "
             "model rates, learns to score and filters its own data, in rounds) (`seedcoder experiment NAME --help`)",
    )
    experiment.add_argument("-h", "--help", action="help", help="show this help (an experiment's own: "
                                                                "seedcoder experiment NAME --help)")
    experiment.add_argument("name", choices=list(EXPERIMENTS), metavar="{" + ",".join(EXPERIMENTS) + "}")
    experiment.add_argument("arguments", nargs=argparse.REMAINDER)
    experiment.set_defaults(handler=run_experiment)


def run_experiment(args: argparse.Namespace) -> int:
    if args.name == "filter-ablation":
        from seedcoder.experiments.filter_ablation import main
    else:
        from seedcoder.experiments.self_curation import main
    return main(args.arguments)


def add_plan_commands(groups: argparse._SubParsersAction) -> None:
    # The planner parses its own arguments (seedcoder.plan.build_parser) and loads torch only when it runs. Its
    # arguments are all options: prefix_chars="+" makes them plain strings here, passed on whole (--help included).
    plan = groups.add_parser(
        "plan", add_help=False, prefix_chars="+",
        help="per-rank memory, FLOPs and communication of a training step on a mesh (`seedcoder plan --help`)",
    )
    plan.add_argument("arguments", nargs="*")
    plan.set_defaults(handler=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from seedcoder.plan import main

    return main(args.arguments)


def add_eval_commands(groups: argparse._SubParsersAction) -> None:
    from seedcoder.evaluation.cli import add_eval_commands as add  # light: the heavy parts import when a command runs

    add(groups)


def add_serve_commands(groups: argparse._SubParsersAction) -> None:
    from seedcoder.serve import add_serve_commands as add  # loads neither torch nor fastapi

    add(groups)


COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [add_shards_commands, add_convert_commands,
                                                                      add_data_commands, add_curate_commands,
                                                                      add_train_commands, add_experiment_commands,
                                                                      add_plan_commands, add_eval_commands,
                                                                      add_serve_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedcoder", description="Seed-Coder reproduction tools")
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for add_group in COMMAND_GROUPS:
        add_group(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    from seedcoder.processes import exit_process

    exit_process(main())
