"""Syntax filter benchmark: `python -m benchmarks.curate_syntax [--site-packages 1000] [--variants 3] [--max-mb 8]`.

Three parts, on the running interpreter (the Python check is CPython's own, so its figures belong to that version):

1. Agreement of the Python filter (`seedcoder.curate.syntax.check_syntax(text, "python")`) with CPython's parser,
   the reference: `compile(text, "<reference>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)` (what `ast.parse`
   runs) on the decoded text, as the filter sees it, SyntaxWarnings ignored. Files: every UTF-8 .py file of the
   standard library plus --site-packages files of its site-packages (sampled with a fixed seed), each of at most
   1 MiB (ingest's max_file_bytes); each file as it is and --variants damaged copies whose kinds are drawn by a
   generator seeded with the file's name (DAMAGE_KINDS: a deleted line, a stray bracket, an unexpected indent, a
   missing indent, an emptied block, a tab-indented line, a dropped colon, a dropped closing bracket, a "(" before
   a statement, a doubled def/class, the file cut after an opening bracket). Printed: the agreement, each class of
   disagreement with a count and examples, and tree-sitter-python's agreement on the same cases (the grammar the
   filter used before). Target: agreement >= 99.5%.

       agreement = cases where (filter keeps) == (reference accepts) / cases

2. The other languages where this machine has an offline parser that judges syntax alone (OTHER_LANGUAGES: shell
   with `bash -n`, JavaScript with node's own parser): the filter's tree-sitter verdict against it on up to
   --other-files files found on the machine plus 2 damaged copies each (GENERIC_DAMAGE_KINDS). Reported, no target.

3. Speed, on the same files in one run: `check_syntax` (str in, time limit, the check, the reason) against the bare
   engine it wraps (Python: `symtable.symtable(text)`, CPython's parser and symbol-table pass; other languages:
   `parser.parse(data)` of their tree-sitter grammar on bytes encoded beforehand). For Python files the bare
   tree-sitter-python parse is printed beside them (what the previous filter cost), outside the ratio. Timed in
   the calling thread's CPU time plus that of reaped child processes (`check_syntax` parses a Python file of more
   than 200 kB in a child process, whose start-up counts against the filter); per file the two alternate
   --repeats times and each keeps its best, and the per-file bests are summed.

       throughput = bytes / sum over files of the best CPU seconds
       ratio = filter MB/s / bare-engine MB/s;  target: ratio >= 0.85

`bench_syntax_filter(documents=None)` returns the speed numbers as a dict and prints the table;
`benchmarks/curate.py` calls it on its frozen corpus (a list of (language, text)). Without documents it uses the
interpreter's standard library .py files (sorted, the first --max-mb megabytes). Documents whose language is not
checked are skipped. `measure_agreement(agreement_cases(python_files()))` is part 1; the tests run it on a sample.
Exit status 0 when both targets pass.
"""

from __future__ import annotations

import argparse
import ast
import collections
import glob
import json
import os
import platform
import random
import re
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterable, Sequence

TARGET_RATIO = 0.85
FORMULA = "ratio = (checked bytes / filter CPU s) / (same bytes / bare-engine CPU s); PASS if ratio >= 0.85"
TARGET_AGREEMENT = 0.995
MAX_FILE_BYTES = 1 << 20  # ingest's default max_file_bytes: larger files never reach the syntax step


# ------------------------------------------------------------------------------------------ files
def _read_utf8(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):  # ingest drops undecodable files before this step
        return None


def _python_paths(root: str) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True))


def python_files(site_packages: int = 1000, *, stdlib_files: int | None = None, max_file_bytes: int = MAX_FILE_BYTES,
                 seed: int = 0) -> list[tuple[str, str]]:
    """(name, text): the standard library's UTF-8 .py files (all, or `stdlib_files` sampled with `seed`) and
    `site_packages` sampled from site-packages; names are "stdlib/..." and "site-packages/...". Files over
    `max_file_bytes` and files that are not UTF-8 are left out, as ingest drops them."""
    stdlib = sysconfig.get_paths()["stdlib"]
    purelib = sysconfig.get_paths()["purelib"]
    groups = [
        ("stdlib", stdlib, [p for p in _python_paths(stdlib) if "site-packages" not in p and "dist-packages" not in p],
         stdlib_files),
        ("site-packages", purelib, _python_paths(purelib), site_packages),
    ]
    files = []
    for label, root, paths, wanted in groups:
        paths = [path for path in paths if os.path.getsize(path) <= max_file_bytes]
        if wanted is not None:
            paths = random.Random(f"{seed}:{label}").sample(paths, len(paths))  # a seeded order; take the first readable
        taken = 0
        for path in paths:
            if wanted is not None and taken == wanted:
                break
            text = _read_utf8(path)
            if text is not None:
                files.append((f"{label}/{os.path.relpath(path, root)}", text))
                taken += 1
    return files


