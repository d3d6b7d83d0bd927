"""Training configs: TOML + overrides into dataclasses; bad keys and values are rejected with messages naming them."""

import glob
import os
import sys

import pytest

from seedcoder.config import ConfigError, config_from_dict
from seedcoder.train_config import TrainConfig, load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


def test_file_and_overrides(tmp_path):
    path = write(tmp_path, '[train]\nsteps = 50\nbatch_size = 16\n[optimizer]\nlr = 1e-3\n'
                           '[data]\nmixture = {python = 0.7, "*" = 0.3}\n')
    cfg = load_config(path, ["--train.steps=7", "--lr", "2e-4", "--optimizer.betas=[0.9, 0.99]", "--data.path=some/dir",
                             "--run.name=2024", "--model.overrides.n_layers=3", "--data.mixture.python=0.5",
                             "--logging.tensorboard=false", "--data.min-score=2"])
    assert cfg.train.steps == 7 and cfg.train.batch_size == 16
    assert cfg.optimizer.lr == 2e-4 and cfg.optimizer.betas == [0.9, 0.99]
    assert cfg.data.path == "some/dir" and cfg.run.name == "2024"  # string fields take the raw text
    assert cfg.model.overrides == {"n_layers": 3}
    assert cfg.data.mixture == {"python": 0.5, "*": 0.3}
    assert cfg.logging.tensorboard is False
    assert cfg.data.min_score == 2.0 and isinstance(cfg.data.min_score, float)  # ints are accepted for floats
    assert cfg.out_dir == "runs/2024" and cfg.checkpoint_dir == os.path.join("runs/2024", "checkpoints")


def test_toml_round_trip(tmp_path):
    cfg = load_config(None, ["--data.mixture.python=0.5", "--model.rope_theta=10000", "--schedule.kind=step",
                             "--schedule.milestones=[0.5]", "--schedule.factors=[0.1]"])
    again = config_from_dict(tomllib.loads(cfg.to_toml()), TrainConfig)
    assert again == cfg


@pytest.mark.parametrize(
    ("text", "overrides", "names"),
    [
        ("[train]\nstepz = 3\n", [], ["train.stepz", "train.steps", "run.toml"]),  # typo: suggestion and the file
        ("[trian]\nsteps = 3\n", [], ["trian"]),
        ("[train]\nsteps = 'many'\n", [], ["train.steps", "integer"]),
        ("", ["--train.steps=abc"], ["train.steps", "integer"]),
        ("", ["--train.stepz=3"], ["train.stepz", "did you mean 'train.steps'"]),
        ("", ["--foo.bar=1"], ["foo.bar", "[foo]"]),
        ("", ["--seed=1"], ["seed", "run.seed", "data.seed"]),  # ambiguous bare key
        ("", ["--lr"], ["--lr"]),
        ("", ["--train.steps=0"], ["train.steps", "> 0"]),
        ("", ["--schedule.kind=linear"], ["schedule.kind", "cosine"]),
        ("", ["--parallel.activation_checkpoint=some"], ["parallel.activation_checkpoint", "selective"]),
        ("", ["--parallel.tp=0"], ["parallel.tp", "> 0"]),
        ("", ["--parallel.dp_replicate=-2"], ["parallel.dp_replicate", "> 0"]),
        ("", ["--parallel.dp_shard=0"], ["parallel.dp_shard", "-1 for the ranks"]),
        ("", ["--optimizer.betas=[0.9]"], ["optimizer.betas"]),
        ("", ["--data.fim_rate=1.5"], ["data.fim_rate"]),
        ("", ["--train.batch_size=6", "--train.micro_batch_size=4"], ["train.batch_size", "micro_batch_size"]),
        ("", ["--schedule.milestones=[0.5, 0.2]", "--schedule.factors=[1, 1]"], ["schedule.milestones"]),
        ("", ["--schedule.milestones=[0.5]"], ["schedule.factors"]),
        ("", ["--model.preset=3b"], ["model.preset", "3b"]),
        ("", ["--model.overrides.n_layer=3"], ["model.overrides.n_layer", "n_layers"]),
        ("", ["--model.overrides.vocab_size=3"], ["model.overrides.vocab_size", "model.vocab_size"]),
        ("[[stages]]\nsteps = 10\nseqlen = 4\n", [], ["stages[0].seqlen"]),
        ("[[stages]]\nsteps = 10\n[train]\nsteps = 5\n", [], ["train.steps", "10"]),
        ("[train\n", [], ["run.toml", "TOML"]),
    ],
)
def test_bad_keys_and_values_are_named(tmp_path, text, overrides, names):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), overrides)
    for name in names:
        assert name in str(error.value), (name, str(error.value))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_stages_resolve_from_data_and_train(tmp_path):
    path = write(tmp_path, "[data]\nseq_len = 8192\nfim_rate = 0.1\npath = 'd'\n[train]\nbatch_size = 64\n"
                           "[[stages]]\nname = 'short'\nsteps = 10\n[[stages]]\nsteps = 5\nseq_len = 32768\nbatch_size = 16\n")
    cfg = load_config(path)
    assert cfg.train.steps == 15  # the sum of the stages
    short, long = cfg.resolved_stages()
    assert (short.name, short.steps, short.seq_len, short.batch_size, short.fim_rate, short.data_path) == \
        ("short", 10, 8192, 64, 0.1, "d")
    assert (long.name, long.steps, long.seq_len, long.batch_size) == ("stage1", 5, 32768, 16)
    assert [stage.steps for stage in TrainConfig().resolved_stages()] == [TrainConfig().train.steps]


