"""SFT (seedcoder.posttrain.sft): chat rows -> shards with an assistant-only loss mask -> the training loop.

A tiny byte-level BPE and the debug model are built here from scratch. Checks: sampling weights (hand values, and
the loader drawing documents in proportion to them); the loss mask is exactly the assistant content + <eos>;
the loader's labels and the model's loss depend on assistant targets only; bad rows are counted with their line
numbers and the build resumes; epochs -> steps; a tiny SFT run on CPU whose loss falls and that resumes exactly.
"""

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from toy_models import toy_tokenizer_file

from seedcoder.chat_template import DEFAULT_SYSTEM_PROMPT
from seedcoder.config import ConfigError
from seedcoder.data.loader import IGNORE_INDEX, ShardLoader
from seedcoder.data.manifest import build_manifest, load_manifest, write_manifest
from seedcoder.data.shard_reader import ShardReader
from seedcoder.data.shard_writer import ShardWriter
from seedcoder.data.shards import file_sha256
from seedcoder.data.tokenizer_tables import BOS_TOKEN, EOS_TOKEN
from seedcoder.posttrain.sft import (
    SFTDataError,
    SFTRowError,
    build_sft_dataset,
    parse_row,
    render_example,
    sample_weight,
    score_to_weight,
    sft,
    steps_for_epochs,
    weight_to_score,
)
from seedcoder.train_config import StageSection, load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLORS = ["red", "blue", "green", "gold", "pink", "gray", "teal", "navy"]


def chat(i, system="Be brief."):
    """A memorizable conversation: item i has a fixed color."""
    messages = [{"role": "user", "content": f"Color of item {i}?"}, {"role": "assistant", "content": COLORS[i % 8]}]
    return ([{"role": "system", "content": system}] if system else []) + messages



@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    corpus = [f"system\nuser\nassistant\nBe brief. Color of item {i}? {c}" for i in range(20) for c in COLORS]
    corpus += [DEFAULT_SYSTEM_PROMPT, "def add(a, b):\n    return a + b\n", "Write fib(n). Sure: def fib(n): ..."]
    return str(toy_tokenizer_file(tmp_path_factory.mktemp("tok"), corpus, vocab_size=320))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(tokenizer_path)


def write_jsonl(path, rows):
    with open(path, "wb") as file:
        for row in rows:
            file.write(row if isinstance(row, bytes) else (json.dumps(row) + "\n").encode())
    return str(path)


# ------------------------------------------------------------------------------------------ weights
def test_sample_weights_by_hand():
    assert sample_weight({}) == 1.0
    assert sample_weight({"weight": 2.5, "difficulty": "hard"}) == 2.5  # an explicit weight wins
    assert sample_weight({"difficulty": "hard"}) == 4.0 and sample_weight({"difficulty": "Easy"}) == 1.0
    assert sample_weight({"difficulty": 3}) == 3.0
    assert sample_weight({"difficulty": "hard"}, {"hard": 10.0}) == 10.0
    for bad in ({"weight": 0}, {"weight": -1.0}, {"weight": float("nan")}, {"weight": True}, {"difficulty": "insane"},
                {"weight": "2"}):
        with pytest.raises(SFTRowError) as info:
            sample_weight(bad)
        assert info.value.reason == "bad_weight"
    assert weight_to_score(1.0) == 0.0 and weight_to_score(math.e) == pytest.approx(1.0)
    assert score_to_weight(weight_to_score(4.0)) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="weight"):
        weight_to_score(0.0)


def test_loader_draws_documents_in_proportion_to_weights(tmp_path, tokenizer_path):
    """The documented mapping: score = ln(weight) and data.score_temperature = 1 -> p(document) ∝ weight."""
    rows = [{"messages": chat(0), "weight": 1.0}, {"messages": chat(1), "difficulty": "hard"}]  # weights 1 and 4
    build_sft_dataset([write_jsonl(tmp_path / "w.jsonl", rows)], tmp_path / "data", tokenizer=tokenizer_path)
    with ShardLoader(str(tmp_path / "data"), seq_len=64, score_temperature=1.0, tokens_per_epoch=400_000, threads=1,
                     rank=0, world_size=1) as loader:
        documents = np.asarray(loader.plan(0)["documents"])
    counts = np.bincount(documents, minlength=2)
    assert counts.sum() > 5000
    assert counts[1] / counts[0] == pytest.approx(4.0, rel=0.1)