# ------------------------------------------------------------------------------------------ damaged variants
_BLOCK_HEADER = re.compile(r"^\s*(def|class|if|elif|else|for|while|with|try|except|finally|async)\b.*:[ \t]*$")
_ENDS_WITH_CLOSER = re.compile(r"[)\]}][ \t]*$")
_STATEMENT_START = re.compile(r"^(\s*)(return|if|for|while|import|raise)\b")
_DEF_LINE = re.compile(r"^(\s*)(def|class)\b")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def damage(text: str, kind: str, rng: random.Random) -> str | None:
    """`text` with one planted fault of `kind` (one of DAMAGE_KINDS) at a place `rng` picks, or None when the file
    offers no place for it. Most, not all, variants are syntax errors: the reference decides."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]  # not splitlines(): "\f" etc. stay as they are
    code = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]

    def pick(indices: Sequence[int]) -> int | None:
        return rng.choice(indices) if indices else None

    def matching(pattern: re.Pattern) -> list[int]:
        return [i for i in code if pattern.search(lines[i])]

    if kind == "delete_line" and (i := pick(code)) is not None:
        del lines[i]
    elif kind == "stray_bracket" and (i := pick(code)) is not None:
        at = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:at] + rng.choice("()[]{}") + lines[i][at:]
    elif kind == "unexpected_indent" and (i := pick(code)) is not None:
        lines[i] = "    " + lines[i]
    elif kind == "missing_indent" and (i := pick([i for i in code if _indent(lines[i])])) is not None:
        lines[i] = lines[i].lstrip(" \t")
    elif kind == "empty_block" and (i := pick(matching(_BLOCK_HEADER))) is not None:
        end = i + 1  # drop the block's body: the following lines indented deeper than its header (blank ones too)
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > _indent(lines[i])):
            end += 1
        del lines[i + 1 : end]
    elif kind == "tab_indent" and (i := pick([i for i in code if lines[i].startswith(" " * 8)])) is not None:
        lines[i] = "\t" + lines[i][8:]  # the same column at tab size 8, not at tab size 1: CPython's TabError
    elif kind == "drop_colon" and (i := pick(matching(_BLOCK_HEADER))) is not None:
        cut = lines[i].rindex(":")
        lines[i] = lines[i][:cut] + lines[i][cut + 1 :]
    elif kind == "drop_closer" and (i := pick(matching(_ENDS_WITH_CLOSER))) is not None:
        lines[i] = lines[i].rstrip()[:-1]
    elif kind == "open_paren" and (i := pick(matching(_STATEMENT_START))) is not None:
        lines[i] = _STATEMENT_START.sub(r"\1(\2", lines[i], count=1)
    elif kind == "double_keyword" and (i := pick(matching(_DEF_LINE))) is not None:
        lines[i] = _DEF_LINE.sub(r"\1\2 \2", lines[i], count=1)
    elif kind == "truncate" and (i := pick([i for i in matching(_DEF_LINE) if "(" in lines[i]])) is not None:
        return "\n".join(lines[:i] + [lines[i][: lines[i].index("(") + 1]])
    else:
        return None
    return "\n".join(lines)


DAMAGE_KINDS = ("delete_line", "stray_bracket", "unexpected_indent", "missing_indent", "empty_block", "tab_indent",
                "drop_colon", "drop_closer", "open_paren", "double_keyword", "truncate")


def agreement_cases(files: Iterable[tuple[str, str]], variants: int = 3) -> list[tuple[str, str, str]]:
    """(name, kind, text): each file as it is ("original") and up to `variants` damaged copies of distinct kinds,
    drawn by a generator seeded with the file's name (the same cases on every run and machine)."""
    cases = []
    for name, text in files:
        cases.append((name, "original", text))
        rng = random.Random(name)
        made = 0
        for kind in rng.sample(DAMAGE_KINDS, len(DAMAGE_KINDS)):
            if made == variants:
                break
            damaged = damage(text, kind, rng)
            if damaged is not None:
                cases.append((name, kind, damaged))
                made += 1
    return cases