# curate_*, dpo_* and grpo_* configs have their own schemas, loaded by their tests (test_curate_pipeline, test_dpo,
# test_grpo); the experiments' (ablation_*, self_curation_*) below; every other config is a TrainConfig.
OWN_SCHEMA = ("curate", "dpo", "grpo", "ablation", "self_curation")
TRAINING_CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.toml"))
                          if not os.path.basename(p).startswith(OWN_SCHEMA))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "ablation_*.toml"))
                                        + glob.glob(os.path.join(ROOT, "configs", "self_curation_*.toml"))),
                         ids=os.path.basename)
def test_shipped_experiment_configs_load(path):
    from seedcoder.experiments import filter_ablation, self_curation

    if os.path.basename(path).startswith("ablation"):
        assert filter_ablation.load_config(path).run.out_dir
    else:
        assert self_curation.load_self_curation_config(path).run.rounds >= 1


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=os.path.basename)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.train.steps >= 1
    assert all(stage.batch_size % stage.micro_batch_size == 0 for stage in cfg.resolved_stages())


def test_the_config_system_serves_any_stage(tmp_path):
    """load_sections / to_toml on another stage's config (GRPO: sections, a nested array of tables [[grpo.stages]]):
    TOML written and read back is equal; a section's own value checks name the section and the key."""
    from seedcoder.config import load_sections, to_toml
    from seedcoder.posttrain.grpo import GRPORunConfig, GRPOStage

    cfg = load_sections(GRPORunConfig, None, ["--grpo.stages=[{start_step=3, max_tokens=8, group_size=2}]",
                                              "--output.dir=runs/x", "--format_weight=0.5"])
    assert cfg.grpo.stages == [GRPOStage(start_step=3, max_tokens=8, group_size=2)] and cfg.data.format_weight == 0.5
    path = tmp_path / "grpo.toml"
    path.write_text(to_toml(cfg))
    assert load_sections(GRPORunConfig, path) == cfg
    with pytest.raises(ConfigError, match=r"^config section \[grpo\]: lr: must be > 0, got 0.0$"):
        load_sections(GRPORunConfig, None, ["--grpo.lr=0"])


def test_command_line_values_are_read_as_their_key_type():
    from seedcoder.config import parse_value

    assert parse_value("2024", str) == "2024" and parse_value("2024", str | None) == "2024"  # a name, not a number
    assert parse_value("[1, 2]", str) == "[1, 2]"
    assert parse_value('["a", "b"]', str | list[str]) == ["a", "b"]  # e.g. curate's `in`: one step or several
    assert parse_value("a", str | list[str]) == "a"
    assert parse_value("1e-4", float) == 1e-4 and parse_value("[0.9, 0.95]", list[float]) == [0.9, 0.95]
    assert parse_value("false", bool) is False and parse_value("abc", float) == "abc"  # rejected later, with the key
