"""Web steps against their bare libraries: `python -m benchmarks.curate_web [--max-pages 100] [--repeats 3] [--out DIR]`.

The corpus: `seedcoder.curate.web_corpus.build_corpus` over the Debian packages installed here (--max-pages pages
each; the committed fixture tests/data/web when none is), written to a temporary folder. One process, one core;
each measurement is the best of --repeats, the two sides alternating.

1. Extraction, per WARC file: the step's own work (`web_ingest.web_ingest_part`: fastwarc, decoding with the
   charset rules, resiliparse's main-content extraction, code counts, the page category, bad-record handling, the
   Parquet shard) against the bare libraries on the same records (fastwarc's ArchiveIterator with HTTP parsing,
   `bytes_to_str(body, detect_encoding(body))`, `HTMLTree.parse`, `extract_plain_text` with the same flags).

       pages/s = response records / seconds;  MB/s = HTML body bytes / seconds / 1e6 (per core)
       ratio = step pages/s / bare pages/s;  target: ratio >= 0.85 (the step loses at most 15%)

2. fastText scoring: `TextClassifier.probability(texts)` (normalisation: the first 1,024 tokens, lower-cased, one
   line) against the bare `model.predict(lines, k=2)` of the same fastText model on the texts with newlines
   replaced (what fastText needs at least), over the extracted pages.

       docs/s = texts / seconds;  ratio = ours / bare;  target: ratio >= 0.85

Exit status 0 when both targets pass. `bench_web()` returns the numbers as a dict.
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable

TARGET_RATIO = 0.85


def _best(function: Callable[[], object], other: Callable[[], object] | None, repeats: int) -> tuple[float, float]:
    """(best seconds of `function`, best of `other`) over `repeats` runs of each, alternating."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for side, call in enumerate((function, other)):
            if call is not None:
                started = time.perf_counter()
                call()
                best[side] = min(best[side], time.perf_counter() - started)
    return best[0], best[1]


def _bare_extract(path: str) -> tuple[int, int, list[str]]:
    """(pages, HTML bytes, texts) of the response records of one WARC file, with the bare libraries."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    pages, size, texts = 0, 0, []
    with open(path, "rb") as file:
        for record in ArchiveIterator(file, record_types=WarcRecordType.response, parse_http=True):
            body = record.reader.read()
            tree = HTMLTree.parse(bytes_to_str(body, detect_encoding(body)))
            texts.append(extract_plain_text(tree, preserve_formatting=True, main_content=True, list_bullets=True,
                                            alt_texts=False, links=False, form_fields=False, noscript=False))
            pages += 1
            size += len(body)
    return pages, size, texts


def corpus(folder: str, max_pages: int) -> tuple[list[str], str]:
    from seedcoder.curate import web_corpus

    installed = web_corpus.installed_packages(list(web_corpus.PACKAGES))
    if installed:
        web_corpus.build_corpus(folder, list(installed), max_pages, say=lambda _: None)
        return sorted(glob.glob(os.path.join(folder, "*.warc.gz"))), f"{len(installed)} installed packages"
    return sorted(glob.glob(os.path.join(web_corpus.FIXTURE_DIR, "*.warc.gz"))), "the fixture tests/data/web"


def bench_web(max_pages: int = 100, repeats: int = 3) -> dict:
    import numpy as np

    from seedcoder.curate.fasttext_classifier import ClassifierOptions, TextClassifier, normalize
    from seedcoder.curate.web_ingest import WebIngestOptions, WebSource, web_ingest_part

    with tempfile.TemporaryDirectory() as folder:
        files, what = corpus(os.path.join(folder, "corpus"), max_pages)
        options = WebIngestOptions()
        pages = size = 0
        texts: list[str] = []
        for path in files:
            counted = _bare_extract(path)
            pages, size, texts = pages + counted[0], size + counted[1], texts + counted[2]
        step_s = bare_s = 0.0
        out = os.path.join(folder, "out")
        for index, path in enumerate(files):
            step = functools.partial(web_ingest_part, out, index, WebSource("warc", path, os.path.basename(path)),
                                     None, options)
            seconds = _best(step, functools.partial(_bare_extract, path), repeats)
            step_s, bare_s = step_s + seconds[0], bare_s + seconds[1]

    labels = np.array(["python" in text.lower() or "(" in text for text in texts])  # any two classes will do
    if labels.all() or not labels.any():
        labels[: len(labels) // 2] = ~labels[: len(labels) // 2]
    classifier = TextClassifier.train(texts, labels.tolist(), ClassifierOptions(epochs=5))
    lines = [text.replace("\n", " ") for text in texts]
    ours_s, bare_ft_s = _best(lambda: classifier.probability(texts),
                              lambda: classifier.model.predict(lines, k=2, threshold=0.0), repeats)
    normalize_s = _best(lambda: [normalize(text) for text in texts], None, repeats)[0]
    result = {
        "corpus": what, "warc_files": len(files), "pages": pages, "html_mb": size / 1e6,
        "extraction": {"step_pages_per_s": pages / step_s, "bare_pages_per_s": pages / bare_s,
                       "step_mb_per_s": size / 1e6 / step_s, "bare_mb_per_s": size / 1e6 / bare_s,
                       "ratio": bare_s / step_s},
        "fasttext": {"texts": len(texts), "ours_docs_per_s": len(texts) / ours_s,
                     "bare_docs_per_s": len(texts) / bare_ft_s, "normalize_docs_per_s": len(texts) / normalize_s,
                     "ratio": bare_ft_s / ours_s},
    }
    result["pass"] = all(result[key]["ratio"] >= TARGET_RATIO for key in ("extraction", "fasttext"))
    return result


def render(result: dict) -> str:
    e, f = result["extraction"], result["fasttext"]
    lines = [f"corpus: {result['pages']:,} pages, {result['html_mb']:.1f} MB of HTML in {result['warc_files']} WARC "
             f"file(s) ({result['corpus']}); one core, best of repeats",
             "| what | ours | bare library | ratio (target >= 0.85) |", "|---|---:|---:|---:|",
             f"| extraction pages/s | {e['step_pages_per_s']:,.0f} | {e['bare_pages_per_s']:,.0f} | {e['ratio']:.2f} |",
             f"| extraction MB/s | {e['step_mb_per_s']:.2f} | {e['bare_mb_per_s']:.2f} | |",
             f"| fastText docs/s | {f['ours_docs_per_s']:,.0f} | {f['bare_docs_per_s']:,.0f} | {f['ratio']:.2f} |",
             f"(normalisation alone: {f['normalize_docs_per_s']:,.0f} docs/s)",
             "ratio = ours / bare (pages/s or docs/s measured on the same inputs in this run)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-pages", type=int, default=100, help="pages per Debian package (default: 100)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default: 3)")
    parser.add_argument("--out", help="write DIR/curate_web.json")
    args = parser.parse_args(argv)
    result = bench_web(args.max_pages, args.repeats)
    print(render(result))
    if args.out:
        from seedcoder.fileio import atomic_write_text

        os.makedirs(args.out, exist_ok=True)
        atomic_write_text(os.path.join(args.out, "curate_web.json"), json.dumps(result, indent=1) + "\n")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