# ------------------------------------------------------------------------------------------ agreement
def cpython_parser_accepts(text: str) -> bool:
    """The reference: CPython's parser on the decoded text (a leading BOM is no part of the program)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc. are warnings, not syntax errors
        try:
            compile(text.removeprefix("\ufeff"), "<reference>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
    return True


def _reason_class(reason: str | None) -> str:
    """A filter reason without its position: 'syntax error at line 3, column 5 (CPython 3.11): x' -> 'x'."""
    return re.sub(r"^syntax error (at line \d+(, column \d+)? )?\([^)]*\): ", "", reason or "")


def measure_agreement(cases: Sequence[tuple[str, str, str]], *, tree_sitter: bool = True, quiet: bool = False) -> dict:
    """The filter's and (when `tree_sitter`) tree-sitter-python's agreement with the reference on `cases`."""
    from seedcoder.curate import syntax

    grammar = syntax._parser("python") if tree_sitter else None
    counts = collections.Counter()
    classes: dict[str, list] = collections.defaultdict(list)
    tree_sitter_agree = 0
    started = time.perf_counter()
    for name, kind, text in cases:
        expected = cpython_parser_accepts(text)
        result = syntax.check_syntax(text, "python", timeout_s=None)
        counts["valid" if expected else "invalid"] += 1
        if result.ok == expected:
            counts["agree"] += 1
        else:
            verdict = "filter drops, parser accepts" if expected else "filter keeps, parser rejects"
            classes[f"{verdict}: {_reason_class(result.reason)}"].append(f"{name} ({kind})")
        if grammar is not None:
            tree = grammar.parse(text.removeprefix("\ufeff").encode("utf-8", "replace"))
            tree_sitter_agree += (not tree.root_node.has_error) == expected
    result = {
        "reference": 'compile(text, "<reference>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)',
        "python": platform.python_version(),
        "cases": len(cases),
        "files": sum(kind == "original" for _, kind, _ in cases),
        "by_kind": dict(collections.Counter(kind for _, kind, _ in cases)),
        "reference_valid": counts["valid"],
        "reference_invalid": counts["invalid"],
        "agreement": counts["agree"] / len(cases) if cases else float("nan"),
        "tree_sitter_agreement": tree_sitter_agree / len(cases) if cases and grammar is not None else None,
        "disagreements": {label: {"count": len(names), "examples": names[:3]} for label, names in
                          sorted(classes.items(), key=lambda item: -len(item[1]))},
        "target_agreement": TARGET_AGREEMENT,
        "seconds": time.perf_counter() - started,
    }
    result["verdict"] = "PASS" if result["agreement"] >= TARGET_AGREEMENT else "MISS"
    if not quiet:
        print(format_agreement_report(result))
    return result


def format_agreement_report(result: dict) -> str:
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(result["by_kind"].items()))
    lines = [
        f"## Python syntax filter vs CPython's parser (Python {result['python']})",
        "",
        f"{result['cases']} cases from {result['files']} files ({kinds}); the reference, {result['reference']}, "
        f"accepts {result['reference_valid']} and rejects {result['reference_invalid']}.",
        "",
        "| filter | agreement with the reference |",
        "|---|---:|",
        f"| check_syntax(text, \"python\") (CPython parser + symbol table) | {result['agreement']:.4%} |",
    ]
    if result["tree_sitter_agreement"] is not None:
        lines.append(f"| tree-sitter-python, no ERROR/MISSING node (the previous filter) | "
                     f"{result['tree_sitter_agreement']:.4%} |")
    lines += ["", "| disagreement | cases | examples |", "|---|---:|---|"]
    for label, entry in result["disagreements"].items():
        lines.append(f"| {label} | {entry['count']} | {'; '.join(entry['examples'])} |")
    if not result["disagreements"]:
        lines.append("| none | 0 | |")
    lines += ["", f"agreement >= {result['target_agreement']:.1%}: {result['agreement']:.4%} -> {result['verdict']}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ other languages
# Tree-sitter's verdict against an offline reference parser, where this machine has one that judges syntax alone:
# `bash -n` for shell, node's own parser (as CommonJS, else as an ES module) for JavaScript. Not used: gcc
# -fsyntax-only for C/C++ (it needs the file's includes and macro definitions, so it judges the build, not the
# syntax), javac (it resolves imports), perl -c (it runs BEGIN blocks). JSON, TOML and YAML have exact parsers in
# Python, but the filter leaves data formats unchecked, so there is nothing to compare.
GENERIC_DAMAGE_KINDS = ("delete_line", "stray_bracket", "drop_closer", "truncate")
_SHELL_SHEBANG = re.compile(rb"^#![ \t]*(/usr)?/bin/(env[ \t]+)?(ba|da)?sh\b")
SHELL_ROOTS = ("/usr/bin", "/usr/sbin", "/etc", "/usr/lib", "/usr/share")
JAVASCRIPT_ROOTS = ("/usr/lib/node_modules", "/usr/share/nodejs")
_NODE_CHECK = """
const vm = require("vm");
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const verdicts = JSON.parse(input).map((source) => {
    source = source.replace(/^#!.*/, "");
    try { vm.compileFunction(source, ["exports", "require", "module", "__filename", "__dirname"]); return true; }
    catch (error) {}
    try { new vm.SourceTextModule(source); return true; } catch (error) { return false; }
  });
  process.stdout.write(JSON.stringify(verdicts));
});
"""


def _walk_files(roots: Sequence[str], accept) -> list[tuple[str, str]]:
    files = []
    for root in roots:
        for directory, subdirectories, names in os.walk(root):
            subdirectories.sort()
            for name in sorted(names):
                path = os.path.join(directory, name)
                if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > MAX_FILE_BYTES:
                    continue
                if accept(path) and (text := _read_utf8(path)) is not None:
                    files.append((path, text))
    return files


def _has_shell_shebang(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            return bool(_SHELL_SHEBANG.match(file.read(64)))
    except OSError:
        return False


def bash_accepts(texts: Sequence[str]) -> list[bool]:
    import subprocess

    return [subprocess.run(["bash", "-n"], input=text.encode("utf-8"), capture_output=True).returncode == 0
            for text in texts]


def node_accepts(texts: Sequence[str]) -> list[bool]:
    import subprocess

    done = subprocess.run(["node", "--experimental-vm-modules", "--no-warnings", "-e", _NODE_CHECK],
                          input=json.dumps(list(texts)).encode("utf-8"), capture_output=True, check=True)
    return json.loads(done.stdout)


OTHER_LANGUAGES = {  # language -> (reference, its command, how to find files, the function that judges texts)
    "shell": ("bash -n", "bash", lambda: _walk_files(SHELL_ROOTS, _has_shell_shebang), bash_accepts),
    "javascript": ("node: vm.compileFunction, else vm.SourceTextModule", "node",
                   lambda: _walk_files(JAVASCRIPT_ROOTS, lambda path: path.endswith((".js", ".cjs", ".mjs"))),
                   node_accepts),
}


def measure_other_languages(max_files: int = 400, variants: int = 2, quiet: bool = False) -> list[dict]:
    """Per language of OTHER_LANGUAGES whose reference is installed: tree-sitter's (the filter's) agreement with it
    on up to `max_files` files found on this machine (sampled with a fixed seed) and `variants` damaged copies each
    (GENERIC_DAMAGE_KINDS)."""
    import shutil

    from seedcoder.curate.syntax import check_syntax

    results = []
    for language, (reference, command, find, accepts) in OTHER_LANGUAGES.items():
        if shutil.which(command) is None:
            results.append({"language": language, "reference": reference, "skip": f"{command} is not installed"})
            continue
        files = find()
        files = random.Random(0).sample(files, min(max_files, len(files)))
        cases = []
        for name, text in files:
            cases.append((name, "original", text))
            rng = random.Random(name)
            kinds = rng.sample(GENERIC_DAMAGE_KINDS, len(GENERIC_DAMAGE_KINDS))
            damaged = [(kind, variant) for kind in kinds if (variant := damage(text, kind, rng)) is not None]
            cases += [(name, kind, variant) for kind, variant in damaged[:variants]]
        expected = accepts([text for _, _, text in cases])
        disagreements = collections.Counter()
        examples: dict[str, list[str]] = collections.defaultdict(list)
        for (name, kind, text), valid in zip(cases, expected):
            if check_syntax(text, language, timeout_s=None).ok != valid:
                label = "filter drops, reference accepts" if valid else "filter keeps, reference rejects"
                disagreements[label] += 1
                examples[label].append(f"{name} ({kind})")
        results.append({
            "language": language, "reference": reference, "files": len(files), "cases": len(cases),
            "reference_valid": sum(expected), "agreement": 1 - sum(disagreements.values()) / len(cases) if cases else None,
            "disagreements": {label: {"count": count, "examples": examples[label][:3]}
                              for label, count in disagreements.most_common()},
        })
    if not quiet:
        print(format_other_languages_report(results))
    return results


def format_other_languages_report(results: Sequence[dict]) -> str:
    lines = ["## Other languages: tree-sitter vs an offline reference parser", "",
             "| language | reference | files | cases (reference accepts) | agreement | disagreements |",
             "|---|---|---:|---:|---:|---|"]
    for entry in results:
        if "skip" in entry:
            lines.append(f"| {entry['language']} | {entry['reference']} | SKIP({entry['skip']}) | | | |")
            continue
        shown = "; ".join(f"{label}: {value['count']} (e.g. {', '.join(value['examples'][:2])})"
                          for label, value in entry["disagreements"].items()) or "none"
        agreement = f"{entry['agreement']:.2%}" if entry["agreement"] is not None else "no files"
        lines.append(f"| {entry['language']} | {entry['reference']} | {entry['files']} | {entry['cases']} "
                     f"({entry['reference_valid']}) | {agreement} | {shown} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ speed
def stdlib_documents(max_mb: float = 8.0) -> list[tuple[str, str]]:
    """(language, text) for the standard library's UTF-8 .py files, sorted by path, up to `max_mb` megabytes."""
    documents, total = [], 0
    for path in _python_paths(sysconfig.get_paths()["stdlib"]):
        if "site-packages" in path:
            continue
        text = _read_utf8(path)
        if text is None:
            continue
        documents.append(("python", text))
        total += len(text.encode("utf-8"))
        if total >= max_mb * 1e6:
            break
    return documents


