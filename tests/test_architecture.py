"""The import graph of our code, read statically (ast; nothing is imported): no cycles among module-level imports,
and no function-local import of our own modules outside an explicit allow-list that may only shrink.

A function-local import of one of our modules hides a dependency (and usually a cycle) from the reader and from
this test. The only good reason for one is a heavy or optional third-party package that module pulls in at import
time and that the importing module's users must not pay for; those are the `ALLOWED_LOCAL` entries, each with
its reason.
"""

from __future__ import annotations

import ast
import functools
import os
from collections.abc import Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# importer -> {imported}: function-local imports of our own modules that are allowed, and why. Remove an entry
# when the import moves to the top of its module; the test fails on an entry that no longer occurs.
ALLOWED_LOCAL: dict[str, set[str]] = {
    # `seedcoder --help` and a command's argument errors stay fast: torch is imported by the command that runs
    "seedcoder.cli": {"seedcoder.curate.pipeline", "seedcoder.data.build", "seedcoder.data.shard_inspect",
                      "seedcoder.data.shards", "seedcoder.evaluation.cli", "seedcoder.hf_convert",
                      "seedcoder.posttrain.dpo", "seedcoder.posttrain.grpo", "seedcoder.posttrain.sft", "seedcoder.serve",
                      "seedcoder.experiments.filter_ablation", "seedcoder.experiments.self_curation",
                      "seedcoder.plan", "seedcoder.train"},
    "seedcoder.serve": {"seedcoder.generate", "seedcoder.hf_convert", "seedcoder.sampling"},
    # `seedcoder eval` against an HTTP endpoint or with references needs no torch
    "seedcoder.evaluation.generators": {"seedcoder.generate", "seedcoder.sampling"},
    # `seedcoder curate` runs its other steps without torch
    "seedcoder.curate.score": {"seedcoder.curate.scorer", "seedcoder.curate.scorer_train"},
    # ... and so does the log-prob oracle against an endpoint; only its checkpoint path loads a model
    "seedcoder.curate.logprob_oracle": {"seedcoder.checkpoint", "seedcoder.model"},
    # ... and the SFT synthesis against an endpoint; only the generator's engine backend loads a model
    "seedcoder.curate.chat_generator": {"seedcoder.generate", "seedcoder.sampling"},
    # compiled extensions that a checkout may not have built: their users fall back without them
    "seedcoder.data.loader": {"seedcoder._C"},
    "seedcoder.kernels._cuda_ext": {"seedcoder._cuda"},
    # the config stays torch-free (curation and `seedcoder --help` read configs); the model's presets need torch
    "seedcoder.train_config": {"seedcoder.model"},
}

# compiled extensions, built by setup.py from csrc/ (present or not in a checkout): leaves of the graph
EXTENSIONS = {"seedcoder._C", "seedcoder._cuda", "seedcoder._minhash", "seedcoder._webtext"}


def module_files() -> dict[str, str]:
    """{dotted module name: path} for seedcoder/ and kernels/ (imported as seedcoder.kernels.*)."""
    files = {}
    for top, package in (("seedcoder", "seedcoder"), ("kernels", "seedcoder.kernels")):
        root = os.path.join(REPO, top)
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            for name in sorted(names):
                if not name.endswith(".py"):
                    continue
                relative = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
                if relative[-1] == "__init__":
                    relative = relative[:-1]
                files[".".join([package, *relative])] = os.path.join(folder, name)
    return files


def _walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
    """(import node, inside a function) for every import under `node`; `if TYPE_CHECKING:` blocks are skipped."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for orelse in child.orelse:
                yield from _walk_one(orelse, in_function)
            continue
        yield from _walk_one(child, in_function)


def _walk_one(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, in_function
        return
    yield from _walk(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """Our modules an import statement loads (the deepest known module each name resolves to)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            parts = module.split(".")
            base = parts if is_package else parts[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module and not module.startswith(name + "."):  # a parent package is already loading
            yield name


@functools.cache  # parsed once for the whole file
def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({module: our modules it imports at module level}, {module: our modules it imports inside functions})."""
    files = module_files()
    known = set(files) | EXTENSIONS
    top: dict[str, set[str]] = {name: set() for name in files}
    local: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        with open(path, encoding="utf-8") as file:
            tree = ast.parse(file.read(), path)
        is_package = path.endswith("__init__.py")
        for node, in_function in _walk(tree, False):
            for target in _targets(node, name, is_package, known):
                (local if in_function else top)[name].add(target)
    # importing a.b.c runs a/__init__ and a/b/__init__ first
    for name in files:
        for target in list(top[name]):
            parent = target.rpartition(".")[0]
            while parent and parent != name and not name.startswith(parent + "."):
                top[name].add(parent)
                parent = parent.rpartition(".")[0]
    return top, local


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles():
    top, _ = import_graph()
    assert find_cycles(top) == []


def test_no_function_local_imports_of_our_modules():
    _, local = import_graph()
    found = {name: targets for name, targets in local.items() if targets}
    unexpected = {name: sorted(targets - ALLOWED_LOCAL.get(name, set())) for name, targets in found.items()}
    unexpected = {name: targets for name, targets in unexpected.items() if targets}
    assert unexpected == {}, "import these at the top of the module (or justify them in ALLOWED_LOCAL)"
    stale = {name: sorted(targets - found.get(name, set())) for name, targets in ALLOWED_LOCAL.items()}
    assert {name: targets for name, targets in stale.items() if targets} == {}, "remove these from ALLOWED_LOCAL"


def test_the_graph_sees_our_imports():
    """The analysis itself: known edges of the tree are found (a broken resolver would pass the tests above)."""
    top, _ = import_graph()
    assert "seedcoder.checkpoint" in top["seedcoder.train"]
    assert "seedcoder.kernels.rms_norm" in top["seedcoder.kernels"]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_allow_list_reasons_hold():
    """The reasons given above: these modules import no torch (so `seedcoder --help`, curation steps other than the
    scorer, configs and `seedcoder eval` against an endpoint start without it)."""
    import subprocess
    import sys

    light = ["seedcoder.cli", "seedcoder.config", "seedcoder.train_config", "seedcoder.curate.pipeline",
             "seedcoder.curate.score", "seedcoder.evaluation.cli", "seedcoder.serve"]
    code = f"import sys\nfor m in {light!r}: __import__(m)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "False"
