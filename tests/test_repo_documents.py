"""Repository documents (seedcoder.curate.repo_documents): dependency order, cycles, splitting, bad input."""

import hashlib

import pytest

from seedcoder.curate.errors import CurateInputError
from seedcoder.curate.repo_documents import dependency_order, file_dependencies, main_language, repository_documents

PYTHON_PACKAGE = [
    ("zeta.txt", "text", "notes\n"),
    ("main.py", "python", "from pkg import core\n\ncore.run()\n"),
    ("pkg/models.py", "python", "from pkg.core import Base\n\n\nclass Model(Base):\n    pass\n"),
    ("pkg/core.py", "python",
     "from .util import helper\nfrom . import models  # a cycle: models imports core\n\n\nclass Base:\n    pass\n"),
    ("pkg/util.py", "python", "import os\n\n\ndef helper():\n    return os.sep\n"),
    ("pkg/__init__.py", "python", "from .core import Base\n"),
    ("README.md", "markdown", "# demo\n" * 50),
]


def _assert_dependencies_first(order, dependencies):
    """Every edge points backwards, except inside a cycle (which must then be in path order)."""
    position = {path: index for index, path in enumerate(order)}
    for path, targets in dependencies.items():
        for target in targets:
            if position[target] > position[path]:  # allowed only when target also reaches path (a cycle)
                assert _reaches(target, path, dependencies), (path, target)


def _reaches(source, goal, dependencies):
    seen, stack = set(), [source]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(dependencies.get(node, ()))
    return False


def test_python_imports_with_a_cycle():
    dependencies = file_dependencies(PYTHON_PACKAGE)
    assert dependencies["main.py"] == {"pkg/__init__.py", "pkg/core.py"}
    assert dependencies["pkg/core.py"] == {"pkg/util.py", "pkg/__init__.py", "pkg/models.py"}
    assert dependencies["pkg/models.py"] == {"pkg/core.py"}
    assert dependencies["pkg/util.py"] == set()  # os is not in the repository
    rows = repository_documents("owner/demo", PYTHON_PACKAGE)
    assert len(rows) == 1
    order = rows[0]["file_paths"]
    # README and util need nothing; the cycle {__init__, core, models} comes in path order; main needs the cycle
    assert order == ["README.md", "pkg/util.py", "pkg/__init__.py", "pkg/core.py", "pkg/models.py", "main.py",
                     "zeta.txt"]
    _assert_dependencies_first(order, dependencies)
    assert repository_documents("owner/demo", list(reversed(PYTHON_PACKAGE))) == rows  # input order does not matter


def test_python_roots_relative_imports_and_the_standard_library():
    files = [
        ("src/mylib/__init__.py", "python", ""),
        ("src/mylib/core.py", "python", "from . import json\nfrom .sub.deep import thing\n"),
        ("src/mylib/json.py", "python", "import json  # the standard library's, from inside the package\n"),
        ("src/mylib/sub/__init__.py", "python", ""),
        ("src/mylib/sub/deep.py", "python", "from ..core import x\nfrom ... import outside\nimport mylib.json\n"),
        ("tests/test_core.py", "python", "import json\nfrom mylib import core, sub\nimport helpers\n"),
        ("tests/helpers.py", "python", "import os, sys as system\n"),
        ("tools/helpers.py", "python", "print('another helpers module')\n"),
        ("legacy.py", "python",
         "print 'python 2'\nimport tools.helpers\nfrom mylib.core import (\n    a,  # comment\n    b)\n"),
    ]
    dependencies = file_dependencies(files)
    assert dependencies["src/mylib/core.py"] == {"src/mylib/__init__.py", "src/mylib/json.py", "src/mylib/sub/deep.py"}
    # `import json` resolves to a repository file only under a root that contains the importer: from
    # src/mylib/json.py that is the file itself (dropped); from tests/ it is the standard library (nothing)
    assert dependencies["src/mylib/json.py"] == set()
    assert dependencies["src/mylib/sub/deep.py"] == {"src/mylib/core.py", "src/mylib/json.py"}
    assert dependencies["tests/test_core.py"] == {"src/mylib/__init__.py", "src/mylib/core.py",
                                                  "src/mylib/sub/__init__.py", "tests/helpers.py"}
    assert dependencies["legacy.py"] == {"tools/helpers.py", "src/mylib/core.py"}  # regex reads Python 2 files


