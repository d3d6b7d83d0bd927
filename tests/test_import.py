"""`from seedcoder.kernels import ...` needs only torch and triton: it imports no other third-party module,
and works when the trainer's dependencies cannot be imported at all."""

import json
import os
import subprocess
import sys

import pytest

PUBLIC = "rms_norm, apply_rotary, cross_entropy, fused_linear_cross_entropy"

PROBE = f"""
import json, sys
baseline = set(sys.modules)
import torch, triton
after_deps = set(sys.modules)
from seedcoder.kernels import {PUBLIC}
new = {{m.split('.')[0] for m in set(sys.modules) - after_deps}}
print(json.dumps(sorted(new)))
"""

# Third-party packages the trainer and tests use; the kernels must not need any of them.
TRAINER_DEPS = ["numpy", "transformers", "safetensors", "tokenizers", "liger_kernel", "tqdm", "tensorboard", "pyarrow", "yaml"]


def run_probe(block: list[str]) -> subprocess.CompletedProcess:
    blocker = "".join(f"sys.modules[{name!r}] = None\n" for name in block)  # None in sys.modules makes import fail
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a user's import, not the test interpreter
    return subprocess.run([sys.executable, "-c", "import sys\n" + blocker + PROBE], env=env, capture_output=True, text=True,
                          timeout=300)


def test_kernels_import_adds_only_seedcoder_modules():
    proc = run_probe([])
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    stdlib = set(sys.stdlib_module_names)
    assert new - stdlib - {"seedcoder"} == set(), f"seedcoder.kernels imported third-party modules: {sorted(new - stdlib)}"


def test_kernels_import_with_trainer_dependencies_unavailable():
    proc = run_probe(TRAINER_DEPS)
    assert proc.returncode == 0, proc.stderr[-3000:]


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_repository_kernels_folder_is_not_a_top_level_package():
    """`kernels/` holds our op files but is no regular package: from the repository root (on sys.path for pytest and
    `python -m benchmarks.x`), `import kernels` must never be ours, or it shadows Hugging Face's `kernels`."""
    assert not os.path.exists(os.path.join(REPO, "kernels", "__init__.py"))
    probe = (
        "import importlib.util, json, os\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "print(json.dumps(None if spec is None else {'origin': spec.origin,"
        " 'locations': list(spec.submodule_search_locations or [])}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = os.path.join(REPO, "kernels")
    if spec is not None:  # Hugging Face's package when installed, else at most an empty namespace beside it
        assert spec["origin"] is None or not spec["origin"].startswith(ours + os.sep), spec
    try:
        import importlib.metadata

        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        return
    assert spec is not None and spec["origin"] is not None and ours not in spec["locations"], spec


def test_transformers_llama_builds_from_the_repository_root():
    pytest.importorskip("transformers")
    probe = (
        "import sys, torch\n"
        "assert sys.path[0] in ('', '.', __import__('os').getcwd())\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,"
        " num_attention_heads=4, num_key_value_heads=2)\n"
        "model = LlamaForCausalLM(cfg)\n"
        "out = model(torch.tensor([[1, 2, 3]]))\n"
        "print(tuple(out.logits.shape))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "(1, 3, 64)"


def test_wheel_layout_carries_the_op_files(tmp_path):
    """setup.py's build_py puts kernels/*.py inside seedcoder/kernels/; the package then imports with no checkout."""
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pkg = tmp_path / "lib" / "seedcoder" / "kernels"
    ops = sorted(f for f in os.listdir(os.path.join(REPO, "kernels")) if f.endswith(".py"))
    assert ops and all((pkg / f).is_file() for f in ops), sorted(os.listdir(pkg))
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH")}
    env["PYTHONPATH"] = str(tmp_path / "lib")
    probe = "import seedcoder.kernels as k; from seedcoder.kernels import rms_norm; print(list(k.__path__))"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == repr([str(pkg)])