def _cpu_seconds() -> float:
    """This thread's CPU time plus that of the child processes reaped so far (check_syntax's large Python files)."""
    children = os.times()
    return time.thread_time() + children.children_user + children.children_system


def bench_syntax_filter(
    documents: Sequence[tuple[str, str]] | None = None, *, repeats: int = 5, max_mb: float = 8.0, quiet: bool = False
) -> dict:
    """Filter vs its bare engine on the same files; returns MB/s of both, the ratio and PASS/MISS."""
    import symtable

    from seedcoder.curate import syntax

    if documents is None:
        documents = stdlib_documents(max_mb)
    checked = [(language, text) for language, text in documents
               if syntax.grammars_for(language) or syntax.canonical_language(language) == syntax.PYTHON]
    if not checked:
        raise ValueError("bench_syntax_filter: no document has a checked language")
    encoded = [text.encode("utf-8", "replace") for _, text in checked]
    total_bytes = sum(len(data) for data in encoded)

    def bare_engine(language: str, text: str, data: bytes):
        if syntax.canonical_language(language) == syntax.PYTHON:
            def parse():
                try:
                    symtable.symtable(text, "<bench>", "exec")
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    pass
            return parse
        parser = syntax._parser(syntax.grammars_for(language)[0])
        return lambda: parser.parse(data)

    tree_sitter_python = syntax._parser("python")
    # Per file, bare and filter alternate `repeats` times and each keeps its fastest run: a burst of load from the
    # other processes of a shared machine then spoils one run of one file, not a whole pass.
    bare_seconds = filter_seconds = tree_sitter_seconds = 0.0
    python_bytes = failed = in_child = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bare symtable call's SyntaxWarnings (check_syntax has its own filter)
        for (language, text), data in zip(checked, encoded):
            bare = bare_engine(language, text, data)
            python = syntax.canonical_language(language) == syntax.PYTHON
            best_bare = best_filter = best_tree_sitter = float("inf")
            for _ in range(max(1, repeats)):
                start = _cpu_seconds()
                bare()
                middle = _cpu_seconds()
                result = syntax.check_syntax(text, language)
                end = _cpu_seconds()
                best_bare = min(best_bare, middle - start)
                best_filter = min(best_filter, end - middle)
                if python:
                    tree_sitter_python.parse(data)
                    best_tree_sitter = min(best_tree_sitter, _cpu_seconds() - end)
            bare_seconds += best_bare
            filter_seconds += best_filter
            failed += not result.ok
            if python:
                tree_sitter_seconds += best_tree_sitter
                python_bytes += len(data)
                in_child += len(data) > syntax.DEFAULT_TIMEOUT_S * syntax.CPYTHON_IN_PROCESS_BYTES_PER_S
    bare_mb_s = total_bytes / bare_seconds / 1e6
    filter_mb_s = total_bytes / filter_seconds / 1e6
    ratio = filter_mb_s / bare_mb_s
    result = {
        "files": len(checked),
        "skipped_unchecked_language": len(documents) - len(checked),
        "bytes": total_bytes,
        "dropped_by_filter": failed,
        "python_files_in_child_process": in_child,
        "bare_mb_s": bare_mb_s,
        "filter_mb_s": filter_mb_s,
        "tree_sitter_python_mb_s": python_bytes / tree_sitter_seconds / 1e6 if python_bytes else None,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "verdict": "PASS" if ratio >= TARGET_RATIO else "MISS",
        "formula": FORMULA,
        "repeats": max(1, repeats),
        "clock": "thread CPU time + reaped children's CPU time, per file the best of the repeats (alternating)",
    }
    if not quiet:
        print(format_report(result))
    return result


