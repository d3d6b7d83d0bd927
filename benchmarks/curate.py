"""Curation benchmark: `python -m benchmarks.curate [--only near_dedup ...] [--repeats 5] [--out results/curate]`.

One frozen corpus for every part, in one run: the running interpreter's standard library .py files (site-packages
and dist-packages left out), sorted by path, decoded as UTF-8 with errors replaced; its size and a SHA-256 of the
paths and contents are printed, so runs on the same Python compare. Each part is one function `bench_<part>(corpus,
args) -> Section`; main runs every part and prints SKIP(reason) for a part whose code is not there yet:

  near_dedup     seedcoder.curate.near_dedup (C++) against datasketch with the same parameters (256 permutations,
                 word 5-grams, threshold 0.8, the same bands x rows): docs/s end to end (signatures + clusters from
                 the texts in memory) on one pinned core, peak memory, and agreement of the clusters.
  syntax_filter  benchmarks.curate_syntax.bench_syntax_filter (the syntax helper's) on the corpus's first --syntax-mb
  scorer         benchmarks.curate_scorer.bench_scorer (the scorer helper's, on its own frozen subset)

Near dedup, how it is measured: every implementation runs in a fresh process pinned to one CPU; after a warm-up on
20 documents the peak-RSS counter is reset (/proc/self/clear_refs), then the timed run; time is that process's CPU
time (robust to the other jobs of a shared machine; wall time is reported too), peak memory is the peak RSS above
the RSS before the run. Ours runs --repeats times (median); each datasketch variant runs --peer-repeats times. The
datasketch pipeline is what a user writes: the same normalization in Python (bytes regex, lower-case, 5-word
shingles), MinHash.generator (which shares the permutations), MinHashLSH insert + query, candidate pairs verified
with MinHash.jaccard >= threshold as ours are by default, union-find. Two datasketch variants: its default shingle
hash (SHA-1, as shipped), and our MurmurHash3 as `hashfunc` (then its signatures equal ours bit for bit, so the
clusters must be identical; the target is checked on that run and on both LSH modes).

    docs/s = documents / CPU s (signatures + clustering, one process on one core)
    speedup = docs/s(ours) / docs/s(faster datasketch variant);  targets: >= 2,500 docs/s, >= 7x, same clusters
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence

NUM_PERM = 256
NGRAM = 5
THRESHOLD = 0.8
SEED = 1
TARGET_DOCS_PER_S = 2500.0
TARGET_SPEEDUP = 7.0
WARMUP_DOCUMENTS = 20
SKIPPED_DIRECTORIES = ("site-packages", "dist-packages", "__pycache__")  # third-party code, caches
NEAR_DEDUP_IMPLEMENTATIONS = ("ours", "datasketch-murmur3", "datasketch-sha1")


# ------------------------------------------------------------------------------------------ corpus
@dataclasses.dataclass
class Corpus:
    root: str
    paths: list[str]  # relative to root, sorted
    texts: list[str]

    @property
    def megabytes(self) -> float:
        return sum(len(text.encode("utf-8", "surrogatepass")) for text in self.texts) / 1e6

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path, text in zip(self.paths, self.texts):
            digest.update(path.encode() + b"\0" + text.encode("utf-8", "surrogatepass") + b"\0")
        return digest.hexdigest()[:16]

    def describe(self) -> str:
        return (f"{len(self.texts):,} .py files of the Python {platform.python_version()} standard library "
                f"({self.root}, site-packages excluded, sorted by path), {self.megabytes:.1f} MB, "
                f"sha256 {self.fingerprint}")


def stdlib_corpus(limit: int | None = None) -> Corpus:
    """The standard library's .py files in a deterministic order; `limit` keeps the first ones (tests)."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_DIRECTORIES)
        paths += [os.path.relpath(os.path.join(directory, name), root) for name in files if name.endswith(".py")]
    paths.sort()
    if limit is not None:
        paths = paths[:limit]
    texts = []
    for path in paths:
        with open(os.path.join(root, path), "rb") as file:
            texts.append(file.read().decode("utf-8", "replace"))
    return Corpus(root, paths, texts)


# ------------------------------------------------------------------------------------------ report pieces
class Skip(Exception):
    """A part whose code (ours or a peer's) is missing: reported as SKIP(reason)."""


@dataclasses.dataclass
class Section:
    title: str
    lines: list[str]  # markdown
    targets: list[tuple[str, str, str]]  # (target, measured, PASS/MISS)
    record: dict  # for the JSON output


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ------------------------------------------------------------------------------------------ near dedup: workers
WORD = re.compile(rb"[0-9A-Za-z_\x80-\xff]+")


