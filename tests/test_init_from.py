"""`init_from` means the same in every stage (seedcoder.checkpoint.resolve_checkpoint): a checkpoints root (its newest
complete step), a step folder or a run folder load the same weights, and a bad path is one clear error naming it.
Pretraining and SFT (`seedcoder.train`), DPO and GRPO (`seedcoder.posttrain.policy.load_policy`)."""

import json
import os
import warnings

import pytest
import torch

from seedcoder import checkpoint as ckpt
from seedcoder.config import ConfigError
from seedcoder.errors import EXIT_USER_ERROR
from seedcoder.model import Transformer, model_config
from seedcoder.posttrain.policy import PolicySection, load_policy
from seedcoder.tokenizer import toy_tokenizer
from seedcoder.train import main as train_main
from seedcoder.train import resolve_init_from
from seedcoder.train_config import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder: run/checkpoints/step-00000002 (older) and step-00000005 (newest), the toy tokenizer beside them."""
    folder = tmp_path_factory.mktemp("run")
    tokenizer = toy_tokenizer()
    model = Transformer(model_config("debug", vocab_size=tokenizer.get_vocab_size()))
    with warnings.catch_warnings():  # "torch.distributed is disabled ... single process": it is
        warnings.simplefilter("ignore", UserWarning)
        for step, seed in ((2, 1), (5, 2)):
            model.init_weights(seed=seed)
            ckpt.save_checkpoint(folder / "checkpoints", step, model=model, optimizer=None,
                                 model_config=model.cfg.to_dict(), train_state={})
    tokenizer.save(str(folder / "checkpoints" / "tokenizer.json"))
    return folder


def test_the_one_rule(run, tmp_path):
    newest = str(run / "checkpoints" / "step-00000005")
    for path in (run, run / "checkpoints", newest):
        assert ckpt.resolve_checkpoint(path) == (newest, "ours")
    older = str(run / "checkpoints" / "step-00000002")
    assert ckpt.resolve_checkpoint(older) == (older, "ours")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert ckpt.resolve_checkpoint(hf) == (str(hf), "hf")
    with pytest.raises(ckpt.CheckpointError, match="seedcoder convert --from-hf"):
        ckpt.resolve_dcp_checkpoint(hf)
    with pytest.raises(ckpt.CheckpointError, match=f"^{tmp_path / 'nowhere'}: checkpoint directory not found$"):
        ckpt.resolve_checkpoint(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ckpt.CheckpointError, match=f"^{empty}: not a checkpoint"):
        ckpt.resolve_checkpoint(empty)
    assert ckpt.find_tokenizer(newest) == str(run / "checkpoints" / "tokenizer.json")


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_training_stages_resolve_init_from(stage, run, tmp_path, capsys):
    newest = str(run / "checkpoints" / "step-00000005")
    older = str(run / "checkpoints" / "step-00000002")
    for given, expected in ((run / "checkpoints", newest), (run, newest), (older, older)):
        cfg = load_config(None, [f"--checkpoint.init_from={given}"])
        resolve_init_from(cfg)
        assert cfg.checkpoint.init_from == expected
    cfg = load_config(None, ["--checkpoint.init_from="])
    resolve_init_from(cfg)  # no init_from: a fresh model
    assert cfg.checkpoint.init_from == ""

    # the entry point: one line on stderr naming the key and the path, before any process group or data
    nowhere = tmp_path / "nowhere"
    argv = [stage, f"--checkpoint.init_from={nowhere}", f"--run.out_dir={tmp_path / 'out'}"]
    if stage == "sft":  # SFT checks its dataset first; the init_from check is the pretraining loop's
        pytest.importorskip("tokenizers")
        from seedcoder.posttrain.sft import build_sft_dataset

        chats = tmp_path / "chats.jsonl"
        chats.write_text(json.dumps({"messages": [{"role": "user", "content": "Write 1"},
                                                  {"role": "assistant", "content": "1"}]}) + "\n")
        toy_tokenizer().save(str(tmp_path / "tokenizer.json"))
        build_sft_dataset([chats], tmp_path / "sft", tokenizer=tmp_path / "tokenizer.json", system_prompt=None)
        argv += [f"--data.path={tmp_path / 'sft'}", "--data.seq_len=16", "--data.fim_rate=0"]
    capsys.readouterr()
    assert train_main(argv) == EXIT_USER_ERROR
    assert capsys.readouterr().err.splitlines()[-1] == \
        f"seedcoder.train: config key 'checkpoint.init_from': {nowhere}: checkpoint directory not found"
    assert not os.path.exists(tmp_path / "out")


def test_post_training_policies_resolve_init_from(run, tmp_path):
    """DPO and GRPO both load their policy with load_policy ([model] init_from)."""
    newest = Transformer(model_config("debug", vocab_size=16))
    ckpt.load_model_only(run / "checkpoints" / "step-00000005", newest)
    older = Transformer(model_config("debug", vocab_size=16))
    ckpt.load_model_only(run / "checkpoints" / "step-00000002", older)
    for given, expected in ((run / "checkpoints", newest), (run, newest), (run / "checkpoints" / "step-00000002", older)):
        model, tokenizer = load_policy(PolicySection(init_from=str(given)))
        assert model.training and tokenizer.get_vocab_size() == 16
        for (name, a), b in zip(model.named_parameters(), expected.parameters()):
            assert torch.equal(a, b), (given, name)
    with pytest.raises(ConfigError) as error:
        load_policy(PolicySection(init_from=str(tmp_path / "nowhere")))
    assert str(error.value) == f"config key 'model.init_from': {tmp_path / 'nowhere'}: checkpoint directory not found"
