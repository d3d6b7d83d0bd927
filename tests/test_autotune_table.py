"""kernels/autotune_table.py: a GPU run's autotuned choices are dumped, installed and loaded into fresh tuners (a
tuned key then runs its recorded configuration without benchmarking); stale or bad tables are handled. Here the
kernel runs in Triton's interpreter, where the autotuner cannot benchmark at all (it needs a GPU driver): a key
the table holds runs, a key it lacks fails in the benchmarker, which proves the table skips it."""

import json

import pytest
import torch
import triton
import triton.language as tl

from seedcoder.kernels import autotune_table


@triton.jit
def _scale_kernel(X, Y, n, FACTOR: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(Y + offsets, tl.load(X + offsets, mask=mask) * FACTOR, mask=mask)


CONFIGS = [triton.Config({"BLOCK": b}, num_warps=w, num_stages=1) for b, w in ((16, 1), (32, 2), (64, 4))]
KEY = (100, "torch.float32", "torch.float32")


def make_tuner():
    return triton.autotune(configs=CONFIGS, key=["n"])(_scale_kernel)


def launch(tuner, n):
    x = torch.arange(n, dtype=torch.float32)
    y = torch.empty_like(x)
    tuner[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](x, y, n, FACTOR=3.0)
    assert torch.equal(y, x * 3)


def test_dump_install_load_skips_the_benchmark(tmp_path, monkeypatch):
    monkeypatch.setattr(autotune_table, "_TUNERS", {})
    tuned = autotune_table.register("test.scale", make_tuner())
    tuned.cache[KEY] = CONFIGS[1]  # what a GPU run's benchmark would have picked for n = 100
    table = autotune_table.dump("NVIDIA Test GPU")
    assert table["tuners"]["test.scale"] == [{"key": list(KEY), "config": {"kwargs": {"BLOCK": 32}, "num_warps": 2,
                                                                            "num_stages": 1, "num_ctas": 1}}]
    written = tmp_path / "autotune.json"
    written.write_text(json.dumps(table))
    assert autotune_table.main(["install", str(written), "--dir", str(tmp_path / "tables")]) == 0
    installed = autotune_table.table_path("NVIDIA Test GPU", str(tmp_path / "tables"))
    assert installed.endswith("nvidia-test-gpu.json")

    fresh = make_tuner()
    assert autotune_table.apply("test.scale", fresh, autotune_table.read_table(installed)) == 1
    launch(fresh, 100)
    assert fresh.best_config is CONFIGS[1]  # the recorded config ran; nothing was benchmarked (that needs a GPU)
    with pytest.raises(RuntimeError, match="active drivers"):
        launch(fresh, 37)  # a key the table lacks goes to the benchmarker (which needs a GPU)


def test_a_stale_entry_is_ignored_and_bad_tables_are_named(tmp_path, capsys):
    table = {"format": 1, "device": "X", "triton": "0", "tuners": {"test.scale": [
        {"key": list(KEY), "config": {"kwargs": {"BLOCK": 128}, "num_warps": 8, "num_stages": 1}}]}}
    assert autotune_table.apply("test.scale", make_tuner(), table) == 0  # BLOCK 128 is no candidate any more
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 1, "device": "X", "tuners": {"t": [{"key": 3}]}}')
    assert autotune_table.main(["install", str(bad), "--dir", str(tmp_path)]) == 2
    assert "tuner 't'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a readable autotune table"):
        autotune_table.read_table(str(tmp_path / "missing.json"))
