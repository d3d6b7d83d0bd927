"""Progress of long phases: tqdm on a terminal, periodic whole lines in a log (seedcoder.progress), and the
curation steps that used to print nothing for minutes (the pool's shards, the scorer, the report's token counts)."""

import io
import sys

import pytest
import torch

from seedcoder import progress as progress_module
from seedcoder.curate import dataset as ds
from seedcoder.curate.executor import ExecutorConfig, Task, run_tasks
from seedcoder.curate.report import build_report
from seedcoder.curate.scorer import Scorer, ScorerModel, prompt_format_for
from seedcoder.model import model_config
from seedcoder.progress import LogProgress, progress
from seedcoder.tokenizer import load_tokenizer, train_tokenizer


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_log_progress_prints_a_line_per_interval_with_eta():
    clock, out = FakeClock(), io.StringIO()
    bar = LogProgress(40, "score", unit="file", interval_s=10, file=out, clock=clock)
    for _ in range(9):  # 9 files in 4.5 s: within the interval, nothing yet
        clock.now += 0.5
        bar.update(1)
    assert out.getvalue() == ""
    clock.now += 5.5
    bar.update(1)  # 10 files in 10 s
    assert out.getvalue() == "score: 10/40 files (25%) in 10 s, about 30 s left\n"
    clock.now += 3
    bar.update(10)
    assert out.getvalue().count("\n") == 1  # 3 s after the last line: still one
    clock.now += 7
    bar.update(20)
    assert out.getvalue().splitlines()[-1] == "score: 40/40 files (100%) in 20 s"
    unknown = LogProgress(None, "tokenize", unit="document", interval_s=0, file=out, clock=clock)
    unknown.update(3)
    assert out.getvalue().splitlines()[-1] == "tokenize: 3 documents in 0 s"


def test_progress_is_tqdm_on_a_terminal_lines_in_a_log_and_silent_when_disabled(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert isinstance(progress(3, "x"), LogProgress)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress(3, "x")
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    silent = progress(3, "x", enabled=False)
    assert silent.disable


@pytest.fixture
def every_update(monkeypatch):
    """A log line at every update (interval 0) with stderr not a terminal, as in `make demo | tee`."""
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)


def test_curation_tasks_report_progress_in_a_log(every_update, tmp_path, capsys):
    tasks = [Task(key=f"part-{index:05d}", function="seedcoder.curate.executor:read_marker",
                  args={"path": str(tmp_path / "none")}) for index in range(3)]
    run_tasks(tasks, ExecutorConfig(kind="local", workers=1), description="syntax")
    assert capsys.readouterr().err.splitlines() == ["syntax: 1/3 shards (33%) in 0 s, about 0 s left",
                                                    "syntax: 2/3 shards (67%) in 0 s, about 0 s left",
                                                    "syntax: 3/3 shards (100%) in 0 s"]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    texts = [f"def function_{n}(x):\n    return x * {n}\n" for n in range(40)]
    return train_tokenizer(texts, str(tmp_path_factory.mktemp("tok") / "tokenizer.json"), vocab_size=300)


def test_scoring_reports_progress_per_batch(every_update, tokenizer_path, capsys):
    tokenizer = load_tokenizer(tokenizer_path)
    torch.manual_seed(0)
    model = ScorerModel(model_config("debug", vocab_size=tokenizer.get_vocab_size()))
    scorer = Scorer(model, tokenizer, prompt_format_for(tokenizer, 64))
    texts = [f"x = {n}\n" * (n + 1) for n in range(6)]
    scorer.score(texts, ["python"] * 6, [f"f{n}.py" for n in range(6)], batch_size=2)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" in ")[0] for line in lines[:3]] == ["scorer: 2/6 files (33%)", "scorer: 4/6 files (67%)",
                                                            "scorer: 6/6 files (100%)"]
    assert lines[3].startswith("scorer: 6 files, ")  # then the files/s summary, as before


def test_report_token_counting_reports_progress(every_update, tokenizer_path, tmp_path, capsys):
    step = str(tmp_path / "ingest")
    ds.prepare_output(step, {"step": "fixture", "name": "ingest"})
    markers = []
    for index, texts in enumerate([["a = 1\n", "b = 2\n"], ["c = 3\n"]]):
        rows = [{"id": f"id{index}{n}", "repo": "r", "path": f"f{index}{n}.py", "language": "python", "text": text,
                 "source": "file"} for n, text in enumerate(texts)]
        record = {"task": f"part-{index:05d}", "stats": ds.write_part(step, index, ds.base_table(rows))}
        ds.write_json(ds.marker_path(step, index), record)
        markers.append(record)
    ds.finish_dataset(step, markers)
    report = build_report([step, step], str(tmp_path / "report"), tokenizer=tokenizer_path)  # the 2nd: all counted
    assert report["steps"][0]["totals"]["kept_tokens"] > 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("report:")]
    assert [line.split(" in ")[0] for line in lines] == ["report: counting tokens: 2/3 files (67%)",
                                                        "report: counting tokens: 3/3 files (100%)"]
