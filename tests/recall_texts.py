"""Real texts for the recall tests (fastText classifier, web recall), read from what every checkout has.

Code-related: docstrings of the Python standard library (prose about code: what a function takes and returns,
with its identifiers) and the source of its functions. Not code-related: the licence texts Debian ships in
/usr/share/common-licenses, the licence files of the installed packages (site-packages/*.dist-info) and Python's
own LICENSE.txt (the history of Python and its licences: prose that names Python but is not about code).
"""

from __future__ import annotations

import ast
import functools
import glob
import os
import re
import sysconfig

STDLIB = sysconfig.get_paths()["stdlib"]
PURELIB = sysconfig.get_paths()["purelib"]


@functools.cache
def stdlib_docs_and_code(modules: int = 60) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(docstrings of >= 200 characters, function sources of 300-3000 characters) of the first `modules`
    top-level standard library modules of at most 60 kB, in name order."""
    docs, code = [], []
    paths = [path for path in sorted(glob.glob(os.path.join(STDLIB, "*.py"))) if os.path.getsize(path) <= 60_000]
    for path in paths[:modules]:
        with open(path, encoding="utf-8") as file:
            source = file.read()
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        lines = source.splitlines(keepends=True)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200:
                    docs.append(doc)
            if isinstance(node, ast.FunctionDef):
                segment = "".join(lines[node.lineno - 1 : node.end_lineno])  # its whole lines
                if 300 <= len(segment) <= 3000:
                    code.append(segment)
    return tuple(dict.fromkeys(docs)), tuple(dict.fromkeys(code))


@functools.cache
def licence_paragraphs(min_chars: int = 200) -> tuple[str, ...]:
    """Paragraphs of licence texts (each file once, each paragraph once), in path order."""
    paths = sorted(glob.glob("/usr/share/common-licenses/*"))
    paths += sorted(glob.glob(os.path.join(PURELIB, "*.dist-info", "LICEN[CS]E*")))
    paths += sorted(glob.glob(os.path.join(PURELIB, "*.dist-info", "licenses", "*")))
    paths.append(os.path.join(STDLIB, "LICENSE.txt"))
    seen, paragraphs = set(), []
    for path in paths:
        real = os.path.realpath(path)
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        try:
            with open(real, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError):
            continue
        for paragraph in re.split(r"\n\s*\n", text):
            paragraph = paragraph.strip()
            if len(paragraph) >= min_chars:
                paragraphs.append(paragraph)
    return tuple(dict.fromkeys(paragraphs))
