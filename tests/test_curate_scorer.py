"""The quality scorer (seedcoder.curate.scorer, trained by seedcoder.curate.scorer_train) on a synthetic task a tiny
model learns in seconds.

Task: each file has 10 lines, k of them comments, and its rating is k (0..10). A debug-size Llama (from scratch,
tokenizer trained here) with the regression head must beat predicting the mean rating by a wide margin on the
held-out split. Also: the prompt format is built by one function with one PromptFormat in training and inference;
padding never changes a score; a run interrupted mid-training and rerun ends with bitwise the weights of an
uninterrupted run; base checkpoints (trainer runs, converted models) load with their tokenizer; rows split over
the score step over two ranks scores like one process; bad inputs raise errors naming the argument.
"""

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from seedcoder import checkpoint as ckpt
from seedcoder.curate import dataset as ds
from seedcoder.curate import scorer as scorer_module
from seedcoder.curate import scorer_train as scorer_train_module
from seedcoder.curate.scorer import (
    PromptFormat,
    ScorerError,
    ScorerModel,
    encode_prompts,
    load_scorer,
    pad_batch,
    prompt_format_for,
)
from seedcoder.curate.scorer_train import BUCKETS, epoch_batches, evaluation_metrics, held_out_mask, train_scorer
from seedcoder.model import model_config
from seedcoder.tokenizer import load_tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"model": "debug", "batch_size": 16, "max_tokens": 128, "plot": False, "device": "cpu"}


def synthetic_rows(n: int, seed: int = 0) -> pa.Table:
    """Files of 10 lines; the rating is the number of comment lines."""
    rng = np.random.default_rng(seed)
    texts, ratings = [], []
    for _ in range(n):
        comments = int(rng.integers(0, 11))
        lines = ["# explain the step"] * comments + [f"x{j} = x{j} + {j}" for j in range(10 - comments)]
        rng.shuffle(lines)
        texts.append("\n".join(lines) + "\n")
        ratings.append(comments)
    return pa.table({"id": [f"{seed}-{i}" for i in range(n)], "text": texts, "language": ["python"] * n,
                     "path": [f"pkg/module_{i}.py" for i in range(n)], "rating": pa.array(ratings, pa.int64())})


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    table = synthetic_rows(200, seed=99)
    texts = table.column("text").to_pylist() + [f"language: python\npath: pkg/module_{i}.py\n---\n" for i in range(50)]
    return train_tokenizer(texts, str(path), vocab_size=320)


@pytest.fixture(scope="module")
def trained(tokenizer_path, tmp_path_factory):
    """A scorer trained on 400 synthetic rows (3 epochs), recording every encode_prompts call."""
    out = tmp_path_factory.mktemp("scorer")
    rows = synthetic_rows(400)
    calls = []
    original = scorer_module.encode_prompts
    assert scorer_train_module.encode_prompts is original  # training builds its prompts with the inference function

    def recording(tokenizer, fmt, texts, languages, paths):
        calls.append((fmt, tokenizer.to_str(), len(texts)))
        return original(tokenizer, fmt, texts, languages, paths)

    scorer_module.encode_prompts = scorer_train_module.encode_prompts = recording
    try:
        metrics = train_scorer(rows, checkpoint=None, tokenizer=tokenizer_path, out_dir=str(out), epochs=3, lr=3e-3,
                               **FAST)
    finally:
        scorer_module.encode_prompts = scorer_train_module.encode_prompts = original
    return {"out": str(out), "rows": rows, "metrics": metrics, "calls": calls}


def test_learns_the_synthetic_ratings(trained):
    metrics = trained["metrics"]
    assert metrics["n_train"] + metrics["n_eval"] == 400 and 20 <= metrics["n_eval"] <= 60
    # predicting the mean is ~2.8 off on uniform 0..10 ratings; the trained head must be far better
    assert metrics["mae"] < 0.5 * metrics["baseline_mae"], metrics
    assert metrics["pearson_r"] > 0.8
    on_disk = json.loads(open(os.path.join(trained["out"], "metrics.json")).read())
    assert on_disk["mae"] == metrics["mae"]
    assert set(on_disk["buckets"]) == {name for name, _, _ in BUCKETS}
    assert sum(bucket["count"] for bucket in on_disk["buckets"].values()) == metrics["n_eval"]
    steps = [json.loads(line)["step"] for line in open(os.path.join(trained["out"], "metrics.jsonl"))]
    assert steps == list(range(1, metrics["steps"] + 1))
    assert not os.path.exists(os.path.join(trained["out"], "checkpoints"))  # removed once the scorer is final