# ------------------------------------------------------------------------------------------ the loss mask
def test_mask_is_exactly_assistant_content_and_eos(tokenizer):
    messages = [{"role": "user", "content": "Color of item 3?"}, {"role": "assistant", "content": "gold"},
                {"role": "user", "content": "Color of item 4?"}, {"role": "assistant", "content": "pink"}]
    example = render_example({"messages": messages}, tokenizer)
    ids, mask = example.input_ids.tolist(), example.loss_mask.astype(bool).tolist()
    assert len(ids) == len(mask) and example.weight == 1.0
    bos, eos = tokenizer.token_to_id(BOS_TOKEN), tokenizer.token_to_id(EOS_TOKEN)
    # the default system prompt comes first; the document ends with the last assistant's <eos>
    assert example.text.startswith(f"{BOS_TOKEN}system\n{DEFAULT_SYSTEM_PROMPT}{EOS_TOKEN}") and ids[-1] == eos
    kept = [t for t, m in zip(ids, mask) if m]
    assert kept == tokenizer.encode("gold", add_special_tokens=False).ids + [eos] + \
        tokenizer.encode("pink", add_special_tokens=False).ids + [eos]
    dropped = tokenizer.decode([t for t, m in zip(ids, mask) if not m], skip_special_tokens=False)
    assert dropped == (f"{BOS_TOKEN}system\n{DEFAULT_SYSTEM_PROMPT}{EOS_TOKEN}{BOS_TOKEN}user\nColor of item 3?{EOS_TOKEN}"
                       f"{BOS_TOKEN}assistant\n{BOS_TOKEN}user\nColor of item 4?{EOS_TOKEN}{BOS_TOKEN}assistant\n")
    assert ids.count(bos) == 5 and not any(m for t, m in zip(ids, mask) if t == bos)
    no_system = render_example({"messages": messages}, tokenizer, system_prompt=None)
    assert no_system.text.startswith(f"{BOS_TOKEN}user\n") and int(no_system.loss_mask.sum()) == len(kept)


