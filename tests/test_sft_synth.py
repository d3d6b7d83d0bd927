"""The sft_synthesize step (`seedcoder.curate.sft_synth`) against the scripted OpenAI-compatible server
(tests/sft_script_server.py, real HTTP): seeds made by sft_seeds from Python files whose docstrings carry a
behaviour marker (script:good, off_format, error, prose, empty) are kept or dropped with the right reasons; the
style distribution follows blend_fraction; a rerun after a finished or a crashed run asks nothing twice."""

import collections
import os

import pytest
from sft_script_server import ScriptServer
from test_sft_seeds import file_row, make_dataset

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate import sft_seeds, sft_synth
from seedcoder.curate.errors import CurateConfigError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.sft_synth import DEFAULT_STYLES, STEP, check_response, choose_style, parse_restyled, parse_synthesis
from seedcoder.curate.step import StepContext

INLINE = ExecutorConfig(kind="local", workers=1, progress=False)


def marked_file(name, behaviour):
    text = (f'def {name}(a, b):\n    """Combine a and b (script:{behaviour})."""\n    result = a + b\n'
            f'    if result < 0:\n        result = -result\n    return result\n')
    return file_row(f"src/{name}.py", "python", text, 8.0)


def make_seeds(tmp_path, rows, shards=2):
    source = make_dataset(tmp_path / "files", rows, shards=shards)
    ctx = StepContext(kind="sft_seeds", name="sft_seeds", out_dir=str(tmp_path / "seeds"),
                      options=sft_seeds.STEP.check_options({}), inputs={"in": source}, executor=INLINE)
    sft_seeds.STEP.run(ctx)
    return str(tmp_path / "seeds")


def run(out, seeds, options, name="sft_synthesize"):
    ctx = StepContext(kind="sft_synthesize", name=name, out_dir=str(out),
                      options=STEP.check_options(options, name=name), inputs={"in": seeds}, executor=INLINE)
    return STEP.run(ctx)


def server_options(server, **extra):
    return {"generator": {"backend": "openai", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5},
            **extra}


def rows_of(directory, dropped=False):
    return [row for _, table in ds.iter_tables(str(directory), dropped=dropped) for row in table.to_pylist()]


BEHAVIOURS = {"good_one": "good", "good_two": "good", "bad_format": "off_format", "failing": "error",
              "essay": "prose", "silent": "empty"}


def test_synthesis_keeps_and_drops_with_reasons_and_a_rerun_asks_nothing(tmp_path):
    seeds = make_seeds(tmp_path, [marked_file(name, behaviour) for name, behaviour in BEHAVIOURS.items()])
    with ScriptServer() as server:
        options = server_options(server)
        success = run(tmp_path / "synth", seeds, options)
        assert dict(server.calls) == {"synthesize": 6, "restyle": 3, "respond": 3}  # only rows still in play
        kept = {row["path"]: row for row in rows_of(tmp_path / "synth")}
        dropped = {row["path"]: row for row in rows_of(tmp_path / "synth", dropped=True)}
        assert sorted(kept) == ["src/essay.py", "src/good_one.py", "src/good_two.py"]
        reasons = {path: row["drop_reason"] for path, row in dropped.items()}
        answer = "Sure! Here you go (script:off_format): something without the headers you asked for."
        assert reasons["src/bad_format.py"] == "off_format: synthesize: " + answer[:80]
        assert reasons["src/failing.py"].startswith("generator_error: synthesize: ")
        assert "500" in reasons["src/failing.py"] or "scripted failure" in reasons["src/failing.py"]
        assert reasons["src/silent.py"] == "generator_error: synthesize: the endpoint returned an empty answer"
        assert success["totals"]["drop_reasons"] == {"generator_error": 2, "off_format": 1}

        good = kept["src/good_one.py"]
        assert good["original_instruction"] == ("Write a Python function add(a, b) that returns the sum of two "
                                                "numbers (script:good).")
        assert good["text"] == good["instruction"] == "Please, in a friendly tone: " + good["original_instruction"]
        assert good["verifiable"] is True and "```python\ndef add(a, b):" in good["response"]
        assert good["style"] in DEFAULT_STYLES or good["style"].count("+") == 1
        assert good["generator"] == "openai:script" and good["source"] == "sft"
        assert good["seed_text"].startswith("def good_one(a, b):") and good["seed_kind"] == "code"
        essay = kept["src/essay.py"]
        assert essay["verifiable"] is False and "```" not in essay["response"]
        seed_ids = {row["path"]: row["id"] for row in rows_of(seeds)}
        assert {path: row["id"] for path, row in kept.items()} == {path: seed_ids[path] for path in kept}
        # dropped rows keep the seed as their text
        assert dropped["src/bad_format.py"]["text"].startswith("def bad_format(")
        assert dropped["src/bad_format.py"]["instruction"] is None

        # a rerun of the finished step: skipped, nothing asked
        before = collections.Counter(server.calls)
        run(tmp_path / "synth", seeds, options)
        assert server.calls == before

        # the step again after its output is lost (the cache in _work/ stays): every answer comes from the cache;
        # only the failed requests (not answers, so not cached) are asked again
        for entry in os.listdir(tmp_path / "synth"):
            if entry.startswith("part-") or entry == ds.SUCCESS_FILE:
                os.unlink(tmp_path / "synth" / entry)
        run(tmp_path / "synth", seeds, options)
        assert server.calls - before == collections.Counter({"synthesize": 2})
        assert {row["path"]: row for row in rows_of(tmp_path / "synth")} == kept


