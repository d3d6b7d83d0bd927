"""The `seedcoder` command line: `python -m seedcoder.cli GROUP COMMAND ...` (or `seedcoder ...` once installed).

Each command group is a function that adds its subparser to the tree and sets `handler` on each command;
to add a group, write such a function and append it to COMMAND_GROUPS. Handlers import their modules
lazily, so `seedcoder --help` stays fast and a group's dependencies load only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


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
    from seedcoder.data.shards import ShardError, inspect_path

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


COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [add_shards_commands]


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
    sys.exit(main())