def test_loader_labels_and_loss_depend_on_assistant_targets_only(tmp_path, tokenizer_path, tokenizer):
    from seedcoder.model import Transformer, model_config

    rows = [{"messages": chat(i)} for i in range(3)]
    build_sft_dataset([write_jsonl(tmp_path / "c.jsonl", rows)], tmp_path / "sft", tokenizer=tokenizer_path)
    examples = [render_example(row, tokenizer) for row in rows]
    # the same documents without a mask (what pretraining would see): every next token is a label
    with ShardWriter(tmp_path / "plain.scs", vocab_size=tokenizer.get_vocab_size(),
                     tokenizer_sha256=file_sha256(tokenizer_path)) as writer:
        for index, example in enumerate(examples):
            writer.add(example.input_ids, score=0.0, language="unknown", source="file", content_hash=index)
    length = sum(len(e.input_ids) for e in examples)
    options = dict(seq_len=length, mode="concat", threads=1, rank=0, world_size=1, epochs=1)
    with ShardLoader(str(tmp_path / "sft"), **options) as loader:
        sft_batch = next(loader)
        order = [int(d) for d in loader.plan(0)["documents"]]  # the epoch's (seeded) document order
    assert sorted(order) == [0, 1, 2]
    with ShardLoader([str(tmp_path / "plain.scs")], **options) as loader:
        plain = next(loader)
    assert torch.equal(sft_batch["input_ids"], plain["input_ids"])
    examples_in_order = [examples[d] for d in order]
    assert torch.equal(sft_batch["input_ids"][0], torch.as_tensor(np.concatenate([e.input_ids for e in examples_in_order]),
                                                                  dtype=torch.int64))
    mask = torch.as_tensor(np.concatenate([e.loss_mask for e in examples_in_order]), dtype=torch.bool)
    full, labels = plain["labels"][0], sft_batch["labels"][0]
    # label i (the target of position i) is kept exactly when token i + 1 is an assistant token of the same document
    expected = torch.full_like(full, IGNORE_INDEX)
    target_is_assistant = torch.cat([mask[1:], torch.tensor([False])]) & (full != IGNORE_INDEX)
    expected[target_is_assistant] = full[target_is_assistant]
    assert torch.equal(labels, expected)
    assert int((labels != IGNORE_INDEX).sum()) == sum(int(e.loss_mask[1:].sum()) for e in examples)

    torch.manual_seed(0)
    model = Transformer(model_config("debug", vocab_size=384, init_std=0.3))
    batch = {k: sft_batch[k] for k in ("position_ids", "cu_seqlens", "max_seqlen")}

    def loss_of(full_labels):  # the loss of the SFT batch when the data had `full_labels` as next tokens
        masked = torch.where(target_is_assistant, full_labels, torch.full_like(full_labels, IGNORE_INDEX))
        return model(sft_batch["input_ids"], labels=masked[None], **batch).item()

    base = loss_of(full)
    assert base == pytest.approx(model(sft_batch["input_ids"], labels=labels[None], **batch).item(), abs=0)
    prompt_targets = torch.nonzero((full != IGNORE_INDEX) & ~target_is_assistant).flatten()
    assistant_targets = torch.nonzero(target_is_assistant).flatten()
    assert len(prompt_targets) > 10 and len(assistant_targets) == sum(int(e.loss_mask.sum()) for e in examples)
    for position in prompt_targets[:: max(1, len(prompt_targets) // 8)]:
        changed = full.clone()
        changed[position] = (changed[position] + 7) % 300
        assert loss_of(changed) == base  # a system/user token's label changes nothing
    for position in assistant_targets:
        changed = full.clone()
        changed[position] = (changed[position] + 7) % 300
        assert abs(loss_of(changed) - base) > 1e-4  # an assistant token's label does
    # and the gradient reaches the logits of assistant targets only
    logits = model(sft_batch["input_ids"], **batch)[0].detach().requires_grad_(True)
    torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum").backward()
    touched = logits.grad.abs().sum(-1) > 0
    assert torch.equal(touched, target_is_assistant)


# ------------------------------------------------------------------------------------------ the build
def test_bad_rows_are_counted_with_line_numbers_and_the_build_resumes(tmp_path, tokenizer_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"messages": chat(0)},                                       # line 1
        b"{not json\n",                                              # line 2
        b"\n",                                                       # line 3: blank, skipped silently
        {"messages": [{"role": "user", "content": "hi"}]},           # line 4: no assistant turn
        {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]},  # 5: unknown role
        {"prompt": "no messages"},                                   # line 6
        [1, 2],                                                      # line 7: not an object
        b"\xff\xfe{}\n",                                             # line 8: not UTF-8
        {"messages": chat(1), "weight": -2},                         # line 9: bad weight
        {"messages": chat(2), "difficulty": "hard"},                 # line 10
        {"messages": [{"role": "assistant", "content": "x"}, {"role": "system", "content": "late"}]},  # 11
        {"messages": chat(3), "id": "q3"},                           # line 12
    ]
    jsonl = write_jsonl(tmp_path / "chats.jsonl", rows)
    parquet = str(tmp_path / "more.parquet")
    pq.write_table(pa.Table.from_pylist([{"messages": chat(4), "weight": 2.0}, {"messages": chat(5)[:2], "weight": None}]),
                   parquet)
    out = tmp_path / "data"
    report = build_sft_dataset([jsonl, parquet], out, tokenizer=tokenizer_path, rows_per_shard=4)
    assert report["rows"] == 13 and report["documents"] == 4 and report["bad_rows"] == 9
    assert report["bad_by_reason"] == {"bad_message": 1, "bad_weight": 1, "no_assistant_turn": 2, "no_messages": 1,
                                       "not_an_object": 1, "not_json": 1, "not_utf8": 1, "unknown_role": 1}
    assert [(os.path.basename(e["file"]), e["line"]) for e in report["bad_rows_listed"]] == \
        [("chats.jsonl", n) for n in (2, 4, 5, 6, 7, 8, 9, 11)] + [("more.parquet", 2)]
    assert report == json.loads((out / "sft_report.json").read_text())
    manifest = load_manifest(str(out))
    assert manifest["totals"]["documents"] == 4 and manifest["sources"]["sft"]["documents"] == 4
    metadata = []
    for shard in manifest["shards"]:
        with ShardReader(out / shard["path"]) as reader:
            assert reader.has_loss_mask
            metadata += [(reader.metadata(i), float(reader.scores[i])) for i in range(len(reader))]
    assert [(m["file"], m["line"], m.get("id")) for m, _ in metadata] == \
        [("chats.jsonl", 1, None), ("chats.jsonl", 10, None), ("chats.jsonl", 12, "q3"), ("more.parquet", 1, None)]
    assert [score for _, score in metadata] == pytest.approx([0.0, math.log(4.0), 0.0, math.log(2.0)])

    # a rerun skips every finished shard; a lost shard is rebuilt alone; changed inputs rebuild everything
    stamps = {name: os.stat(out / name).st_mtime_ns for name in os.listdir(out) if name.startswith("shard-")}
    assert build_sft_dataset([jsonl, parquet], out, tokenizer=tokenizer_path, rows_per_shard=4) == report
    assert stamps == {name: os.stat(out / name).st_mtime_ns for name in stamps}
    os.unlink(out / "shard-00002.scs")
    assert build_sft_dataset([jsonl, parquet], out, tokenizer=tokenizer_path, rows_per_shard=4) == report
    assert os.stat(out / "shard-00000.scs").st_mtime_ns == stamps["shard-00000.scs"] and (out / "shard-00002.scs").exists()
    write_jsonl(tmp_path / "chats.jsonl", [{"messages": chat(6)}])
    again = build_sft_dataset([jsonl], out, tokenizer=tokenizer_path, rows_per_shard=4)
    assert again["documents"] == 1 and again["bad_rows"] == 0
    assert sorted(n for n in os.listdir(out) if n.startswith("shard-")) == ["shard-00000.json", "shard-00000.scs"]


