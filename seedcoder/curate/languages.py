"""Language of a source file from its name (extension, well-known file names) and, for a few cases, its first bytes.

    language_of("src/main.rs")                        # "rust"
    language_of("Dockerfile")                         # "dockerfile"
    language_of("bin/tool", head=b"#!/usr/bin/env python3\n")   # "python" (shebang)
    language_of("include/vec.h", head=b"namespace v { class A; }")  # "cpp" (.h is C unless it looks like C++/ObjC)
    grammar_name("shell")                             # "bash": the tree-sitter-language-pack grammar for it

Names are the lower-case names of `seedcoder.data.shards.Language` (so every name here is accepted by the shard
writer; the test checks it). Where tree-sitter-language-pack names a grammar differently (shell -> bash,
objective_c -> objc, makefile -> make, assembly -> asm, protobuf -> proto, restructuredtext -> rst, tex -> latex,
lisp -> commonlisp), `grammar_name` maps ours to the grammar's; .tsx files use the `tsx` grammar. Languages
without a grammar in the pack (visual_basic, prolog, batch, jupyter, text, unknown) map to None. Files whose
language is not known get "unknown".
"""

from __future__ import annotations

import os
import re

# Extension (lower case, with the dot) -> language. Every main language of the Seed-Coder paper and then some.
EXTENSION_LANGUAGES: dict[str, str] = {
    # Python
    ".py": "python", ".pyi": "python", ".pyw": "python", ".pyx": "python", ".pxd": "python",
    # C family
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".h++": "cpp", ".ipp": "cpp", ".tpp": "cpp", ".inl": "cpp",
    ".cu": "cuda", ".cuh": "cuda",
    ".cs": "csharp", ".csx": "csharp",
    ".m": "objective_c", ".mm": "objective_c",
    # JVM
    ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala", ".sc": "scala", ".groovy": "groovy",
    ".gradle": "groovy", ".clj": "clojure", ".cljs": "clojure", ".cljc": "clojure", ".edn": "clojure",
    # systems
    ".go": "go", ".rs": "rust", ".zig": "zig", ".nim": "nim", ".swift": "swift", ".dart": "dart",
    # web
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".php": "php", ".phtml": "php", ".html": "html", ".htm": "html", ".xhtml": "html", ".css": "css",
    ".scss": "scss", ".vue": "vue", ".svelte": "svelte",
    # scripting
    ".rb": "ruby", ".rake": "ruby", ".gemspec": "ruby", ".lua": "lua", ".pl": "perl", ".pm": "perl", ".t": "perl",
    ".r": "r", ".jl": "julia", ".sh": "shell", ".bash": "shell", ".zsh": "shell", ".ksh": "shell",
    ".ps1": "powershell", ".psm1": "powershell", ".bat": "batch", ".cmd": "batch",
    # scientific and functional
    ".f": "fortran", ".for": "fortran", ".f77": "fortran", ".f90": "fortran", ".f95": "fortran", ".f03": "fortran",
    ".f08": "fortran", ".hs": "haskell", ".lhs": "haskell", ".ml": "ocaml", ".mli": "ocaml", ".fs": "fsharp",
    ".fsi": "fsharp", ".fsx": "fsharp", ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".hrl": "erlang",
    ".lisp": "lisp", ".lsp": "lisp", ".cl": "lisp", ".el": "lisp", ".vb": "visual_basic", ".bas": "visual_basic",
    ".pas": "pascal", ".pp": "pascal", ".cob": "cobol", ".cbl": "cobol", ".pro": "prolog",
    # hardware, chain, low level
    ".sol": "solidity", ".s": "assembly", ".asm": "assembly", ".v": "verilog", ".sv": "verilog", ".svh": "verilog",
    ".vhd": "vhdl", ".vhdl": "vhdl",
    # data, config, docs
    ".sql": "sql", ".md": "markdown", ".markdown": "markdown", ".rst": "restructuredtext", ".tex": "tex",
    ".json": "json", ".jsonl": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".xml": "xml",
    ".xsd": "xml", ".xsl": "xml", ".svg": "xml", ".ini": "ini", ".cfg": "ini", ".proto": "protobuf",
    ".graphql": "graphql", ".gql": "graphql", ".cmake": "cmake", ".mk": "makefile", ".mak": "makefile",
    ".dockerfile": "dockerfile", ".ipynb": "jupyter", ".txt": "text",
}