def test_java_imports_and_same_package_classes():
    root = "src/main/java/com/example"
    files = [
        (f"{root}/app/Main.java", "java",
         "package com.example.app;\n\nimport com.example.util.Strings;\nimport static com.example.util.Numbers.max;\n"
         "import com.example.model.*;\nimport java.util.List;\n\npublic class Main { Helper h; }\n"),
        (f"{root}/app/Helper.java", "java", "package com.example.app;\n\nclass Helper { Main unusedBackReference; }\n"),
        (f"{root}/util/Strings.java", "java", "package com.example.util;\n\npublic class Strings {}\n"),
        (f"{root}/util/Numbers.java", "java", "package com.example.util;\n\npublic class Numbers {}\n"),
        (f"{root}/model/User.java", "java", "package com.example.model;\n\npublic class User {}\n"),
        (f"{root}/model/Group.java", "java",
         "package com.example.model;\n\nimport com.example.model.User.Inner;\n\npublic class Group { User u; }\n"),
    ]
    dependencies = file_dependencies(files)
    assert dependencies[f"{root}/app/Main.java"] == {
        f"{root}/util/Strings.java", f"{root}/util/Numbers.java", f"{root}/model/User.java",
        f"{root}/model/Group.java", f"{root}/app/Helper.java"}
    assert dependencies[f"{root}/model/Group.java"] == {f"{root}/model/User.java"}  # nested class -> its file
    order = repository_documents("java", files)[0]["file_paths"]
    assert order.index(f"{root}/model/User.java") < order.index(f"{root}/model/Group.java") < order.index(
        f"{root}/app/Helper.java")  # Helper and Main use each other: a cycle, in path order
    assert order.index(f"{root}/app/Helper.java") < order.index(f"{root}/app/Main.java")
    _assert_dependencies_first(order, dependencies)


def test_c_and_cpp_includes():
    files = [
        ("src/main.c", "c", '#include <stdio.h>\n#include "util.h"\n#include "lib/math.h"\nint main(void) {}\n'),
        ("src/util.h", "c", '#pragma once\n#include "../include/lib/math.h"\nint util(void);\n'),
        ("src/util.c", "c", '#include "util.h"\n'),
        ("include/lib/math.h", "c", "int add(int, int);\n"),
        ("include/a.hpp", "cpp", '#ifndef A\n#define A\n#include "b.hpp"\n#endif\n'),
        ("include/b.hpp", "cpp", '#ifndef B\n#define B\n#include "a.hpp"\n#endif\n'),
        ("src/app.cpp", "cpp", '  #  include "b.hpp"\n#include "missing.h"\n#include "tables.def"\n'),
        ("src/tables.def", "unknown", "X(1)\n"),
        ("Makefile", "makefile", "all:\n\tcc src/main.c\n"),
    ]
    dependencies = file_dependencies(files)
    assert dependencies["src/main.c"] == {"src/util.h", "include/lib/math.h"}
    assert dependencies["src/util.h"] == {"include/lib/math.h"}
    assert dependencies["src/app.cpp"] == {"include/b.hpp", "src/tables.def"}
    order = repository_documents("c", files)[0]["file_paths"]
    # the header cycle a.hpp <-> b.hpp in path order; app.cpp waits for tables.def, main.c and util.c for util.h
    assert order == ["Makefile", "include/a.hpp", "include/b.hpp", "include/lib/math.h", "src/tables.def",
                     "src/app.cpp", "src/util.h", "src/main.c", "src/util.c"]
    _assert_dependencies_first(order, dependencies)


def test_dependency_order_is_path_order_without_edges_and_breaks_cycles_deterministically():
    paths = ["b", "a", "d", "c"]
    assert dependency_order(paths, {}) == ["a", "b", "c", "d"]
    assert dependency_order(paths, {"a": {"d"}}) == ["b", "c", "d", "a"]
    cycle = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert dependency_order(paths, cycle) == ["a", "b", "c", "d"]
    assert dependency_order(list(reversed(paths)), cycle) == ["a", "b", "c", "d"]
    chain = [f"m{index:04d}" for index in range(3000)]  # deep graph: no recursion limit
    deep = {chain[index]: {chain[index + 1]} for index in range(len(chain) - 1)}
    assert dependency_order(chain, deep) == list(reversed(chain))