def test_bad_arguments_name_them(tmp_path, tokenizer_path):
    good = write_jsonl(tmp_path / "ok.jsonl", [{"messages": chat(0)}])
    cases = [
        (dict(inputs=[str(tmp_path / "missing.jsonl")]), "inputs"),
        (dict(inputs=[str(tmp_path)]), "inputs"),
        (dict(inputs=[]), "inputs"),
        (dict(tokenizer=good), "tokenizer"),
        (dict(rows_per_shard=0), "rows_per_shard"),
        (dict(max_tokens=1), "max_tokens"),
        (dict(difficulty_weights={"hard": -1}), "difficulty_weights"),
        (dict(inputs=[write_jsonl(tmp_path / "bad.jsonl", [b"x\n", {"messages": []}])]), "no usable conversations"),
    ]
    for overrides, word in cases:
        kwargs = {"inputs": [good], "tokenizer": tokenizer_path, **overrides}
        with pytest.raises(SFTDataError, match=word):
            build_sft_dataset(kwargs.pop("inputs"), tmp_path / "out", **kwargs)
    with pytest.raises(SFTRowError, match="not JSON"):
        parse_row("{")
    from tokenizers import Tokenizer

    length = len(render_example({"messages": chat(0)}, Tokenizer.from_file(tokenizer_path)).input_ids)
    assert build_sft_dataset([good], tmp_path / "fits", tokenizer=tokenizer_path, max_tokens=length)["documents"] == 1
    with pytest.raises(SFTDataError, match="too_long"):
        build_sft_dataset([good], tmp_path / "long", tokenizer=tokenizer_path, max_tokens=length - 1)


def test_steps_for_epochs(tmp_path, tokenizer_path, tokenizer, capsys):
    rows = [{"messages": chat(i)} for i in range(8)]
    build_sft_dataset([write_jsonl(tmp_path / "e.jsonl", rows)], tmp_path / "data", tokenizer=tokenizer_path)
    tokens = sum(len(render_example(row, tokenizer).input_ids) for row in rows)  # each already ends with <eos>
    rows_per_epoch = math.ceil(tokens / 32)  # concat packing
    assert steps_for_epochs(str(tmp_path / "data"), epochs=3, seq_len=32, batch_size=4, mode="concat") == \
        math.ceil(3 * rows_per_epoch / 4)
    assert steps_for_epochs(str(tmp_path / "data"), epochs=1, seq_len=32, batch_size=1, mode="concat") == rows_per_epoch
    with pytest.raises(ValueError, match="epochs"):
        steps_for_epochs(str(tmp_path / "data"), epochs=0, seq_len=32, batch_size=4)
    # the same from the command line: `seedcoder data sft build` and `seedcoder data sft steps`
    from seedcoder.cli import main

    assert main(["data", "sft", "build", str(tmp_path / "e.jsonl"), "--tokenizer", tokenizer_path,
                 "--out", str(tmp_path / "cli")]) == 0
    capsys.readouterr()
    assert main(["data", "sft", "steps", str(tmp_path / "cli"), "--epochs", "3", "--seq-len", "32", "--batch-size", "4",
                 "--mode", "concat"]) == 0
    assert capsys.readouterr().out.strip() == str(math.ceil(3 * rows_per_epoch / 4))


# ------------------------------------------------------------------------------------------ training
def run_train(*argv):
    """`python -m seedcoder.train ...` in this process (a fresh 1-rank group each time); returns the exit code."""
    from seedcoder.train import main

    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    saved = {key: os.environ.pop(key) for key in keys if key in os.environ}
    try:
        return main(list(argv))
    finally:
        for key in keys:
            os.environ.pop(key, None)
        os.environ.update(saved)