def test_held_out_predictions_come_from_the_inference_path(trained):
    predictions = pq.read_table(os.path.join(trained["out"], "eval_predictions.parquet"))
    scorer = load_scorer(trained["out"], device="cpu")
    text_of = dict(zip(trained["rows"].column("id").to_pylist(), trained["rows"].column("text").to_pylist()))
    again = scorer.score([text_of[i] for i in predictions.column("id").to_pylist()],
                         predictions.column("language").to_pylist(), predictions.column("path").to_pylist())
    assert again.dtype == np.float32 and ((again >= 0) & (again <= 10)).all()
    np.testing.assert_allclose(again, predictions.column("prediction").to_numpy(), atol=1e-5)
    errors = np.abs(again - predictions.column("rating").to_numpy())
    assert abs(float(errors.mean()) - trained["metrics"]["mae"]) < 1e-5


def test_training_and_inference_use_one_prompt_format(trained, tokenizer_path):
    calls = trained["calls"]
    assert len(calls) >= 2  # training rows, then the held-out rows through load_scorer().score
    formats, vocabularies = {call[0] for call in calls}, {call[1] for call in calls}
    assert len(formats) == 1 and len(vocabularies) == 1
    (fmt,) = formats
    scorer = load_scorer(trained["out"], device="cpu")
    assert scorer.prompt == fmt and scorer.tokenizer.to_str() == next(iter(vocabularies))
    saved = json.loads(open(os.path.join(trained["out"], "scorer", "scorer.json")).read())
    assert saved["prompt"]["max_tokens"] == FAST["max_tokens"] == fmt.max_tokens


def test_prompt_format_keeps_the_head_of_long_files(tokenizer_path):
    tokenizer = load_tokenizer(tokenizer_path)
    fmt = prompt_format_for(tokenizer, 64)
    short = "x1 = x1 + 1\n"
    long = "".join(f"x{j} = x{j} + {j}\n" for j in range(200))
    ids_short, ids_long = encode_prompts(tokenizer, fmt, [short, long], ["python", None], ["pkg/a.py", None])
    assert ids_short[0] == fmt.bos_id and ids_short[-1] == fmt.eos_id
    text = tokenizer.decode(ids_short.tolist(), skip_special_tokens=True)
    assert text == "language: python\npath: pkg/a.py\n---\n" + short
    assert len(ids_long) == 64 and ids_long[-1] == fmt.eos_id
    decoded = tokenizer.decode(ids_long.tolist(), skip_special_tokens=True)
    header = "language: unknown\npath: \n---\n"
    assert decoded.startswith(header) and long.startswith(decoded[len(header):]) and len(decoded) > len(header) + 40


def test_padding_does_not_change_a_score(trained):
    scorer = load_scorer(trained["out"], device="cpu")
    texts = trained["rows"].column("text").to_pylist()[:20]
    texts[3] = "x = 1\n"  # much shorter than the others: padded in any batch
    languages, paths = ["python"] * 20, [f"p{i}.py" for i in range(20)]
    batched = scorer.score(texts, languages, paths, batch_size=8)
    unsorted = scorer.score(texts, languages, paths, batch_size=8, sort_by_length=False)
    alone = np.array([scorer.score([t], [lang], [p], batch_size=1)[0] for t, lang, p in zip(texts, languages, paths)])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(unsorted, alone, atol=1e-5)
    # the head reads the last real token, whatever the pad tokens are
    prompts = scorer.encode(texts[:2], languages[:2], paths[:2])
    ids, lengths = pad_batch(prompts, scorer.prompt.pad_id)
    garbage = ids.clone()
    for row, length in enumerate(lengths.tolist()):
        garbage[row, length:] = torch.randint(6, 300, (ids.shape[1] - length,))
    with torch.no_grad():
        torch.testing.assert_close(scorer.model(ids, lengths), scorer.model(garbage, lengths), atol=1e-6, rtol=0)
        longer = torch.cat([ids, torch.full((2, 7), 5)], dim=1)
        torch.testing.assert_close(scorer.model(ids, lengths), scorer.model(longer, lengths), atol=1e-6, rtol=0)