# Exact file names (no useful extension) -> language.
FILENAME_LANGUAGES: dict[str, str] = {
    "makefile": "makefile", "gnumakefile": "makefile", "dockerfile": "dockerfile", "containerfile": "dockerfile",
    "cmakelists.txt": "cmake", "rakefile": "ruby", "gemfile": "ruby", "podfile": "ruby", "vagrantfile": "ruby",
    "jenkinsfile": "groovy", ".bashrc": "shell", ".bash_profile": "shell", ".zshrc": "shell", ".profile": "shell",
    "build.gradle": "groovy", "pipfile": "toml", "cargo.lock": "toml",
}

# Interpreter named on a `#!` line -> language (for files without an extension).
SHEBANG_LANGUAGES: dict[str, str] = {
    "python": "python", "python2": "python", "python3": "python", "sh": "shell", "bash": "shell", "zsh": "shell",
    "ksh": "shell", "dash": "shell", "node": "javascript", "deno": "typescript", "ruby": "ruby", "perl": "perl",
    "php": "php", "lua": "lua", "rscript": "r", "julia": "julia", "pwsh": "powershell", "groovy": "groovy",
}

# Our names whose tree-sitter-language-pack grammar has another name; None: the pack has no grammar.
_GRAMMAR_RENAMES: dict[str, str | None] = {
    "shell": "bash", "objective_c": "objc", "makefile": "make", "assembly": "asm", "protobuf": "proto",
    "restructuredtext": "rst", "tex": "latex", "lisp": "commonlisp", "visual_basic": None, "prolog": None,
    "batch": None, "jupyter": None, "text": None, "unknown": None,
}

LANGUAGES: frozenset[str] = frozenset(
    [*EXTENSION_LANGUAGES.values(), *FILENAME_LANGUAGES.values(), *SHEBANG_LANGUAGES.values(), "matlab", "unknown"]
)

_SHEBANG = re.compile(rb"^#!\s*(\S+)(?:[ \t]+(\S+))?")
_CPP_HEADER = re.compile(
    rb"\b(class|namespace|constexpr|nullptr)\b|template\s*<|\b(public|private|protected)\s*:|std::|#include\s*<[a-z_]+>"
)
_OBJC_MARKERS = re.compile(rb"@(interface|implementation|protocol|end)\b|#import\b")
_MATLAB_MARKERS = re.compile(rb"^\s*(%|function\b|end\s*$)", re.MULTILINE)


def _from_shebang(head: bytes) -> str | None:
    match = _SHEBANG.match(head)
    if not match:
        return None
    program = os.path.basename(match.group(1).decode("latin-1"))
    if program == "env" and match.group(2):  # "#!/usr/bin/env python3"
        program = match.group(2).decode("latin-1")
    program = re.sub(r"[\d.]+$", "", program.lower()) or program.lower()  # python3.11 -> python
    return SHEBANG_LANGUAGES.get(program) or SHEBANG_LANGUAGES.get(program + "3")


def language_of(path: str, head: bytes | str | None = None) -> str:
    """The language name of `path` ("unknown" if none); `head`, the file's first bytes, settles .h, .m and shebangs."""
    name = os.path.basename(path)
    lower = name.lower()
    if lower in FILENAME_LANGUAGES:
        return FILENAME_LANGUAGES[lower]
    if lower.startswith("dockerfile.") or lower.endswith(".dockerfile"):
        return "dockerfile"
    if lower.startswith("makefile."):
        return "makefile"
    extension = os.path.splitext(lower)[1]
    language = EXTENSION_LANGUAGES.get(extension)
    if isinstance(head, str):
        head = head[:4096].encode("utf-8", "replace")
    if head is not None:
        head = head[:4096]
        if extension == ".h":
            if _OBJC_MARKERS.search(head):
                return "objective_c"
            if _CPP_HEADER.search(head):
                return "cpp"
        elif extension == ".m" and not _OBJC_MARKERS.search(head) and _MATLAB_MARKERS.search(head):
            return "matlab"
        elif language is None and head.startswith(b"#!"):
            return _from_shebang(head) or "unknown"
    return language or "unknown"


def grammar_name(language: str, path: str | None = None) -> str | None:
    """The tree-sitter-language-pack grammar for `language` (None if the pack has none); .tsx files get `tsx`."""
    if language == "typescript" and path is not None and path.lower().endswith(".tsx"):
        return "tsx"
    if language in _GRAMMAR_RENAMES:
        return _GRAMMAR_RENAMES[language]
    return language if language in LANGUAGES else None


__all__ = ["EXTENSION_LANGUAGES", "FILENAME_LANGUAGES", "LANGUAGES", "SHEBANG_LANGUAGES", "grammar_name", "language_of"]
