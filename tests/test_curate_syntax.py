"""Syntax filter (seedcoder.curate.syntax): Python judged by CPython, other languages by tree-sitter; snippets,
reasons, time limits.

Python: the filter must agree with CPython's parser (benchmarks.curate_syntax.cpython_parser_accepts, i.e.
ast.parse) on real files and damaged copies of them. Here on a sample (200 standard-library and 50 site-packages
files of up to 40 kB, each with 3 damaged copies); `python -m benchmarks.curate_syntax` measures the whole
standard library plus 1,000 site-packages files. The one class of disagreement is by design: the filter also runs
CPython's symbol-table pass, so it drops what compile() rejects there and ast.parse lets through
(`from __future__ import *`, a duplicate argument name, `nonlocal` at module level); it never keeps a file the
parser rejects. tree-sitter-python, the previous judge, agreed on ~80% of such cases: it kept files with
indentation errors (`test_indentation_errors_are_dropped`).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import warnings

import pytest

from benchmarks.curate_syntax import (
    DAMAGE_KINDS,
    agreement_cases,
    cpython_parser_accepts,
    damage,
    measure_agreement,
    python_files,
)
from seedcoder.curate import syntax
from seedcoder.curate.syntax import SyntaxResult, check_syntax, syntax_languages

CPYTHON = f"CPython {sys.version_info[0]}.{sys.version_info[1]}"


def test_agrees_with_cpython_parser_on_real_files_and_damaged_copies():
    files = python_files(50, stdlib_files=200, max_file_bytes=40_000)
    assert sum(name.startswith("stdlib/") for name, _ in files) == 200
    cases = agreement_cases(files, variants=3)
    started = time.perf_counter()
    result = measure_agreement(cases, tree_sitter=False, quiet=True)
    print(f"\n{result['cases']} cases in {time.perf_counter() - started:.1f} s: agreement {result['agreement']:.4%}; "
          f"{result['disagreements']}")
    assert result["reference_invalid"] >= 0.4 * result["cases"], "the damaged copies should mostly be syntax errors"
    assert set(result["by_kind"]) == {"original", *DAMAGE_KINDS}
    assert result["agreement"] >= 0.995, result["disagreements"]
    # the filter is at most stricter than the parser, never more lenient
    assert not [label for label in result["disagreements"] if label.startswith("filter keeps")], result["disagreements"]


# Four files that tree-sitter-python kept: indentation errors. (source, where CPython points)
INDENTATION_ERRORS = {
    "if_body": ("if x:\ny = 1\n", "line 2, column 1"),  # expected an indented block after 'if' statement on line 1
    "indent": ("x = 1\n    y = 2\n", "line 2, column 4"),  # unexpected indent
    "try_alone": ("try:\n    f()\ny = 1\n", "line 3, column 1"),  # expected 'except' or 'finally' block
    "def_body": ("def f():\n\ndef g():\n    pass\n", "line 3, column 1"),  # expected an indented block after def
}


@pytest.mark.parametrize("case", sorted(INDENTATION_ERRORS))
def test_indentation_errors_are_dropped(case):
    source, where = INDENTATION_ERRORS[case]
    assert not cpython_parser_accepts(source)
    result = check_syntax(source, "python")
    assert not result.ok and result.checked
    assert result.reason.startswith(f"syntax error at {where} ({CPYTHON}): "), result.reason
    tree = syntax._parser("python").parse(source.encode())
    assert not tree.root_node.has_error  # what the tree-sitter grammar made of it


def test_damage_kinds_plant_the_named_faults():
    import random

    text = "def f(a):\n    if a:\n        return [a,\n                1]\n    return None\n\n\nclass C:\n    x = f(1)\n"
    for kind in DAMAGE_KINDS:
        damaged = damage(text, kind, random.Random(0))
        assert damaged is not None and damaged != text, kind
        assert damaged == damage(text, kind, random.Random(0)), kind  # deterministic
    assert "\t" in damage(text, "tab_indent", random.Random(0))
    assert damage("x = 1\n", "empty_block", random.Random(0)) is None  # no block header: no place for it
    assert damage("x = 1\n\x0cy = 2\n", "delete_line", random.Random(1)).count("\x0c") in (0, 1)  # \f is no newline
    assert agreement_cases([("a.py", text)], variants=3) == agreement_cases([("a.py", text)], variants=3)


def test_by_design_differences_from_ast_parse():
    """Pinned classes of the module docstring: stricter than ast.parse by the symbol-table pass; code-generation
    errors pass as in ast.parse; Python 2 and syntax newer than the interpreter are dropped as CPython drops them."""
    symbol_table_errors = ["from __future__ import *\n", "def f(a, a):\n    pass\n", "nonlocal x\n",
                           "def f():\n    from os import *\n"]
    for source in symbol_table_errors:
        assert cpython_parser_accepts(source) and not check_syntax(source, "python").ok, source
    for source in ["return 1\n", "break\n", "await x\n", "x = 1\nfrom __future__ import annotations\n"]:
        assert cpython_parser_accepts(source) and check_syntax(source, "python").ok, source
    python2 = 'print "hello"\nexec "x = 1"\n'
    assert not check_syntax(python2, "python").ok
    assert syntax._parser("python").parse(python2.encode()).root_node.has_error is False  # the old filter kept it
    newer = "type Point = tuple[float, float]\n"  # PEP 695, Python 3.12
    assert check_syntax(newer, "python").ok == (sys.version_info >= (3, 12))
    dedent_in_brackets = "def f():\n    def g():\n        (bar.\n    baz)\n    return g\n"  # tree-sitter rejected it
    assert check_syntax(dedent_in_brackets, "python").ok


def test_python_reasons_and_pathological_files():
    source = 's = "üüü"; x = (\n'  # the column counts characters, not UTF-8 bytes
    assert check_syntax(source, "python").reason == f"syntax error at line 1, column 16 ({CPYTHON}): '(' was never closed"
    assert check_syntax("x = 1\0\n", "python") == SyntaxResult(
        False, True, f"syntax error ({CPYTHON}): source code string cannot contain null bytes")
    deep = check_syntax("x = " + "1+" * 20_000 + "1\n", "python")  # 40 kB: in this process
    assert deep == SyntaxResult(False, True, f"syntax error ({CPYTHON}): nested too deeply to compile (RecursionError: "
                                             "maximum recursion depth exceeded during compilation)")
    unary = check_syntax("x = " + "-" * 20_000 + "1\n", "python")
    assert not unary.ok and unary.checked
    assert unary.reason.startswith(f"syntax error ({CPYTHON}): too complex to parse (MemoryError"), unary.reason
    assert check_syntax("x = 1\n", "python").ok  # the interpreter is fine afterwards


def test_syntax_warnings_are_not_errors_even_under_w_error():
    source = 'x = "\\d"\ny = x is 1\nz = 1if x else 2\n'  # invalid escape, `is` with a literal, invalid decimal literal
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")  # what -W error does
        assert check_syntax(source, "python").ok
        with pytest.raises(SyntaxError):  # the filter matches the checked source's name only
            compile(source, "<other>", "exec")
    assert not caught
    command = [sys.executable, "-W", "error", "-c",
               f"from seedcoder.curate.syntax import check_syntax; assert check_syntax({source!r}, 'python').ok"]
    subprocess.run(command, check=True, cwd=syntax._PACKAGE_PARENT)


def test_large_python_files_are_checked_in_a_child_process(monkeypatch):
    calls = []
    real_run = subprocess.run

    def counting_run(*args, **kwargs):
        calls.append(args[0])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(syntax.subprocess, "run", counting_run)
    good = "def f(x):\n    return [x + i for i in range(10)]\n" * 10
    bad = good + "if x:\ny = 'ü'\n"
    assert check_syntax(good, "python").ok and check_syntax(bad, "python", timeout_s=None).checked
    assert not calls  # small files (and no time limit) stay in this process
    in_process = check_syntax(bad, "python", timeout_s=None)
    monkeypatch.setattr(syntax, "CPYTHON_IN_PROCESS_BYTES_PER_S", 1)  # every file is "large" now
    assert check_syntax(good, "python") == SyntaxResult(True, True)
    assert check_syntax(bad, "python") == in_process and not in_process.ok
    assert len(calls) == 2 and calls[0][:3] == [sys.executable, "-I", "-S"]


def test_child_process_crash_is_the_files_verdict_and_a_child_failure_is_loud(monkeypatch):
    monkeypatch.setattr(syntax, "CPYTHON_IN_PROCESS_BYTES_PER_S", 1)
    monkeypatch.setattr(syntax, "_CHILD_COMMAND", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert check_syntax("x = 1\n", "python") == SyntaxResult(
        False, True, f"syntax error ({CPYTHON}): the parser crashed on this file (signal 11, in a child process)")
    monkeypatch.setattr(syntax, "_CHILD_COMMAND", "raise ImportError('no seedcoder here')")
    with pytest.raises(RuntimeError, match=r"(?s)the CPython child process failed \(exit status 1\): .*no seedcoder here"):
        check_syntax("x = 1\n", "python")


def test_python_time_limit_kills_the_child_process():
    big = "def f(a, b):\n    return a + b\n" * 80_000  # 2.4 MB: well over a second of CPython parsing
    started = time.perf_counter()
    result = check_syntax(big, "python", timeout_s=0.05)
    elapsed = time.perf_counter() - started
    assert result == SyntaxResult(False, False, f"syntax check timed out after 0.05 s ({CPYTHON} in a child process, "
                                                f"{len(big)} bytes)")
    assert elapsed < 1.0, elapsed
    assert check_syntax("y = 2\n", "python", timeout_s=0.05).ok


GOOD_AND_BAD = {
    "c": (
        "#include <stdio.h>\nstatic int add(int a, int b) { return a + b; }\n"
        "int main(void) {\n    int xs[3] = {1, 2, 3};\n    printf(\"%d\\n\", add(xs[0], xs[2]));\n    return 0;\n}\n",
        "int main(void) {\n    int x = 1\n    return x;\n}\n",
        (2, None),
    ),
    "java": (
        "package a;\nimport java.util.List;\npublic class A {\n    private final List<String> names;\n"
        "    public A(List<String> names) { this.names = names; }\n"
        "    public int count() { return names.size(); }\n}\n",
        "public class A {\n    public int count() {\n        return names.size(;\n    }\n}\n",
        (3, None),
    ),
    "javascript": (
        "import { readFile } from 'fs/promises';\nexport async function load(path) {\n"
        "  const text = await readFile(path, 'utf8');\n  return text.split('\\n').map((line) => line.trim());\n}\n",
        "export function load(path) {\n  const lines = [1, 2, 3;\n  return lines;\n}\n",
        (2, None),
    ),
    "go": (
        "package main\n\nimport \"fmt\"\n\ntype Point struct{ X, Y int }\n\n"
        "func (p Point) Sum() int { return p.X + p.Y }\n\nfunc main() {\n\tfmt.Println(Point{1, 2}.Sum())\n}\n",
        "package main\n\nfunc main() {\n\tfor i := 0; i < 3; i++ {\n\t\tprintln(i)\n\t\n}\n",
        (None, None),
    ),
    "rust": (
        "use std::collections::HashMap;\n\nfn count(words: &[&str]) -> HashMap<&str, usize> {\n"
        "    let mut counts = HashMap::new();\n    for w in words {\n        *counts.entry(*w).or_insert(0) += 1;\n"
        "    }\n    counts\n}\n",
        "fn main() {\n    let x: i32 = ;\n    println!(\"{}\", x);\n}\n",
        (2, None),
    ),
}


@pytest.mark.parametrize("language", sorted(GOOD_AND_BAD))
def test_good_and_bad_snippets(language):
    good, bad, (bad_line, _) = GOOD_AND_BAD[language]
    assert check_syntax(good, language) == SyntaxResult(ok=True, checked=True, reason=None)
    result = check_syntax(bad, language)
    assert not result.ok and result.checked
    assert f"({syntax.grammars_for(language)[0]} grammar)" in result.reason
    if bad_line is not None:
        assert result.reason.startswith(f"syntax error at line {bad_line}, "), result.reason


def test_reason_names_line_and_character_column_of_the_first_error():
    # columns count characters, not UTF-8 bytes: the non-ASCII literal before the error must not shift them
    java = 'class A { String s = "ünïcödé"; int x = ; }\n'
    column = java.index("= ;") + 1
    assert check_syntax(java, "java").reason == f"syntax error at line 1, column {column} (java grammar): unexpected '= ; }}'"
    c_source = 'int f(void) {\n    const char *s = "ünï"; return 1 }\n'
    column = c_source.splitlines()[1].index(" }") + 1  # a missing token sits right after the token before it
    assert check_syntax(c_source, "c").reason == f"syntax error at line 2, column {column} (c grammar): missing ';'"
    python = 'x = [1,\n     2]\ny = (3 +\n'
    assert check_syntax(python, "python").reason == f"syntax error at line 3, column 5 ({CPYTHON}): '(' was never closed"


# One small valid program per checked language: every grammar must load and accept ordinary code.
HELLO = {
    "python": "def f(x):\n    return x + 1\n",
    "c": "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); return 0; }\n",
    "cpp": "#include <vector>\ntemplate <typename T> T add(T a, T b) { return a + b; }\n"
           "int main() { std::vector<int> v{1, 2}; return add(v[0], v[1]); }\n",
    "cuda": "__global__ void k(float* x) { x[threadIdx.x] = 0.0f; }\nvoid launch(float* x) { k<<<1, 32>>>(x); }\n",
    "csharp": "using System;\nclass A { static void Main() { Console.WriteLine(\"hi\"); } }\n",
    "objective_c": "#import <Foundation/Foundation.h>\n@interface A : NSObject\n- (int)f:(int)x;\n@end\n",
    "java": "public class A { public static void main(String[] args) { System.out.println(\"hi\"); } }\n",
    "kotlin": "fun main() { val x = listOf(1, 2); println(x.size) }\n",
    "scala": "object A { def main(args: Array[String]): Unit = println(\"hi\") }\n",
    "groovy": "def f(x) { x + 1 }\nprintln f(1)\n",
    "clojure": "(defn f [x] (+ x 1))\n(println (f 1))\n",
    "go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n",
    "rust": "fn main() { let v: Vec<i32> = vec![1, 2]; println!(\"{}\", v.len()); }\n",
    "zig": "const std = @import(\"std\");\npub fn main() void { std.debug.print(\"hi\\n\", .{}); }\n",
    "nim": "proc f(x: int): int = x + 1\necho f(1)\n",
    "swift": "func f(_ x: Int) -> Int { return x + 1 }\nprint(f(1))\n",
    "dart": "void main() { var x = [1, 2]; print(x.length); }\n",
    "javascript": "const f = (x) => x + 1;\nfunction g() { return <div>{f(1)}</div>; }\n",
    "typescript": "function f(x: number): number { return x + 1; }\nconst y = <number>f(1);\n",
    "tsx": "const A = (p: {n: number}) => <div>{p.n}</div>;\n",
    "php": "<?php\nfunction f($x) { return $x + 1; }\necho f(1);\n",
    "ruby": "def f(x)\n  x + 1\nend\nputs f(1)\n",
    "lua": "local function f(x) return x + 1 end\nprint(f(1))\n",
    "perl": "use strict;\nmy $x = 1;\nprint \"$x\\n\";\n",
    "r": "f <- function(x) { x + 1 }\nprint(f(1))\n",
    "julia": "function f(x)\n    return x + 1\nend\nprintln(f(1))\n",
    "shell": "#!/bin/bash\nfor f in *.txt; do\n  echo \"$f\"\ndone\n",
    "powershell": "function F($x) { return $x + 1 }\nWrite-Output (F 1)\n",
    "fortran": "program a\n  integer :: x\n  x = 1\n  print *, x\nend program a\n",
    "haskell": "module Main where\n\nmain :: IO ()\nmain = putStrLn \"hi\"\n",
    "ocaml": "let f x = x + 1\nlet () = print_int (f 1)\n",
    "fsharp": "let f x = x + 1\nprintfn \"%d\" (f 1)\n",
    "elixir": "defmodule A do\n  def f(x), do: x + 1\nend\n",
    "erlang": "-module(a).\n-export([f/1]).\nf(X) -> X + 1.\n",
    "lisp": "(defun f (x) (+ x 1))\n(print (f 1))\n",
    "scheme": "(define (f x) (+ x 1))\n(display (f 1))\n",
    "racket": "#lang racket\n(define (f x) (+ x 1))\n",
    "pascal": "program A;\nbegin\n  writeln('hi');\nend.\n",
    "cobol": "       IDENTIFICATION DIVISION.\n       PROGRAM-ID. A.\n       PROCEDURE DIVISION.\n           STOP RUN.\n",
    "solidity": "pragma solidity ^0.8.0;\ncontract A { function f(uint x) public pure returns (uint) { return x + 1; } }\n",
    "verilog": "module a(input x, output y);\n  assign y = ~x;\nendmodule\n",
    "vhdl": "entity a is\nend entity;\narchitecture rtl of a is\nbegin\nend architecture;\n",
    "matlab": "function y = f(x)\n  y = x + 1;\nend\n",
    "css": "body { color: red; }\n",
    "scss": "$c: red;\nbody { .a { color: $c; } }\n",
    "cmake": "cmake_minimum_required(VERSION 3.10)\nproject(a)\nadd_executable(a main.c)\n",
    "makefile": "all: a\n\na: a.c\n\tcc -o a a.c\n",
    "dockerfile": "FROM python:3.11\nRUN pip install x\nCMD [\"python\"]\n",
    "protobuf": "syntax = \"proto3\";\nmessage A { int32 x = 1; }\n",
    "graphql": "type Query { a: Int }\n",
}


def test_every_listed_grammar_loads_and_accepts_a_small_program():
    assert set(HELLO) == set(syntax.LANGUAGE_GRAMMARS) | {syntax.PYTHON}
    assert syntax.grammars_for("python") == ()  # CPython judges Python
    for language, program in HELLO.items():
        assert check_syntax(program, language) == SyntaxResult(ok=True, checked=True), language
        assert not check_syntax(program + "\n)}]) (( {{\n", language).ok, language
        for grammar in syntax.LANGUAGE_GRAMMARS.get(language, ()):
            assert syntax._parser(grammar).language is not None
    assert {"python", "cpp", "c", "java", "javascript", "typescript", "tsx", "go", "rust", "csharp", "php", "ruby",
            "kotlin", "swift", "scala", "shell", "bash"} <= syntax_languages()


# Languages ingest produces that this step deliberately leaves unchecked: data, prose, markup with embedded code,
# dialect-dependent grammars (sql, assembly) and those without a grammar in the pack.
DELIBERATELY_UNCHECKED = {
    "json", "yaml", "toml", "xml", "ini", "markdown", "restructuredtext", "tex", "text", "jupyter", "html", "vue",
    "svelte", "sql", "assembly", "batch", "visual_basic", "prolog", "unknown",
}


def test_language_names_and_grammars_agree_with_the_ingest_table():
    languages = pytest.importorskip("seedcoder.curate.languages")
    for language in sorted(languages.LANGUAGES):
        grammars = syntax.grammars_for(language)
        if language == syntax.PYTHON:
            assert check_syntax("x = 1\n", language).checked
        elif grammars:
            assert languages.grammar_name(language) == grammars[0], language
        else:
            assert language in DELIBERATELY_UNCHECKED, f"ingest produces {language!r}: check it or list it here"


def test_aliases_and_unchecked_languages():
    assert check_syntax("echo hi\nif [ -f x ]; then echo y; fi\n", "bash").checked
    assert check_syntax("x = 1\n", " Py ").checked and not check_syntax("if x:\ny = 1\n", "PY").ok
    assert check_syntax("echo hi\n", "Shell").checked  # names are case-insensitive
    for language in ("json", "markdown", "text", "unknown", "sql", "html", "no-such-language"):
        result = check_syntax("{{{ not code at all", language)
        assert result.ok and not result.checked and language in result.reason
    assert check_syntax("anything", None).ok  # a null language is "unknown"


def test_fallback_grammars():
    cpp_header = "namespace v {\ntemplate <typename T> class Vec { T* data; };\n}\n"
    assert check_syntax(cpp_header, "c").ok  # a .h file labelled C that is C++
    jsx_in_ts = "const A = (p: { n: number }) => <div>{p.n}</div>;\n"
    assert check_syntax(jsx_in_ts, "typescript").ok
    assert not check_syntax("int main( { }\n", "c").ok


def test_bad_text_and_bom():
    assert check_syntax(None, "python") == SyntaxResult(False, False, "text is NoneType, not a string")
    assert check_syntax(b"x = 1\n", "python").reason == "text is bytes, not a string"
    assert check_syntax("\ufeffx = 1\n", "python").ok
    assert check_syntax("x = '\udcff'\n", "python").ok  # a lone surrogate (surrogateescape text) does not crash
    assert check_syntax("", "python").ok
    with pytest.raises(ValueError, match="timeout_s"):
        check_syntax("x = 1\n", "python", timeout_s=0)


def test_parse_time_limit_gives_a_reason_and_leaves_the_parser_usable():
    unit = "function f(x) {\n  return [1, 2, 3].map((i) => x + i);\n}\n"
    big = unit * 60_000  # ~3.2 MB: tenths of a second to parse here
    started = time.perf_counter()
    result = check_syntax(big, "javascript", timeout_s=0.02)
    elapsed = time.perf_counter() - started
    assert not result.ok and not result.checked
    assert re.fullmatch(r"syntax check timed out after 0\.02 s \(javascript grammar, at byte \d+ of \d+\)", result.reason)
    assert elapsed < 0.3, elapsed
    # the cancelled parse must not leak into the next file
    assert check_syntax("let y = 2;\n", "javascript").ok
    assert check_syntax("let y = (;\n", "javascript").reason.startswith("syntax error")
    assert check_syntax(unit * 4000, "javascript", timeout_s=None).ok


def test_parsers_are_per_thread():
    results, errors = [], []

    def work(seed: int):
        try:
            for i in range(50):
                good = check_syntax(f"def f{seed}_{i}(x):\n    return x * {i}\n", "python").ok
                bad = check_syntax(f"def f{seed}_{i}(x:\n    return x\n", "python").ok
                results.append((good, bad))
        except Exception as error:  # pragma: no cover - surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 200 and all(good and not bad for good, bad in results)


def test_benchmark_reports_both_rates_and_a_verdict():
    from benchmarks.curate_syntax import TARGET_RATIO, bench_syntax_filter, format_agreement_report, format_report

    documents = [("python", HELLO["python"] * 200), ("rust", HELLO["rust"] * 100), ("python", "def f(:\n"),
                 ("json", "{}")]
    result = bench_syntax_filter(documents, repeats=2, quiet=True)
    assert result["files"] == 3 and result["skipped_unchecked_language"] == 1 and result["dropped_by_filter"] == 1
    assert result["bytes"] == sum(len(text.encode()) for language, text in documents if language != "json")
    assert result["bare_mb_s"] > 0 and result["filter_mb_s"] > 0 and result["tree_sitter_python_mb_s"] > 0
    assert result["python_files_in_child_process"] == 0
    assert result["ratio"] == pytest.approx(result["filter_mb_s"] / result["bare_mb_s"])
    assert result["verdict"] == ("PASS" if result["ratio"] >= TARGET_RATIO else "MISS")
    report = format_report(result)
    assert result["formula"] in report and result["verdict"] in report
    with pytest.raises(ValueError, match="no document has a checked language"):
        bench_syntax_filter([("json", "{}")], quiet=True)
    cases = [("a.py", "original", "x = 1\n"), ("a.py", "unexpected_indent", "    x = 1\n"),
             ("b.py", "original", "from __future__ import *\n")]
    agreement = measure_agreement(cases, quiet=True)
    assert agreement["agreement"] == pytest.approx(2 / 3) and agreement["verdict"] == "MISS"
    assert agreement["tree_sitter_agreement"] == pytest.approx(1 / 3)  # it keeps the indented line, drops the star
    assert agreement["disagreements"] == {
        "filter drops, parser accepts: future feature * is not defined": {"count": 1, "examples": ["b.py (original)"]}}
    report = format_agreement_report(agreement)
    assert "66.6667% -> MISS" in report and "future feature * is not defined | 1 | b.py (original)" in report


def test_other_languages_are_compared_with_an_offline_parser(monkeypatch):
    import shutil

    from benchmarks import curate_syntax

    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    scripts = [("ok.sh", "if [ -f x ]; then\n  echo \"$1\"\nfi\n"), ("posix.sh", "for i do\n  echo \"$i\"\ndone\n")]
    monkeypatch.setattr(curate_syntax, "OTHER_LANGUAGES", {
        "shell": ("bash -n", "bash", lambda: scripts, curate_syntax.bash_accepts),
        "cobol": ("no such parser", "no-such-command-here", lambda: [], None),
    })
    assert curate_syntax.bash_accepts(["echo hi\n", "if true; then echo\n"]) == [True, False]
    shell, cobol = curate_syntax.measure_other_languages(max_files=10, variants=2, quiet=True)
    assert cobol == {"language": "cobol", "reference": "no such parser", "skip": "no-such-command-here is not installed"}
    assert shell["files"] == 2 and shell["cases"] == 6 and shell["reference_valid"] >= 2
    # POSIX `for i do` (no `in` list): valid for bash, an error for tree-sitter-bash, a known gap of the grammar
    drops = shell["disagreements"]["filter drops, reference accepts"]
    assert "posix.sh (original)" in drops["examples"]
    assert shell["agreement"] == pytest.approx(1 - sum(entry["count"] for entry in shell["disagreements"].values()) / 6)
    assert "| shell | bash -n | 2 | 6 (" in curate_syntax.format_other_languages_report([shell, cobol])