def format_report(result: dict) -> str:
    lines = [
        f"## Syntax filter ({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()})",
        "",
        f"{result['files']} files, {result['bytes'] / 1e6:.2f} MB ({result['skipped_unchecked_language']} skipped: "
        f"language not checked); {result['dropped_by_filter']} dropped by the filter; "
        f"{result['python_files_in_child_process']} Python files over 200 kB checked in a child process; "
        f"{result['clock']}, {result['repeats']} repeats.",
        "",
        "| implementation | MB/s |",
        "|---|---:|",
        f"| bare engine (Python: symtable.symtable on str; others: tree-sitter parse of bytes) | {result['bare_mb_s']:.2f} |",
        f"| check_syntax (str in, time limit, the check, the reason) | {result['filter_mb_s']:.2f} |",
    ]
    if result["tree_sitter_python_mb_s"] is not None:
        lines.append(f"| for comparison, not in the ratio: tree-sitter-python bare parse of the Python files (the "
                     f"previous filter's engine) | {result['tree_sitter_python_mb_s']:.2f} |")
    lines += ["", f"{result['formula']}: {result['ratio']:.3f} -> {result['verdict']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site-packages", type=int, default=1000, help="site-packages files in the agreement part")
    parser.add_argument("--variants", type=int, default=3, help="damaged copies per file in the agreement part")
    parser.add_argument("--other-files", type=int, default=400, help="files per other language (0: skip that part)")
    parser.add_argument("--max-mb", type=float, default=8.0, help="standard-library megabytes to time (default 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="directory for curate_syntax.json / .md")
    args = parser.parse_args(argv)
    files = python_files(args.site_packages)
    agreement = measure_agreement(agreement_cases(files, args.variants))
    print()
    others = measure_other_languages(args.other_files) if args.other_files else []
    print()
    speed = bench_syntax_filter(repeats=args.repeats, max_mb=args.max_mb)
    if args.out:
        from seedcoder.fileio import atomic_write_text

        os.makedirs(args.out, exist_ok=True)
        record = {"agreement": agreement, "other_languages": others, "speed": speed}
        atomic_write_text(os.path.join(args.out, "curate_syntax.json"), json.dumps(record, indent=1) + "\n")
        parts = [format_agreement_report(agreement)] + ([format_other_languages_report(others)] if others else [])
        report = "\n\n".join(parts + [format_report(speed)]) + "\n"
        atomic_write_text(os.path.join(args.out, "curate_syntax.md"), report)
    return 0 if agreement["verdict"] == speed["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
