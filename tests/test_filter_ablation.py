"""The filter ablation (seedcoder.experiments): its plumbing end to end on a tiny version, not its outcome.

The whole tiny experiment runs once per module (a ~40-file corpus of the standard library, the debug model, 4 steps,
2 seeds, pass@k on 2 problems; about 12 s on an idle 2-core machine, a minute or two when it is busy): four
arms, the same token budget in every run, results.json / report.md / curves.png consistent with the runs, a
rerun that skips finished work and redoes only what was lost. Its data phase alone (`run.until = "arms"`, a fresh
debug scorer, no pretraining) checks the arms: the same number of files dropped by (b), (c) and (d), each by its
own criterion, one tokenizer, held-out files never in any arm, no HumanEval match in the training data, row ids
that do not depend on the output folder. The building blocks (split, labels, corpus sampling and resume, arm
selection, statistics, the losses, the easy problems) and config errors have their own tests.

Slow (`make test-slow`): changed settings that start the runs and the scorer over, and a SIGKILLed experiment
(a subprocess) that the same command finishes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from seedcoder.curate.dataset import stable_id
from seedcoder.curate.decontaminate import Decontaminator
from seedcoder.evaluation import ReferenceGenerator, evaluate_problems
from seedcoder.experiments import filter_ablation
from seedcoder.experiments.arms import (
    bottom_fraction,
    dataset_column,
    dataset_ids,
    key_fingerprint,
    ratings_by_id,
    seeded_uniform,
)
from seedcoder.experiments.corpus import CorpusSection, build_corpus, file_kind, is_heldout, read_records
from seedcoder.experiments.evals import Document, document_losses, easy_problems
from seedcoder.experiments.report import paired_difference
from seedcoder.model import Transformer, model_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = [0, 1]
STEPS, BATCH, SEQ_LEN = 4, 4, 64
DROP = 0.25

TINY = f"""
[run]
out_dir = "{{out}}"
workers = 2
device = "cpu"

[corpus]
roots = ["{{stdlib}}"]
max_bytes = 250000
max_files = 60
max_file_bytes = 20000
max_files_per_project = 4
heldout_fraction = 0.15

[oracle]
n = 24

[scorer]
checkpoint = "arm_a"
train = {{epochs = 1, batch_size = 8, max_tokens = 48}}
batch_size = 16

[arms]
drop_fraction = {DROP}

[tokenizer]
vocab_size = 400

[pretrain]
preset = "debug"
seq_len = {SEQ_LEN}
batch_size = {BATCH}
micro_batch_size = {BATCH}
steps = {STEPS}
warmup_steps = 1
eval_points = 2
seeds = {SEEDS}
num_threads = 2

