"""Bad input to the post-training entry points (DPO, GRPO) ends with one line on stderr and exit code 2, not a
traceback: a config key, a data file, a damaged checkpoint, each named with its problem (seedcoder.errors). The
training entry point (`python -m seedcoder.train`) is checked in test_train.py."""

import json

import pytest

from seedcoder.errors import EXIT_USER_ERROR


def one_line(capsys, prog):
    """The single line the entry point printed on stderr, without the program name."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: "), err
    return err[len(prog) + 2:-1]


def test_dpo_bad_config_and_data_files_are_one_line(tmp_path, capsys):
    from seedcoder.posttrain.dpo import main

    assert main([f"--output.dir={tmp_path}", "--dpo.betta=1"]) == EXIT_USER_ERROR
    assert one_line(capsys, "seedcoder.posttrain.dpo") == "unknown config key 'dpo.betta' (did you mean 'dpo.beta'?)"

    missing = tmp_path / "nowhere.toml"
    assert main(["--config", str(missing)]) == EXIT_USER_ERROR
    assert one_line(capsys, "seedcoder.posttrain.dpo") == f"config file {missing} does not exist"

    assert main([f"--output.dir={tmp_path}", f"--model.init_from={tmp_path / 'nowhere'}"]) == EXIT_USER_ERROR
    assert one_line(capsys, "seedcoder.posttrain.dpo") == \
        f"config key 'model.init_from': {tmp_path / 'nowhere'}: checkpoint directory not found"

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt_ids": [1, 2], "chosen_ids": [3]\n')  # cut short
    assert main([f"--output.dir={tmp_path}", f"--data.pairs={pairs}"]) == EXIT_USER_ERROR
    assert one_line(capsys, "seedcoder.posttrain.dpo").startswith(f"config key 'data.pairs' ({pairs}): Expecting ")


def test_dpo_resume_with_every_checkpoint_damaged_is_one_line(tmp_path, capsys):
    from seedcoder.posttrain.dpo import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4]}) + "\n")
    run = [f"--output.dir={tmp_path / 'run'}", f"--data.pairs={pairs}", "--dpo.batch_size=1"]
    assert main([*run, "--dpo.steps=1"]) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000001"
    (checkpoint / "train_state.json").write_text("{")
    capsys.readouterr()
    assert main([*run, "--dpo.steps=2"]) == EXIT_USER_ERROR
    assert one_line(capsys, "seedcoder.posttrain.dpo") == (
        f"{checkpoint.parent}: every checkpoint is damaged (step-00000001: train_state.json: unreadable (Expecting "
        "property name enclosed in double quotes: line 1 column 2 (char 1))); move them away to start from step 0")


@pytest.mark.parametrize(("override", "problem"), [
    ("--grpo.group_size=0", "config section [grpo]: group_size: must be a positive integer, got 0"),
    ("--data.reward=exact", "config section [data]: reward: expected one of 'unit_tests', 'prefix', got 'exact'"),
    ("--data.problems={tmp_path}/problems.jsonl", "config key 'data.problems' ({tmp_path}/problems.jsonl): [Errno 2] "),
])
def test_grpo_bad_config_and_data_files_are_one_line(tmp_path, capsys, override, problem):
    from seedcoder.posttrain.grpo import main

    assert main([f"--output.dir={tmp_path}", override.format(tmp_path=tmp_path)]) == EXIT_USER_ERROR
    assert one_line(capsys, "seedcoder.posttrain.grpo").startswith(problem.format(tmp_path=tmp_path))


@pytest.mark.parametrize("stage, prog", [("pretrain", "seedcoder.train"), ("sft", "seedcoder.train"),
                                         ("dpo", "seedcoder.posttrain.dpo"), ("rl", "seedcoder.posttrain.grpo")])
def test_seedcoder_train_starts_every_stage(tmp_path, capsys, stage, prog):
    """`seedcoder train STAGE ...` is the stage's own entry point: the same arguments, the same one-line errors."""
    from seedcoder.cli import main

    missing = tmp_path / "nowhere.toml"
    assert main(["train", stage, "--config", str(missing)]) == EXIT_USER_ERROR
    assert str(missing) in one_line(capsys, prog)


@pytest.mark.parametrize("setting, named", [("--dpo.loss_type=bogus", "loss_type: expected one of"),
                                            ("--dpo.beta=0", "beta: must be a positive number"),
                                            ("--dpo.steps=0", "steps: must be a positive integer")])
def test_dpo_settings_are_checked_before_any_work(tmp_path, capsys, setting, named):
    """A bad [dpo] value is one line naming it, before the policy is loaded or pairs are mined."""
    from seedcoder.posttrain.dpo import main

    out = tmp_path / "run"
    assert main([f"--output.dir={out}", f"--model.init_from={tmp_path / 'nowhere'}", setting]) == EXIT_USER_ERROR
    assert one_line(capsys, "seedcoder.posttrain.dpo").startswith(f"config section [dpo]: {named}")
    assert not out.exists()