def test_a_finished_run_is_returned_and_other_settings_refused(trained, tokenizer_path, capsys):
    again = train_scorer(trained["rows"], checkpoint=None, tokenizer=tokenizer_path, out_dir=trained["out"], epochs=3,
                         lr=3e-3, **FAST)
    assert again == json.loads(json.dumps(trained["metrics"])) and "nothing to do" in capsys.readouterr().err
    with pytest.raises(ScorerError, match="out_dir.*other settings.*lr"):
        train_scorer(trained["rows"], checkpoint=None, tokenizer=tokenizer_path, out_dir=trained["out"], epochs=3,
                     lr=1e-3, **FAST)


def _weights(out_dir):
    model = load_scorer(out_dir, device="cpu").model
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_resume_after_interruption_gives_the_same_weights(tokenizer_path, tmp_path, monkeypatch, capsys):
    rows = synthetic_rows(120, seed=1)
    options = dict(checkpoint=None, tokenizer=tokenizer_path, steps=9, checkpoint_interval=3, lr=3e-3, **FAST)
    reference = train_scorer(rows, out_dir=str(tmp_path / "a"), **options)

    monkeypatch.setenv(ckpt.FAULT_ENV, "after_step@5:raise")  # dies after step 5: steps 4-5 are lost
    with pytest.raises(RuntimeError, match="injected fault"):
        train_scorer(rows, out_dir=str(tmp_path / "b"), **options)
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path / "b" / "checkpoints")] == [3]
    monkeypatch.delenv(ckpt.FAULT_ENV)
    capsys.readouterr()
    resumed = train_scorer(rows, out_dir=str(tmp_path / "b"), **options)
    assert "resumed from" in capsys.readouterr().err

    first, second = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert first.keys() == second.keys() and "head.weight" in first
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert resumed["mae"] == reference["mae"]
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert steps == list(range(1, 10))  # the lost steps 4-5 are logged once, from the resumed run


def test_base_checkpoints_load_with_their_tokenizer(tokenizer_path, tmp_path):
    from seedcoder.model import Transformer

    cfg = model_config("debug", vocab_size=320)
    base = Transformer(cfg)
    base.init_weights(7)
    data_dir = tmp_path / "data"  # a trainer run: checkpoints/step-N, its config naming the dataset
    data_dir.mkdir()
    (data_dir / "tokenizer.json").write_text(open(tokenizer_path).read())
    run = tmp_path / "run"
    optimizer = torch.optim.AdamW(base.parameters(), lr=0.0)  # a trainer checkpoint holds the optimizer state too
    base(torch.randint(0, 320, (1, 8)), labels=torch.randint(0, 320, (1, 8))).backward()
    optimizer.step()
    with warnings.catch_warnings():  # "torch.distributed is disabled ... single process": it is
        warnings.simplefilter("ignore", UserWarning)
        ckpt.save_checkpoint(run / "checkpoints", 40, model=base, optimizer=optimizer, model_config=cfg.to_dict(),
                             train_state={"config": {"data": {"path": str(data_dir)}}})
    step_dir = ckpt.resolve_dcp_checkpoint(str(run))
    assert step_dir.endswith("step-00000040") and ckpt.resolve_dcp_checkpoint(str(run / "checkpoints")) == step_dir
    assert ckpt.find_tokenizer(step_dir) == str(data_dir / "tokenizer.json")

    rows = synthetic_rows(40, seed=2)
    train_scorer(rows, checkpoint=str(run), out_dir=str(tmp_path / "s"), steps=1, lr=1e-12, **FAST)
    weights = _weights(tmp_path / "s")
    assert not any(name.startswith("backbone.output") for name in weights)  # no LM head in the scorer
    for name, tensor in base.state_dict().items():
        if not name.startswith("output."):
            torch.testing.assert_close(weights[f"backbone.{name}"], tensor, atol=1e-6, rtol=0)

    converted = tmp_path / "converted"  # the layout of `seedcoder convert --from-hf` output, tokenizer under hf/
    ckpt.save_model_only(base, converted)
    (converted / "hf").mkdir()
    (converted / "hf" / "tokenizer.json").write_text(open(tokenizer_path).read())
    assert ckpt.resolve_dcp_checkpoint(str(converted)) == str(converted)
    assert ckpt.find_tokenizer(str(converted)) == str(converted / "hf" / "tokenizer.json")


