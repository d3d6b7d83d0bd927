"""Scorer throughput: `python -m benchmarks.curate_scorer [--max-tokens 1024] [--threads N] [--out DIR]`.

The quality scorer (`seedcoder.curate.scorer`: the "tiny" Llama preset + the regression head; random weights, as
throughput does not depend on them) scores a frozen set of 88 Python standard-library files (`FROZEN_STDLIB`,
~3 MB; files missing from this interpreter are listed in the result) with a byte-level BPE tokenizer trained
here on the same files (4096 tokens, like the demo's). Reported, the median of --repeats runs (1 on CPU, 3 on
a GPU) after a one-batch warm-up:

  * files/s and tokens/s of `Scorer.score` end to end (tokenizing included), rows sorted by length (ours), and
    files per CPU-second of the process (all its threads: the figure a shared machine distorts least);
  * the same with the rows in input order (sort_by_length=False): what sorting saves in padding;
  * files/s of the prompt encoding alone (the tokenizer's share).

`bench_scorer()` returns the numbers as a dict (benchmarks/curate.py imports it); the command line prints them
and writes DIR/curate_scorer.json (atomically) with --out. On CPU the threads default to torch's setting; on a
busy machine one thread per process is often faster (OpenMP threads spin waiting for each other).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import sysconfig
import tempfile
import time

import torch

from seedcoder.fileio import atomic_write_text

FROZEN_STDLIB = (
    "abc.py argparse.py ast.py base64.py bisect.py calendar.py cmd.py codecs.py colorsys.py configparser.py "
    "contextlib.py copy.py csv.py dataclasses.py datetime.py difflib.py dis.py enum.py filecmp.py fileinput.py "
    "fnmatch.py fractions.py ftplib.py functools.py getopt.py gettext.py glob.py gzip.py heapq.py hmac.py "
    "html/parser.py http/client.py inspect.py ipaddress.py json/decoder.py json/encoder.py keyword.py linecache.py "
    "locale.py logging/__init__.py lzma.py mimetypes.py numbers.py operator.py optparse.py pickle.py pkgutil.py "
    "platform.py plistlib.py pprint.py queue.py quopri.py random.py reprlib.py sched.py secrets.py selectors.py "
    "shlex.py shutil.py socket.py statistics.py string.py struct.py subprocess.py tempfile.py textwrap.py "
    "threading.py timeit.py tokenize.py trace.py traceback.py types.py typing.py uuid.py warnings.py weakref.py "
    "json/__init__.py email/message.py email/utils.py urllib/parse.py urllib/request.py collections/__init__.py "
    "concurrent/futures/_base.py asyncio/tasks.py asyncio/events.py unittest/case.py xml/dom/minidom.py "
    "importlib/__init__.py"
).split()
VOCAB_SIZE = 4096


def frozen_files(stdlib: str | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """([(relative path, text)] of the frozen set present here, [the missing paths])."""
    stdlib = stdlib or sysconfig.get_paths()["stdlib"]
    files, missing = [], []
    for relative in FROZEN_STDLIB:
        try:
            with open(os.path.join(stdlib, relative), encoding="utf-8") as file:
                files.append((relative, file.read()))
        except (OSError, UnicodeDecodeError):
            missing.append(relative)
    return files, missing


def _median_seconds(run, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process, all threads) of `repeats` calls of run()."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def bench_scorer(*, max_tokens: int = 1024, batch_size: int = 16, device: str = "cpu", threads: int | None = None,
                 repeats: int | None = None, model: str = "tiny", n_files: int | None = None) -> dict:
    """Scorer files/s on the frozen stdlib set (see the module docstring); returns the measurements.
    repeats: timed runs per measure (default 1 on CPU, where one run takes tens of seconds, 3 on a GPU);
    n_files: only the first n files of the set (smoke tests)."""
    repeats = repeats or (1 if device == "cpu" else 3)
    from seedcoder.curate.scorer import Scorer, ScorerModel, prompt_format_for
    from seedcoder.model import model_config
    from seedcoder.tokenizer import load_tokenizer, train_tokenizer

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        files, missing = frozen_files()
        files = files[:n_files] if n_files else files
        texts = [text for _, text in files]
        paths = [path for path, _ in files]
        languages = ["python"] * len(files)
        with tempfile.TemporaryDirectory() as scratch:
            tokenizer_path = train_tokenizer(texts, os.path.join(scratch, "tokenizer.json"), vocab_size=VOCAB_SIZE)
            tokenizer = load_tokenizer(tokenizer_path)
        cfg = model_config(model, vocab_size=-(-tokenizer.get_vocab_size() // 64) * 64)
        scorer_model = ScorerModel.empty(cfg, torch.device(device))
        scorer_model.backbone.init_weights(0)
        torch.nn.init.normal_(scorer_model.head.weight, std=cfg.init_std)
        torch.nn.init.zeros_(scorer_model.head.bias)
        scorer = Scorer(scorer_model, tokenizer, prompt_format_for(tokenizer, max_tokens), name=f"{model}-random")

        def score(sort: bool):
            return lambda: scorer.score(texts, languages, paths, batch_size=batch_size, sort_by_length=sort,
                                        verbose=False)

        scorer.score(texts[:batch_size], languages[:batch_size], paths[:batch_size], batch_size=batch_size,
                     verbose=False)  # warm-up: first-call allocations, the tokenizer's thread pool
        sorted_s, sorted_cpu_s = _median_seconds(score(True), repeats)
        sorted_stats = dict(scorer.last_stats)
        unsorted_s, _ = _median_seconds(score(False), repeats)
        unsorted_stats = dict(scorer.last_stats)
        encode_s, _ = _median_seconds(lambda: scorer.encode(texts, languages, paths), repeats)
        tokens = sorted_stats["tokens"]
        return {
            "files": len(files),
            "missing_files": missing,
            "source_bytes": sum(len(text.encode()) for text in texts),
            "tokens": int(tokens),
            "model": model,
            "parameters": scorer_model.backbone.num_params() + scorer_model.head.weight.numel() + 1,
            "max_tokens": max_tokens,
            "batch_size": batch_size,
            "device": device,
            "threads": torch.get_num_threads() if device == "cpu" else None,
            "files_per_s": len(files) / sorted_s,
            "tokens_per_s": tokens / sorted_s,
            "files_per_cpu_s": len(files) / sorted_cpu_s,
            "padding_pct": 100 * (1 - tokens / sorted_stats["padded_tokens"]),
            "unsorted_files_per_s": len(files) / unsorted_s,
            "unsorted_padding_pct": 100 * (1 - tokens / unsorted_stats["padded_tokens"]),
            "encode_files_per_s": len(files) / encode_s,
        }
    finally:
        torch.set_num_threads(previous_threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.curate_scorer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=1024, help="the scorer's context (default 1024)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads on CPU (default: torch's)")
    parser.add_argument("--repeats", type=int, help="timed runs per measure (default 1 on CPU, 3 on a GPU)")
    parser.add_argument("--model", default="tiny", help="model preset (default tiny)")
    parser.add_argument("--out", help="write DIR/curate_scorer.json")
    args = parser.parse_args(argv)
    result = bench_scorer(max_tokens=args.max_tokens, batch_size=args.batch_size, device=args.device,
                          threads=args.threads, repeats=args.repeats, model=args.model)
    threads = f", {result['threads']} thread(s)" if result["threads"] else ""
    print(f"scorer ({result['model']}, {result['parameters']:,} parameters, context {result['max_tokens']}, batch "
          f"{result['batch_size']}, {result['device']}{threads}) on {result['files']} stdlib files "
          f"({result['tokens']:,} tokens after the cut)")
    print(f"  sorted by length : {result['files_per_s']:8.1f} files/s  {result['tokens_per_s']:10,.0f} tokens/s  "
          f"padding {result['padding_pct']:.1f}%  ({result['files_per_cpu_s']:.1f} files per process CPU-second)")
    print(f"  input order      : {result['unsorted_files_per_s']:8.1f} files/s  padding "
          f"{result['unsorted_padding_pct']:.1f}%")
    print(f"  encoding alone   : {result['encode_files_per_s']:8.1f} files/s")
    if result["missing_files"]:
        print(f"  missing from this interpreter: {', '.join(result['missing_files'])}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        atomic_write_text(os.path.join(args.out, "curate_scorer.json"), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