[eval]
humaneval_limit = 4
heldout_max_files = 6
heldout_tokens_per_file = 64
heldout_max_tokens = 400
passk_problems = 2
passk_n = 2
passk_ks = [1, 2]
passk_max_tokens = 6
"""


def run_experiment(config: str, *extra: str) -> tuple[int, str]:
    """filter_ablation.main in this process; (exit code, stdout + stderr). The environment and torch's thread
    count, which the in-process trainer sets, are restored."""
    environment, threads = dict(os.environ), torch.get_num_threads()
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = filter_ablation.main(["--config", config, *extra])
    finally:
        os.environ.clear()
        os.environ.update(environment)
        torch.set_num_threads(threads)
    return code, output.getvalue()


@pytest.fixture
def data_phase(tmp_path_factory):
    """The tiny experiment up to its arms, with a fresh debug scorer (no pretraining at all)."""
    out = tmp_path_factory.mktemp("ablation_data")
    config = out / "tiny.toml"
    config.write_text(TINY.replace("{out}", str(out / "run")))
    code, log = run_experiment(str(config), "--run.until=arms", "--scorer.checkpoint=", "--scorer.model=debug")
    assert code == 0, log[-3000:]
    assert "stopped after the arms" in log and not (out / "run" / "runs").exists()
    return {"config": str(config), "out": out / "run", "log": log}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    config = out / "tiny.toml"
    config.write_text(TINY.replace("{out}", str(out / "run")))
    code, log = run_experiment(str(config))
    assert code == 0, log[-3000:]
    run = out / "run"
    results = json.loads((run / "results.json").read_text())
    return {"config": str(config), "out": run, "results": results, "log": log}


def arm_dataset(out, arm: str) -> str:
    return str(out / "curate" / "decontaminate") if arm == "a" else str(out / "arms" / arm / "dataset")


# ------------------------------------------------------------------------------------------ end to end
def check_four_arms_same_budget_and_every_seed(experiment):
    results, out = experiment["results"], experiment["out"]
    assert list(results["arms"]) == ["a", "b", "c", "d"]
    assert sorted((run["arm"], run["seed"]) for run in results["runs"]) == sorted(
        (arm, seed) for arm in "abcd" for seed in SEEDS)
    assert results["progress"] == {"finished_runs": 8, "planned_runs": 8}
    budgets = set()
    for arm in "abcd":
        for seed in SEEDS:
            run_dir = out / "runs" / f"{arm}-s{seed}"
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            assert [r["step"] for r in records] == list(range(1, STEPS + 1))
            budgets.add(records[-1]["tokens_seen"])
            settings = json.loads((run_dir / "result.json").read_text())["settings"]
            assert settings["train"]["data"]["path"] == str(out / "arms" / arm / "shards")
            assert settings["train"]["run"]["seed"] == seed
            # only the final checkpoint is kept; the intermediate one was evaluated first
            assert [p.name for p in sorted((run_dir / "checkpoints").glob("step-*"))] == [f"step-{STEPS:08d}"]
            assert sorted(p.name for p in (run_dir / "evals").iterdir()) == [f"step-{s:08d}.json" for s in (2, 4)]
    assert budgets == {STEPS * BATCH * SEQ_LEN} == {results["setup"]["token_budget"]}


def check_arms_drop_the_same_number_of_files_each_by_its_own_criterion(data_phase):
    out = data_phase["out"]
    rules = dataset_ids(arm_dataset(out, "a"))
    cut = math.floor(DROP * len(rules))
    assert cut >= 2
    dropped = {}
    for arm in "bcd":
        kept, gone = dataset_ids(arm_dataset(out, arm)), dataset_ids(arm_dataset(out, arm), dropped=True)
        assert len(gone) == cut and len(kept) == len(rules) - cut
        assert sorted(kept + gone) == sorted(rules)
        dropped[arm] = set(gone)
        shards = json.loads((out / "arms" / arm / "shards" / "manifest.json").read_text())
        assert shards["totals"]["documents"] == len(kept)
    # (c) dropped the lowest scores of the scorer, (d) the lowest ratings of the oracle (over every file)
    scores = dict(zip(dataset_ids(str(out / "curate" / "score")), dataset_column(str(out / "curate" / "score"), "score")))
    assert max(scores[i] for i in dropped["c"]) <= min(scores[i] for i in set(rules) - dropped["c"])
    ratings = ratings_by_id(str(out / "curate" / "oracle_all"))  # the oracle's number (rating_score)
    assert set(ratings) == set(rules)  # the oracle rated every file
    assert max(ratings[i] for i in dropped["d"]) <= min(ratings[i] for i in set(rules) - dropped["d"])
    assert dropped["b"] != dropped["c"]
    # each arm records the hash of the values it ranked by: a rescored corpus with the same counts is not stale
    steps = {arm: json.loads((out / "arms" / arm / "dataset" / "_step.json").read_text()) for arm in "bcd"}
    assert steps["b"]["options"]["key_sha256"] is None
    assert steps["c"]["options"]["key_sha256"] == key_fingerprint("score", str(out / "curate" / "score"), None)
    assert steps["d"]["options"]["key_sha256"] == key_fingerprint("rating", "", str(out / "curate" / "oracle_all"))
    # one tokenizer for every arm: arm (a)'s
    manifests = [json.loads((out / "arms" / arm / "shards" / "manifest.json").read_text()) for arm in "abcd"]
    assert len({m["tokenizer"]["sha256"] for m in manifests}) == 1
    assert all(m["tokenizer"]["vocab_size"] == 400 for m in manifests)


def check_heldout_files_are_in_no_arm_and_humaneval_in_no_training_file(data_phase):
    out = data_phase["out"]
    heldout = [record["path"] for record in read_records(str(out / "corpus" / "heldout.jsonl"))]
    files = read_records(str(out / "corpus" / "files.jsonl"))
    train = [record["path"] for record in files if record["split"] == "train"]
    assert sorted(heldout) == sorted(record["path"] for record in files if record["split"] == "heldout")
    assert heldout and train and not set(heldout) & set(train)
    on_disk = sorted(str(p.relative_to(out / "corpus" / "train")) for p in (out / "corpus" / "train").rglob("*")
                     if p.is_file())
    assert on_disk == sorted(train)
    assert all(is_heldout(path, 0.15) for path in heldout) and not any(is_heldout(path, 0.15) for path in train)
    for arm in "abcd":
        paths = set(dataset_column(arm_dataset(out, arm), "path"))
        assert paths and not paths & set(heldout)
    # row ids are a function of the corpus path alone: the same in any output folder
    rules = arm_dataset(out, "a")
    assert dataset_ids(rules) == [stable_id("dir", "corpus", path) for path in dataset_column(rules, "path")]
    decontaminator = Decontaminator.from_sources(humaneval=True)
    assert [text for text in dataset_column(arm_dataset(out, "a"), "text") if decontaminator.match(text)] == []


def test_data_phase_arms_and_splits(data_phase):
    check_arms_drop_the_same_number_of_files_each_by_its_own_criterion(data_phase)
    check_heldout_files_are_in_no_arm_and_humaneval_in_no_training_file(data_phase)


def check_outputs_exist_and_agree_with_the_runs(experiment):
    out, results = experiment["out"], experiment["results"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert results["verdict"] in report and results["command"] in report
    for arm in "abcd":
        finals = {}
        for seed in SEEDS:
            run = json.loads((out / "runs" / f"{arm}-s{seed}" / "result.json").read_text())
            assert [record["step"] for record in run["evals"]] == [2, 4]
            finals[seed] = run["evals"][-1]
            assert 0 < finals[seed]["humaneval_loss"] < 10 and 0 < finals[seed]["heldout_loss"] < 10
            assert finals[seed]["passk"]["problems"] == 2 and finals[seed]["passk"]["n"] == 2
        for metric in ("humaneval_loss", "humaneval_solution_loss", "heldout_loss", "pass@1"):
            values = [finals[seed][metric] for seed in SEEDS]
            entry = results["summary"][arm][metric]
            assert entry["values"] == pytest.approx(values)
            assert entry["mean"] == pytest.approx(np.mean(values))
            assert entry["std"] == pytest.approx(np.std(values, ddof=1))
            assert f"{entry['mean']:.4f} ± {entry['std']:.4f}" in report
        curve = results["curves"][arm]["humaneval_loss"]
        assert curve["steps"] == [2, 4]
        assert curve["mean"][-1] == pytest.approx(results["summary"][arm]["humaneval_loss"]["mean"])
    pairs = {(c["metric"], c["arm"], c["baseline"]): c for c in results["comparisons"]}
    c_a = pairs[("humaneval_loss", "c", "a")]
    expected = [results["summary"]["c"]["humaneval_loss"]["values"][i] - results["summary"]["a"]["humaneval_loss"]["values"][i]
                for i in range(len(SEEDS))]
    assert c_a["differences"] == pytest.approx(expected)
    files = read_records(str(out / "corpus" / "files.jsonl"))
    assert results["corpus"]["splits"]["train"]["files"] == sum(record["split"] == "train" for record in files)


def check_a_rerun_skips_finished_work_and_redoes_only_what_was_lost(experiment):
    out, before = experiment["out"], experiment["results"]
    result_files = sorted((out / "runs").glob("*/result.json"))
    stamps = {path: path.stat().st_mtime_ns for path in result_files}
    lost = out / "runs" / "d-s1"
    (lost / "result.json").unlink()
    (lost / "evals" / f"step-{STEPS:08d}.json").unlink()  # the final evaluation is redone from the kept checkpoint
    code, log = run_experiment(experiment["config"])
    assert code == 0, log[-3000:]
    assert log.count("finished earlier") == 7 and "run d-s1: pretraining" in log
    assert "the run is already complete" in log  # the trainer resumed at its final checkpoint: no step trained
    assert "step 1/" not in log
    assert "[curate] ingest: already finished" in log and "[corpus]" in log and "skipped" in log
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp or path.parent == lost
    after = json.loads((out / "results.json").read_text())
    assert after["summary"] == before["summary"]  # the lost evaluation came out the same


def test_tiny_experiment_end_to_end(experiment):
    """One test over the shared run (under pytest-xdist a module fixture is made once per worker using it)."""
    check_four_arms_same_budget_and_every_seed(experiment)
    check_outputs_exist_and_agree_with_the_runs(experiment)
    check_a_rerun_skips_finished_work_and_redoes_only_what_was_lost(experiment)  # last: it reruns the experiment


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("override, message", [
    ("--pretrain.eval_points=3", "eval_points: must divide steps"),
    ("--eval.passk_ks=[1,9]", "passk_ks"),
    ("--arms.drop_fraction=1.5", "drop_fraction"),
    ("--pretrain.presett=tiny", "pretrain.preset"),
    ("--pretrain.overrides.nlayers=2", "nlayers"),
    ("--corpus.roots=['/no/such/dir']", "corpus.roots"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path, override, message):
    config = tmp_path / "c.toml"
    config.write_text(TINY.replace("{out}", str(tmp_path / "run")))
    code, log = run_experiment(str(config), override)
    assert code == 2
    assert message in log and "Traceback" not in log


def test_a_folder_not_made_by_the_experiment_is_refused(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(TINY.replace("{out}", str(tmp_path / "run")))
    (tmp_path / "run" / "curate" / "ingest").mkdir(parents=True)
    (tmp_path / "run" / "curate" / "ingest" / "mine.txt").write_text("not ours")
    code, log = run_experiment(str(config))
    assert code == 2 and "not made by a curation step" in log and "Traceback" not in log


# ------------------------------------------------------------------------------------------ building blocks
def test_heldout_split_is_a_function_of_the_path():
    paths = [f"site-packages/pkg{i}/mod{i}.py" for i in range(4000)]
    held = [path for path in paths if is_heldout(path, 0.1)]
    assert 300 < len(held) < 500
    assert held == [path for path in paths if is_heldout(path, 0.1)]
    assert set(held) <= {path for path in paths if is_heldout(path, 0.2)}


def test_file_kinds():
    table = "DATA = {\n" + "".join(f"    '{i:04x}': ({i}, 0x{i:x}, 'x'),\n" for i in range(60)) + "}\n"
    code = "def f(x):\n    \"\"\"Add one.\"\"\"\n    return x + 1\n"
    assert file_kind("site-packages/google/protobuf/a_pb2.py", code) == "pb2"
    assert file_kind("stdlib/encodings/table.py", table) == "data_table"
    assert file_kind("site-packages/pkg/gen.py", "# Generated by the tool. DO NOT EDIT!\n" + code) == "generated"
    assert file_kind("site-packages/pkg/app.min.js", "var a=1;" * 400) == "minified"
    assert file_kind("site-packages/pkg/tests/test_a.py", code) == "test"
    assert file_kind("site-packages/pip/_vendor/six.py", code) == "vendored"
    assert file_kind("site-packages/pkg/data.json", '{"a": 1}') == "data_file"
    assert file_kind("site-packages/pkg/x.h", "int f(void);\n") == "other_language"
    assert file_kind("stdlib/heapq.py", code) == "library"


def test_corpus_sampling_caps_splits_and_resumes(tmp_path):
    root = tmp_path / "src"
    for project in ("alpha", "beta"):
        for index in range(30):
            path = root / project / f"mod_{index:02d}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"def f_{project}_{index}(x):\n    return x + {index}\n" * 20)
    (root / "alpha" / "__pycache__").mkdir()
    (root / "alpha" / "__pycache__" / "skip.py").write_text("x = 1\n" * 100)
    (root / "alpha" / "binary.py").write_bytes(b"\x00\x01" * 200)
    cfg = CorpusSection(roots=[str(root)], extensions=[".py"], max_files_per_project=12, heldout_fraction=0.2,
                        max_bytes=1 << 20, min_file_bytes=100)
    lines: list[str] = []
    manifest = build_corpus(cfg, str(tmp_path / "corpus"), log=lines.append)
    files = read_records(str(tmp_path / "corpus" / "files.jsonl"))
    assert len(files) == manifest["splits"]["train"]["files"] + manifest["splits"]["heldout"]["files"]
    projects = [record["project"] for record in files]
    assert projects.count("src/alpha") <= 12 and projects.count("src/beta") == 12  # the cap; alpha lost its binary
    assert manifest["skipped"] == {"binary": 1} or projects.count("src/alpha") == 12
    assert not any("__pycache__" in record["path"] for record in files)
    assert all((record["split"] == "heldout") == is_heldout(record["path"], 0.2) for record in files)
    again = build_corpus(cfg, str(tmp_path / "corpus"), log=lines.append)
    assert again == manifest and "already holds this corpus" in lines[-1]
    some = next((tmp_path / "corpus" / "train").rglob("*.py"))
    some.write_text("changed")  # a damaged output is made again
    rebuilt = build_corpus(cfg, str(tmp_path / "corpus"), log=lines.append)
    assert "already holds" not in lines[-1] and rebuilt["sha256"] == manifest["sha256"]
    other = build_corpus(dataclasses.replace(cfg, seed=1), str(tmp_path / "other"), log=lines.append)
    assert other["sha256"] != manifest["sha256"]  # another seed draws other files


def test_corpus_section_checks_its_values():
    with pytest.raises(ValueError, match="heldout_fraction"):
        CorpusSection(heldout_fraction=0.0)
    with pytest.raises(ValueError, match="min_file_bytes"):
        CorpusSection(min_file_bytes=10, max_file_bytes=5)


def test_bottom_fraction_counts_and_breaks_ties_by_the_seeded_order():
    ids = [f"row{i}" for i in range(10)]
    keys = np.array([5, 1, 5, 5, 0, 5, 5, 5, 5, 5], dtype=float)
    tiebreak = seeded_uniform(ids, 0, "tiebreak")
    chosen = bottom_fraction(keys, tiebreak, 0.35)  # floor(3.5) = 3: rows 4, 1, then one of the 5s
    assert len(chosen) == 3 and list(chosen[:2]) == [4, 1]
    fives = [i for i in range(10) if keys[i] == 5]
    assert chosen[2] == min(fives, key=lambda i: tiebreak[i])
    assert not np.array_equal(seeded_uniform(ids, 0, "tiebreak"), seeded_uniform(ids, 1, "tiebreak"))
    assert len(bottom_fraction(keys, tiebreak, 0.0)) == 0


def test_paired_difference_verdicts():
    better = paired_difference({0: 1.0, 1: 1.1, 2: 0.9}, {0: 2.0, 1: 2.1, 2: 2.05}, lower_is_better=True)
    assert better["verdict"] == "lower" and better["better"] is True and better["mean"] == pytest.approx(-1.05)
    noise = paired_difference({0: 1.0, 1: 2.0, 2: 0.5}, {0: 1.5, 1: 1.0, 2: 1.0}, lower_is_better=True)
    assert noise["verdict"] == "no measurable difference"
    worse = paired_difference({0: 0.1, 1: 0.2, 2: 0.15}, {0: 0.5, 1: 0.7, 2: 0.6}, lower_is_better=False)
    assert worse["verdict"] == "lower" and worse["better"] is False
    assert paired_difference({0: 1.0}, {1: 1.0}, lower_is_better=True)["verdict"] == "not measured"


def test_easy_problems_pass_with_their_references_and_fail_otherwise():
    problems = easy_problems()
    assert len({p.task_id for p in problems}) == len(problems) >= 10
    passed = evaluate_problems(problems, ReferenceGenerator(problems), n=1, ks=[1], progress=False, workers=2)
    assert passed["pass_at_k"]["pass@1"] == 1.0
    wrong = [problem for problem in problems[:3]]
    for problem in wrong:
        problem.reference = "    return None\n"
    failed = evaluate_problems(wrong, ReferenceGenerator(wrong), n=1, ks=[1], progress=False, workers=2)
    assert failed["pass_at_k"]["pass@1"] == 0.0


def test_document_losses_match_a_direct_computation():
    torch.manual_seed(0)
    model = Transformer(model_config("debug", vocab_size=64))
    rng = np.random.default_rng(0)
    documents = [Document(rng.integers(0, 64, size=n).astype(np.int64), {"tail": np.arange(n) >= n // 2})
                 for n in (5, 23, 40)]
    totals = document_losses(model, documents, seq_len=16, batch_size=2)
    expected_all, expected_tail, counted, counted_tail = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for document in documents:
            ids = torch.from_numpy(document.ids)
            for start in range(0, len(ids) - 1, 16):
                inputs, targets = ids[start:start + 16], ids[start + 1:start + 17]
                inputs = inputs[:len(targets)]
                logits = model(inputs.unsqueeze(0))[0]
                nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
                tail = torch.from_numpy(document.masks["tail"][start + 1:start + 1 + len(targets)])
                expected_all += float(nll.sum())
                expected_tail += float(nll[tail].sum())
                counted += len(targets)
                counted_tail += int(tail.sum())
    assert totals["all"][1] == counted == sum(n - 1 for n in (5, 23, 40))
    assert totals["all"][0] == pytest.approx(expected_all, rel=1e-4)
    assert totals["tail"] == (pytest.approx(expected_tail, rel=1e-4), counted_tail)


# ------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_changed_settings_start_the_runs_and_the_scorer_over(experiment):
    """A run whose settings changed is made again, and so is the scorer that started from run a-s0; what lies
    upstream of the runs is kept. (Last of the tests on the shared experiment: it changes it.)"""
    out = experiment["out"]
    scorer_before = json.loads((out / "curate" / "scorer_train" / "metrics.json").read_text())
    code, log = run_experiment(experiment["config"], "--pretrain.steps=2", "--pretrain.eval_points=1",
                               "--pretrain.seeds=[0]")
    assert code == 0, log[-3000:]
    assert log.count("settings changed") == 4 and "the scorer's base model changed" in log
    assert "already holds this corpus" in log and "[curate] syntax: already finished" in log
    assert json.loads((out / "runs" / "a-s0" / "result.json").read_text())["evals"][-1]["step"] == 2
    scorer_after = json.loads((out / "curate" / "scorer_train" / "metrics.json").read_text())
    assert scorer_before["settings"]["checkpoint"].endswith(f"step-{STEPS:08d}")
    assert scorer_after["settings"]["checkpoint"].endswith("step-00000002")
    results = json.loads((out / "results.json").read_text())
    assert results["progress"] == {"finished_runs": 4, "planned_runs": 4}


@pytest.mark.slow
def test_killed_mid_training_then_rerun_finishes_with_every_run(tmp_path):
    """SIGKILL the experiment (a subprocess) during its runs; the same command finishes the experiment."""
    config = tmp_path / "c.toml"
    config.write_text(TINY.replace("{out}", str(tmp_path / "run")))
    command = [sys.executable, "-m", "seedcoder.experiments.filter_ablation", "--config", str(config)]
    environment = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "run b-s0: pretraining" in line:
            break
    process.kill()
    process.wait(timeout=30)
    assert not (tmp_path / "run" / "results.json").exists() or json.loads(
        (tmp_path / "run" / "results.json").read_text())["progress"]["finished_runs"] < 8
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["progress"] == {"finished_runs": 8, "planned_runs": 8}
    shutil.rmtree(tmp_path / "run")