def test_score_step_over_two_ranks_scores_like_one_process(trained, tmp_path):
    """`torchrun ... seedcoder.cli curate score`: two ranks (RANK / WORLD_SIZE as torchrun sets them, run at once)
    split the shards, rank 0 finishes the dataset; the scores equal one process's scorer.score."""
    rows = trained["rows"].select(["id", "text", "language", "path"]).slice(0, 31)
    source = tmp_path / "files"
    ds.prepare_output(str(source), {"step": "test", "name": "files"})
    markers = []
    for index, (start, stop) in enumerate(((0, 13), (13, 20), (20, 31))):
        stats = ds.write_part(str(source), index, rows.slice(start, stop - start))
        markers.append({"task": f"part-{index:05d}", "stats": stats})
        ds.write_json(ds.marker_path(str(source), index), markers[-1])
    ds.finish_dataset(str(source), markers)
    scorer_dir = tmp_path / "scorer_train"  # the scorer as the scorer_train step leaves it: finished
    shutil.copytree(trained["out"], scorer_dir)
    ds.write_json(str(scorer_dir / ds.SUCCESS_FILE), {"step": "scorer_train", "kind": "model"})
    out = tmp_path / "scored"
    command = [sys.executable, "-m", "seedcoder.cli", "curate", "score", "--in", str(source), "--scorer", str(scorer_dir),
               "--out", str(out), "--device", "cpu", "--no-progress"]
    ranks = [subprocess.Popen(command, env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    for rank in ranks:
        output = rank.communicate(timeout=300)[0]
        assert rank.returncode == 0, output
    scored = pa.concat_tables([table for _, table in ds.iter_tables(str(out))])
    assert scored.column("id").to_pylist() == rows.column("id").to_pylist()
    expected = load_scorer(trained["out"], device="cpu").score(rows.column("text").to_pylist(), ["python"] * 31,
                                                                rows.column("path").to_pylist())
    np.testing.assert_allclose(scored.column("score").to_numpy(), expected, atol=1e-5)
    log = [json.loads(line) for line in (out / ds.LOG_FILE).read_text().splitlines()]
    assert {record["rank"] for record in log if "rank" in record} == {0, 1}  # both ranks scored shards


def test_held_out_split_is_deterministic_and_about_ten_percent():
    ids = [f"file-{i}" for i in range(3000)]
    mask = held_out_mask(ids, 0.1)
    assert 0.08 < mask.mean() < 0.12
    reordered = held_out_mask(ids[::-1], 0.1)[::-1]
    assert (mask == reordered).all()
    assert held_out_mask(["a", "b"], 0.1).sum() == 1  # tiny tables still get one held-out and one training row


def test_epoch_batches_cover_every_row_once_with_little_padding():
    lengths = np.random.default_rng(0).integers(5, 500, size=1000)
    batches = epoch_batches(lengths, 16, seed=3, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all((a == b).all() for a, b in zip(batches, epoch_batches(lengths, 16, seed=3, epoch=0)))
    assert not all((a == b).all() for a, b in zip(batches, epoch_batches(lengths, 16, seed=3, epoch=1)))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert lengths.sum() / padded > 0.8  # batches of similar lengths


def test_evaluation_metrics_per_bucket():
    ratings = np.array([0, 2, 3, 6, 8, 10], dtype=float)
    predictions = np.array([1, 2, 5, 6, 7, 10], dtype=float)
    metrics = evaluation_metrics(ratings, predictions, train_mean=5.0)
    assert metrics["mae"] == pytest.approx(4 / 6)
    assert metrics["baseline_mae"] == pytest.approx((5 + 3 + 2 + 1 + 3 + 5) / 6)
    assert metrics["buckets"]["0-2"] == {"count": 2, "mae": 0.5, "mean_prediction": 1.5}
    assert metrics["buckets"]["3-4"]["mae"] == 2.0 and metrics["buckets"]["5-6"]["mae"] == 0.0
    assert metrics["buckets"]["7-8"]["count"] == 1 and metrics["buckets"]["9-10"]["count"] == 1


def test_bad_inputs_name_the_argument(tokenizer_path, tmp_path):
    rows = synthetic_rows(10)
    common = dict(checkpoint=None, tokenizer=tokenizer_path, out_dir=str(tmp_path / "o"), **FAST)
    with pytest.raises(ScorerError, match="'rows'.*missing column.*'rating'"):
        train_scorer(rows.drop_columns(["rating"]), **common)
    too_high = rows.set_column(4, "rating", pa.array([11] + [5] * 9))
    with pytest.raises(ScorerError, match="'rows'.*'rating'.*0..10.*row 0: 11"):
        train_scorer(too_high, **common)
    unrated = rows.set_column(4, "rating", pa.array([None] + [5.0] * 9))
    with pytest.raises(ScorerError, match="'rows'.*'rating'.*null"):
        train_scorer(unrated, **common)
    with pytest.raises(ScorerError, match="'rows'.*pyarrow.Table"):
        train_scorer(rows.to_pylist(), **common)
    with pytest.raises(ScorerError, match="'checkpoint'.*checkpoint directory not found"):
        train_scorer(rows, **{**common, "checkpoint": str(tmp_path / "nowhere")})
    hf_like = tmp_path / "hf_model"
    hf_like.mkdir()
    (hf_like / "config.json").write_text("{}")
    with pytest.raises(ScorerError, match="'checkpoint'.*seedcoder convert --from-hf"):
        train_scorer(rows, **{**common, "checkpoint": str(hf_like)})
    with pytest.raises(ScorerError, match="'tokenizer'.*required"):
        train_scorer(rows, **{**common, "tokenizer": None})
    with pytest.raises(ScorerError, match="'max_tokens'"):
        train_scorer(rows, **{**common, "max_tokens": 4})
    with pytest.raises(ScorerError, match="'lr'"):
        train_scorer(rows, **{**common, "lr": -1.0})
    with pytest.raises(ScorerError, match="'out_dir'.*no trained scorer"):
        load_scorer(str(tmp_path))
    assert not os.path.exists(tmp_path / "o" / "metrics.json")


def test_score_checks_its_arguments(trained):
    scorer = load_scorer(trained["out"], device="cpu")
    with pytest.raises(ScorerError, match="lengths differ"):
        scorer.score(["a", "b"], ["python"], ["x.py", "y.py"])
    with pytest.raises(ScorerError, match="'texts'.*item 1"):
        scorer.score(["a", None], ["python"] * 2, ["x.py"] * 2)
    with pytest.raises(ScorerError, match="'batch_size'"):
        scorer.score(["a"], ["python"], ["x.py"], batch_size=0)
    assert scorer.score([], [], []).shape == (0,)


def test_scorer_model_reads_the_final_norm_of_the_last_token():
    cfg = model_config("debug", vocab_size=64)
    model = ScorerModel.empty(cfg, torch.device("cpu"))
    model.backbone.init_weights(0)
    torch.nn.init.normal_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    ids = torch.randint(0, 64, (2, 10))
    lengths = torch.tensor([10, 6])
    with torch.no_grad():
        hidden = model.backbone(ids)  # the final-normed hidden states (no LM head)
        assert hidden.shape == (2, 10, cfg.dim)
        rms = hidden.pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-2, rtol=0)  # RMSNorm with unit weights (and eps)
        expected = torch.sigmoid(hidden[[0, 1], [9, 5]] @ model.head.weight[0])
        torch.testing.assert_close(model(ids, lengths), expected)


def test_prompt_format_needs_an_end_token(tmp_path):
    from tokenizers import Tokenizer, models

    bare = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(ScorerError, match="'tokenizer'.*end-of-sequence"):
        prompt_format_for(bare, 64)
    assert PromptFormat(64, 1, None, 1).header(None, "x" * 500).endswith("x" * 128 + "\n---\n")


def test_benchmark_runs_on_a_few_files():
    from benchmarks.curate_scorer import FROZEN_STDLIB, bench_scorer

    result = bench_scorer(max_tokens=64, batch_size=4, model="debug", repeats=1, n_files=6, threads=1)
    assert result["files"] == 6 and len(FROZEN_STDLIB) == 88
    assert result["files_per_s"] > 0 and result["unsorted_files_per_s"] > 0 and result["encode_files_per_s"] > 0
    assert result["tokens"] == 6 * 64  # every one of these files is longer than the 64-token context
    assert torch.get_num_threads() == 1  # the module's setting is restored