def python_shingles(text: str) -> set[bytes]:
    """The normalization of seedcoder.curate.near_dedup in Python: what a datasketch user writes."""
    words = WORD.findall(text.encode("utf-8", "surrogatepass").lower())
    if len(words) < NGRAM:
        return {b" ".join(words)} if words else set()
    return {b" ".join(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def union_find(count: int, pairs) -> list[int]:
    parent = list(range(count))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(count)]


def run_ours(texts: Sequence[str]) -> tuple[list[int], list[int]]:
    """(clusters with verification: the default, timed; clusters without, from the same signatures)."""
    from seedcoder.curate.near_dedup import minhash_signatures, near_duplicate_clusters

    signatures = minhash_signatures(texts, num_perm=NUM_PERM, ngram=NGRAM, seed=SEED)
    clusters = near_duplicate_clusters(signatures, threshold=THRESHOLD)
    return clusters.tolist(), near_duplicate_clusters(signatures, threshold=THRESHOLD, verify=False).tolist()


def datasketch_runner(hashfunc_name: str) -> Callable[[Sequence[str]], tuple[list[int], list[int]]]:
    def run(texts: Sequence[str]) -> tuple[list[int], list[int]]:
        from datasketch import MinHash, MinHashLSH

        if hashfunc_name == "murmur3":
            from seedcoder import _minhash

            hashfunc = _minhash.murmur3_32  # = near_dedup.shingle_hash, without a Python frame per shingle
        else:
            hashfunc = None  # datasketch's default: sha1_hash32
        sketches = list(MinHash.generator((python_shingles(text) for text in texts), num_perm=NUM_PERM, seed=SEED,
                                          hashfunc=hashfunc))
        index = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
        for row, sketch in enumerate(sketches):
            if sketch.is_empty():
                continue  # as ours: a text without shingles is nobody's near-duplicate
            index.insert(row, sketch)
        candidates = sorted({(min(i, j), max(i, j)) for i, sketch in enumerate(sketches) if not sketch.is_empty()
                             for j in index.query(sketch) if i != j})
        verified = [(i, j) for i, j in candidates if sketches[i].jaccard(sketches[j]) >= THRESHOLD]
        clusters = union_find(len(texts), verified)
        return clusters, union_find(len(texts), candidates)

    return run


RUNNERS = {"ours": run_ours, "datasketch-murmur3": datasketch_runner("murmur3"),
           "datasketch-sha1": datasketch_runner("sha1")}


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def measure(implementation: str, corpus: Corpus, repeats: int) -> dict:
    """Time one implementation in this process: CPU and wall seconds per run, peak RSS above the start, clusters."""
    run = RUNNERS[implementation]
    try:
        run(corpus.texts[:WARMUP_DOCUMENTS])  # imports, permutations, LSH parameters
    except ImportError as error:
        return {"implementation": implementation, "skip": f"{error.name or error} not installed"}
    peak_counter = _reset_peak_rss()
    rss_before = _proc_status_kb("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu, wall, clusters, unverified = [], [], None, None
    for _ in range(max(1, repeats)):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        clusters, unverified = run(corpus.texts)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    if peak_counter and rss_before is not None:
        peak_kb, peak_how = _proc_status_kb("VmHWM") - rss_before, "VmHWM - VmRSS before, counter reset"
    else:  # no reset possible: the process peak so far, warm-up and corpus included
        peak_kb, peak_how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before, "ru_maxrss delta"
    return {"implementation": implementation, "cpu_s": cpu, "wall_s": wall, "peak_mb": peak_kb * 1024 / 1e6,
            "peak_how": peak_how, "clusters": clusters, "clusters_unverified": unverified}


def _pin_to_one_cpu() -> int | None:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


def measure_isolated(implementation: str, repeats: int, limit: int | None) -> dict:
    """measure() in a fresh `python -m benchmarks.curate --worker` process pinned to one CPU."""
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "result.json")
        command = [sys.executable, "-m", "benchmarks.curate", "--worker", implementation, "--worker-out", out,
                   "--repeats", str(repeats)] + (["--limit", str(limit)] if limit is not None else [])
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        done = subprocess.run(command, cwd=root, capture_output=True, text=True)
        if done.returncode != 0 or not os.path.exists(out):
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            reason = f"worker failed (exit {done.returncode}): {tail[0][:150]}"
            return {"implementation": implementation, "skip": reason}
        with open(out) as file:
            return json.load(file)


def worker_main(implementation: str, out: str, repeats: int, limit: int | None) -> int:
    cpu = _pin_to_one_cpu()
    result = measure(implementation, stdlib_corpus(limit), repeats)
    result["cpu"] = cpu
    from seedcoder.fileio import atomic_write_text

    atomic_write_text(out, json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------ near dedup: report
def pair_agreement(ours: Sequence[int], theirs: Sequence[int]) -> tuple[int, int, int]:
    """(pairs co-clustered by both, by ours only, by theirs only)."""
    def pairs(clusters):
        members: dict[int, list[int]] = {}
        for row, rep in enumerate(clusters):
            members.setdefault(rep, []).append(row)
        return {(x, y) for group in members.values() for i, x in enumerate(group) for y in group[i + 1:]}

    a, b = pairs(ours), pairs(theirs)
    return len(a & b), len(a - b), len(b - a)


def dropped(clusters: Sequence[int]) -> int:
    return sum(rep != row for row, rep in enumerate(clusters))


def near_dedup_section(corpus: Corpus, results: dict[str, dict], repeats: int, peer_repeats: int) -> Section:
    """The table, agreement and targets from measured results (separate from measuring, so tests can check it)."""
    documents = len(corpus.texts)
    lines = [f"Parameters: {NUM_PERM} permutations, word {NGRAM}-grams, threshold {THRESHOLD}, seed {SEED}; "
             f"ours {repeats} run(s) (median), each datasketch variant {peer_repeats} run(s) (median).", "",
             "| implementation | docs/s (CPU) | CPU s | wall s | peak RSS Δ MB | clusters | dropped |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    rates = {}
    for name in NEAR_DEDUP_IMPLEMENTATIONS:
        result = results.get(name, {"skip": "not run"})
        if "skip" in result:
            lines.append(f"| {name} | SKIP({result['skip']}) | | | | | |")
            continue
        cpu, wall = statistics.median(result["cpu_s"]), statistics.median(result["wall_s"])
        rates[name] = documents / cpu
        clusters = result["clusters"]
        lines.append(f"| {name} | {rates[name]:,.0f} | {cpu:.3f} | {wall:.3f} | {result['peak_mb']:.1f} "
                     f"| {sum(rep == row for row, rep in enumerate(clusters)):,} | {dropped(clusters):,} |")
    lines.append("")
    targets = []
    ours = results.get("ours", {})
    peers = [name for name in rates if name != "ours"]
    if "ours" in rates:
        targets.append((f">= {TARGET_DOCS_PER_S:,.0f} docs/s per core, end to end", f"{rates['ours']:,.0f} docs/s",
                        verdict(rates["ours"] >= TARGET_DOCS_PER_S)))
    if "ours" in rates and peers:
        slowest_ratio = rates["ours"] / max(rates[name] for name in peers)
        targets.append((f">= {TARGET_SPEEDUP:g}x datasketch (its faster variant)", f"{slowest_ratio:.1f}x",
                        verdict(slowest_ratio >= TARGET_SPEEDUP)))
    agreement = {}
    for name in peers:
        theirs = results[name]
        for mode, key in (("verified", "clusters"), ("LSH only", "clusters_unverified")):
            both, ours_only, theirs_only = pair_agreement(ours[key], theirs[key])
            identical = ours[key] == theirs[key]
            agreement[f"{name} {mode}"] = {"identical": identical, "pairs_both": both, "pairs_ours_only": ours_only,
                                           "pairs_theirs_only": theirs_only}
            lines.append(f"- clusters vs {name}, {mode}: {'identical' if identical else 'different'} "
                         f"(co-clustered pairs: {both:,} both, {ours_only:,} ours only, {theirs_only:,} theirs only)")
    if "datasketch-murmur3" in peers:
        same = all(agreement[f"datasketch-murmur3 {mode}"]["identical"] for mode in ("verified", "LSH only"))
        targets.append(("same clusters as datasketch (same hash, verified and LSH only)",
                        "identical" if same else "different", verdict(same)))
    lines += ["", "docs/s = documents / CPU s (signatures + clustering, one process pinned to one core); "
              "speedup = docs/s(ours) / docs/s(faster datasketch variant). Peak memory: "
              f"{ours.get('peak_how', 'n/a')}."]
    record = {"documents": documents, "docs_per_s": rates, "agreement": agreement,
              "results": {name: {k: v for k, v in result.items() if not k.startswith("clusters")}
                          for name, result in results.items()}}
    return Section("Near dedup (MinHash LSH)", lines, targets, record)


def bench_near_dedup(corpus: Corpus, args: argparse.Namespace) -> Section:
    results = {}
    for name in NEAR_DEDUP_IMPLEMENTATIONS:
        repeats = args.repeats if name == "ours" else args.peer_repeats
        if args.in_process:
            results[name] = measure(name, corpus, repeats)
        else:
            results[name] = measure_isolated(name, repeats, args.limit)
        result = results[name]
        shown = result.get("skip") or f"{statistics.median(result['cpu_s']):.3f} CPU s"
        print(f"  near dedup {name}: {shown}", file=sys.stderr, flush=True)
    if "skip" in results["ours"]:
        raise Skip(f"ours: {results['ours']['skip']}")
    return near_dedup_section(corpus, results, args.repeats, args.peer_repeats)


# ------------------------------------------------------------------------------------------ peers' parts
def bench_syntax_filter(corpus: Corpus, args: argparse.Namespace) -> Section:
    try:
        from benchmarks import curate_syntax
    except ImportError as error:
        raise Skip(f"benchmarks.curate_syntax not importable: {error}") from None
    documents, total = [], 0
    for text in corpus.texts:  # the corpus's first --syntax-mb megabytes
        if total >= args.syntax_mb * 1e6:
            break
        documents.append(("python", text))
        total += len(text.encode("utf-8", "surrogatepass"))
    result = curate_syntax.bench_syntax_filter(documents, quiet=True)
    lines = curate_syntax.format_report(result).splitlines()[2:]  # without its title: ours is the section's
    target = (f"syntax filter >= {result['target_ratio']:.0%} of bare parser speed", f"{result['ratio']:.1%}",
              result["verdict"])
    return Section("Syntax filter (CPython for Python, tree-sitter for the rest)", lines, [target], result)


def bench_scorer(corpus: Corpus, args: argparse.Namespace) -> Section:
    """The scorer helper's benchmark as it stands (its own frozen 88-file subset of the same standard library)."""
    try:
        from benchmarks import curate_scorer
    except ImportError as error:
        raise Skip(f"benchmarks.curate_scorer not importable: {error}") from None
    result = curate_scorer.bench_scorer(repeats=args.scorer_repeats)
    lines = [f"{result.get('files', '?')} files of its frozen standard-library subset, model {result.get('model')}, "
             f"max {result.get('max_tokens')} tokens, batch {result.get('batch_size')}, device {result.get('device')}.",
             "", "| measure | value |", "|---|---:|"]
    for key, value in result.items():
        if isinstance(value, float):
            lines.append(f"| {key} | {value:,.2f} |")
    return Section("Scorer", lines, [], result)  # the issue sets no scorer target: files/s is reported


PARTS: dict[str, Callable[[Corpus, argparse.Namespace], Section]] = {
    "near_dedup": bench_near_dedup, "syntax_filter": bench_syntax_filter, "scorer": bench_scorer}


# ------------------------------------------------------------------------------------------ main
def render(corpus: Corpus, sections: dict[str, Section | str]) -> str:
    lines = [f"# Curation benchmark ({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()})",
             "", f"Corpus: {corpus.describe()}.", ""]
    targets = []
    for name, section in sections.items():
        if isinstance(section, str):
            lines += [f"## {name}", "", f"SKIP({section})", ""]
            continue
        lines += [f"## {section.title}", "", *section.lines, ""]
        targets += section.targets
    if targets:
        lines += ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {target} | {measured} | {result} |" for target, measured, result in targets]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(PARTS), help="run these parts only (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours (median reported)")
    parser.add_argument("--peer-repeats", type=int, default=1, help="timed runs of each datasketch variant")
    parser.add_argument("--syntax-mb", type=float, default=8.0, help="corpus megabytes for the syntax filter")
    parser.add_argument("--scorer-repeats", type=int, default=1, help="timed runs of the scorer (each ~1 min on CPU)")
    parser.add_argument("--limit", type=int, default=None, help="first N corpus files only (quick looks, tests)")
    parser.add_argument("--in-process", action="store_true", help="measure near dedup here, not in pinned workers")
    parser.add_argument("--out", default=None, help="directory for curate.md / curate.json")
    parser.add_argument("--worker", choices=NEAR_DEDUP_IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.worker_out, args.repeats, args.limit)
    corpus = stdlib_corpus(args.limit)
    print(f"corpus: {corpus.describe()}", file=sys.stderr, flush=True)
    sections: dict[str, Section | str] = {}
    for name in args.only or PARTS:
        try:
            sections[name] = PARTS[name](corpus, args)
        except Skip as skip:
            sections[name] = str(skip)
    report = render(corpus, sections)
    print(report)
    if args.out:
        from seedcoder.fileio import atomic_write_text

        os.makedirs(args.out, exist_ok=True)
        record = {"corpus": {"files": len(corpus.texts), "megabytes": corpus.megabytes, "sha256": corpus.fingerprint,
                             "root": corpus.root, "python": platform.python_version()},
                  "parts": {name: section if isinstance(section, str) else
                            {"title": section.title, "targets": section.targets, "record": section.record}
                            for name, section in sections.items()}}
        atomic_write_text(os.path.join(args.out, "curate.md"), report)
        atomic_write_text(os.path.join(args.out, "curate.json"), json.dumps(record, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