def test_a_crashed_run_resumes_from_the_cache(tmp_path, monkeypatch):
    seeds = make_seeds(tmp_path, [marked_file(f"f{i}", "good") for i in range(4)], shards=1)
    with ScriptServer() as server:
        options = server_options(server)

        def crash(*args, **kwargs):
            raise RuntimeError("killed during the respond round")

        monkeypatch.setattr(sft_synth, "respond_prompt", crash)
        with pytest.raises(Exception, match="killed during the respond round"):
            run(tmp_path / "synth", seeds, options)
        assert dict(server.calls) == {"synthesize": 4, "restyle": 4}
        assert not os.path.exists(tmp_path / "synth" / ds.SUCCESS_FILE)
        monkeypatch.undo()
        run(tmp_path / "synth", seeds, options)
        assert dict(server.calls) == {"synthesize": 4, "restyle": 4, "respond": 4}  # the first rounds: cached
        assert len(rows_of(tmp_path / "synth")) == 4


def test_style_distribution_follows_blend_fraction(tmp_path):
    seeds = make_seeds(tmp_path, [marked_file(f"f{i:02d}", "good") for i in range(40)], shards=2)
    with ScriptServer() as server:
        run(tmp_path / "synth", seeds, server_options(server, blend_fraction=0.3))
        assert server.calls["synthesize"] == 40  # (later prompts repeat: the script answers alike, the cache serves)
    styles = [row["style"] for row in rows_of(tmp_path / "synth")]
    assert len(styles) == 40
    blends = [style for style in styles if "+" in style]
    assert 6 <= len(blends) <= 18  # 12 expected; binomial sd 2.9
    for style in blends:
        first, second = style.split("+")
        assert first < second and first in DEFAULT_STYLES and second in DEFAULT_STYLES
    singles = [style for style in styles if "+" not in style]
    assert set(singles) <= set(DEFAULT_STYLES) and len(set(singles)) >= 5

    # the choice on many ids: the blend share and a uniform spread of styles; the same on every call
    ids = [ds.stable_id("row", str(i)) for i in range(4000)]
    chosen = [choose_style(row_id, list(DEFAULT_STYLES), 0.3, 0) for row_id in ids]
    assert chosen == [choose_style(row_id, list(reversed(DEFAULT_STYLES)), 0.3, 0) for row_id in ids]
    share = sum("+" in style for style, _ in chosen) / len(ids)
    assert 0.28 <= share <= 0.32
    counts = collections.Counter(name for _, parts in chosen for name in parts)
    assert len(counts) == 8 and max(counts.values()) / min(counts.values()) < 1.25
    assert all(len(set(parts)) == len(parts) for _, parts in chosen)
    assert not any("+" in style for style, _ in (choose_style(i, list(DEFAULT_STYLES), 0.0, 0) for i in ids[:200]))
    assert all("+" in style for style, _ in (choose_style(i, list(DEFAULT_STYLES), 1.0, 0) for i in ids[:200]))


def test_answer_formats_are_parsed_strictly():
    assert parse_synthesis("[Instruction]\nWrite f.\nIt adds.\n[Verifiable]\nYes\n") == ("Write f.\nIt adds.", True)
    assert parse_synthesis("  [Instruction]\nExplain x.\n[Verifiable]\nno") == ("Explain x.", False)
    for bad in ("Write f.\n[Verifiable]\nyes", "[Instruction]\nWrite f.\n[Verifiable]\nmaybe",
                "[Instruction]\nWrite f.", "[Instruction]\n\n[Verifiable]\nyes",
                "[Instruction]\nWrite f.\n[Verifiable]\nyes\nThanks!", "Sure: [Instruction]\nf\n[Verifiable]\nyes"):
        assert parse_synthesis(bad) is None, bad
    assert parse_restyled("[Instruction]\nPlease write f.\n") == "Please write f."
    for bad in ("Please write f.", "[Instruction]\n  \n", "[Instruction]\nf\n[Verifiable]\nyes"):
        assert parse_restyled(bad) is None, bad
    assert check_response("Here:\n```python\nx = 1\n```\n", True) == "Here:\n```python\nx = 1\n```"
    assert check_response("Just words.", False) == "Just words."
    for bad, verifiable in (("Just words.", True), ("```python\nx = 1\n", True), ("[Instruction]\nf", False),
                            ("   ", False)):
        assert check_response(bad, verifiable) is None, bad


@pytest.mark.parametrize("options, key", [({"generator": {}}, "generator"),
                                          ({"generator": {"backend": "openai"}, "blend_fraction": 1.5},
                                           "blend_fraction"),
                                          ({"generator": {"backend": "openai"}, "styles": {}}, "styles"),
                                          ({"generator": {"backend": "openai"}, "styles": {"a+b": "x"}}, "styles"),
                                          ({"generator": {"backend": "openai"}, "styles": {"one": "x"}},
                                           "blend_fraction"),
                                          ({"generator": {"backend": "openai"}, "top_p": 0.0}, "top_p")])
def test_bad_options(options, key):
    with pytest.raises(ConfigError, match=key) as error:
        STEP.check_options(options, name="sft_synthesize")
    assert "sft_synthesize" in str(error.value)


def test_bad_generator_settings_stop_the_step_before_any_shard(tmp_path):
    seeds = make_seeds(tmp_path, [marked_file("f", "good")], shards=1)
    with pytest.raises(CurateConfigError, match=r"sft_synthesize\.generator\.backend"):
        run(tmp_path / "synth", seeds, {"generator": {"backend": "nonsense"}})
    with pytest.raises(CurateConfigError, match=r"sft_synthesize\.generator"):
        run(tmp_path / "synth", seeds, {"generator": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                      "colour": "blue"}})
    assert not [name for name in os.listdir(tmp_path / "synth") if name.startswith("part-")]