def test_configs_carry_the_paper_defaults():
    from seedcoder.train_config import load_config

    for name in ("sft_tiny_demo.toml", "sft_8b.toml"):
        cfg = load_config(os.path.join(ROOT, "configs", name))
        assert cfg.optimizer.lr == 2e-5 and cfg.data.fim_rate == 0.0 and cfg.data.mode == "best_fit", name
    assert load_config(os.path.join(ROOT, "configs", "sft_8b.toml")).model.preset == "seedcoder-8b"


def test_sft_refuses_fim_instead_of_rewriting_it(tmp_path, capsys):
    config = os.path.join(ROOT, "configs", "sft_tiny_demo.toml")
    assert run_train("sft", "--config", config, f"--data.path={tmp_path}", "--data.fim_rate=0.5") == 2
    assert "config key 'data.fim_rate': SFT trains without FIM, so it must be 0, got 0.5" in capsys.readouterr().err
    cfg = load_config(config, [f"--data.path={tmp_path}"])
    cfg.stages = [StageSection(name="a", steps=1), StageSection(name="b", steps=1, fim_rate=0.1)]
    with pytest.raises(ConfigError, match=r"'stages\[1\]\.fim_rate'.* got 0\.1"):
        sft(cfg, loop=lambda cfg: pytest.fail("the loop ran"))
    assert cfg.stages[1].fim_rate == 0.1 and cfg.data.fim_rate == 0.0  # the user's settings are left as they were


def test_tiny_sft_run_learns_and_resumes(tmp_path, tokenizer_path, capsys):
    from seedcoder.metrics import read_jsonl

    data = tmp_path / "data"
    build_sft_dataset([write_jsonl(tmp_path / "t.jsonl", [{"messages": chat(i)} for i in range(8)])], data,
                      tokenizer=tokenizer_path)
    common = ["sft", "--config", os.path.join(ROOT, "configs", "sft_tiny_demo.toml"), f"--data.path={data}",
              "--model.preset=debug", "--data.seq_len=64", "--train.batch_size=4", "--train.micro_batch_size=2",
              "--train.num_threads=1", "--optimizer.lr=3e-3", "--schedule.kind=constant", "--schedule.warmup_steps=2",
              "--checkpoint.init_from=", "--checkpoint.interval=8", "--logging.tensorboard=false", "--logging.plot=false",
              "--logging.progress_bar=false", "--train.steps=16"]
    whole = tmp_path / "whole"
    assert run_train(*common, f"--run.out_dir={whole}") == 0
    printed = capsys.readouterr().out
    assert "sft: FIM" not in printed and "randomly initialized" in printed and "epoch(s)" in printed
    records = read_jsonl(whole / "metrics.jsonl")
    loss = [r["loss"] for r in records]
    assert [r["step"] for r in records] == list(range(1, 17))
    assert all(r["loss_tokens"] > 0 for r in records)
    assert np.mean(loss[-3:]) < 0.5 * np.mean(loss[:3]), loss  # the assistant answers are memorized

    # resume: the step-8 checkpoint in a fresh run directory continues to the same losses, bitwise
    resumed = tmp_path / "resumed"
    shutil.copytree(whole / "checkpoints" / "step-00000008", resumed / "checkpoints" / "step-00000008")
    assert run_train(*common, f"--run.out_dir={resumed}", "--resume") == 0
    assert "resumed from" in capsys.readouterr().out
    assert [(r["step"], r["loss"]) for r in read_jsonl(resumed / "metrics.jsonl")] == \
        [(r["step"], r["loss"]) for r in records[8:]]

    # init_from a run's checkpoints/ directory: its newest checkpoint; a pretraining dataset is refused
    started = tmp_path / "started"
    assert run_train(*common, f"--run.out_dir={started}", f"--checkpoint.init_from={whole / 'checkpoints'}",
                     "--train.steps=1", "--optimizer.lr=1e-12") == 0
    assert f"model weights from {whole / 'checkpoints' / 'step-00000016'}" in capsys.readouterr().out
    assert read_jsonl(started / "metrics.jsonl")[0]["loss"] < 0.5 * loss[0]
    plain = tmp_path / "plain"
    plain.mkdir()
    with ShardWriter(plain / "s.scs", vocab_size=320, tokenizer_sha256=file_sha256(tokenizer_path)) as writer:
        writer.add(np.arange(10), score=0.0, language="python", source="file", content_hash=1)
    write_manifest(plain, build_manifest(plain))
    assert run_train(*common, f"--run.out_dir={tmp_path / 'x'}", f"--data.path={plain}") == 2
    assert "no 'sft' documents" in capsys.readouterr().err