def test_text_format_and_row_columns():
    rows = repository_documents("owner/demo", PYTHON_PACKAGE[:3])
    (row,) = rows
    # without pkg/core.py the imports resolve to nothing: path order
    assert row["text"] == ("<repository> owner/demo\n<file> main.py\n" + PYTHON_PACKAGE[1][2]
                           + "<file> pkg/models.py\n" + PYTHON_PACKAGE[2][2] + "<file> zeta.txt\nnotes\n")
    assert (row["repo"], row["path"], row["part"], row["source"], row["language"]) == (
        "owner/demo", "<part 0>", 0, "repo", "python")
    assert row["id"] == hashlib.sha256(b"owner/demo\n<part 0>").hexdigest()
    no_newline = repository_documents("r", [("a.py", "python", "x = 1"), ("b.py", "python", "")])[0]["text"]
    assert no_newline == "<repository> r\n<file> a.py\nx = 1\n<file> b.py\n"


def test_splitting_into_parts():
    files = [(f"mod_{index}.py", "python", f"VALUE_{index} = {index}\n" * 8) for index in range(10)]
    files.append(("huge.py", "python", "".join(f"line_{number} = {number}\n" for number in range(200))))
    rows = repository_documents("split", files, max_chars=400)
    assert [row["part"] for row in rows] == list(range(len(rows))) and len(rows) > 3
    assert [row["path"] for row in rows] == [f"<part {number}>" for number in range(len(rows))]
    assert len({row["id"] for row in rows}) == len(rows)
    assert [path for row in rows for path in row["file_paths"]] == sorted(path for path, _, _ in files)
    for row in rows:
        assert len(row["text"]) <= 400
        assert row["text"].startswith("<repository> split\n")
        assert [line[len("<file> "):] for line in row["text"].splitlines() if line.startswith("<file> ")] == \
            row["file_paths"]
    (huge_part,) = [row for row in rows if "huge.py" in row["file_paths"]]
    assert huge_part["file_paths"] == ["huge.py"]  # its own part, cut at a line boundary
    assert huge_part["text"].endswith("\n") and huge_part["text"].splitlines()[-1].startswith("line_")
    others = [row for row in rows if row is not huge_part]
    for row in others:  # the small files are whole and packed: the next file would not have fit
        for path in row["file_paths"]:
            assert dict((p, t) for p, _, t in files)[path] in row["text"]
    for previous, following in zip(others, others[1:]):
        first_block = len(f"<file> {following['file_paths'][0]}\n") + len(files[0][2])
        assert len(previous["text"]) + first_block > 400


def test_main_language():
    files = [("a.py", "python", "x" * 10), ("b.go", "go", "x" * 20), ("README.md", "markdown", "x" * 99)]
    assert main_language(files) == "go"  # markdown is not code
    assert main_language([("a.py", "python", "x" * 10), ("b.go", "go", "x" * 10)]) == "go"  # tie: name order
    assert main_language([("R.md", "markdown", "x"), ("c.json", "json", "xx")]) == "json"
    assert main_language([("blob", "unknown", "x")]) == "unknown"
    assert repository_documents("r", [("R.md", "markdown", "# r\n")])[0]["language"] == "markdown"


def test_bad_input_gets_a_clear_error():
    assert repository_documents("empty", []) == []
    with pytest.raises(CurateInputError, match="'a.py' appears twice"):
        repository_documents("dup", [("a.py", "python", ""), ("a.py", "python", "x")])
    with pytest.raises(CurateInputError, match="must be .path, language, text. strings"):
        repository_documents("bytes", [("a.py", "python", b"x = 1\n")])
    with pytest.raises(CurateInputError, match="'../a.py' is not a relative posix path"):
        repository_documents("escape", [("../a.py", "python", "")])
    with pytest.raises(ValueError, match="max_chars"):
        repository_documents("small", [("a.py", "python", "")], max_chars=10)
