"""The log-probability rater (seedcoder.curate.logprob_oracle): a tiny random model and a tokenizer trained here.
Its numbers are checked against direct forward passes of the model, and the three ways of reading them (the model
in memory or from our checkpoint, a Hugging Face folder, `seedcoder serve` in process) against each other."""

from __future__ import annotations

import json
import math
import os
import shutil

import pyarrow as pa
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from toy_models import toy_model, toy_tokenizer_file

from seedcoder.checkpoint import save_model_only
from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.logprob_oracle import (
    CANDIDATES,
    PROMPT_END,
    LogprobOracle,
    candidate_tokens,
    checkpoint_identity,
    rating_distribution,
)
from seedcoder.curate.oracle import make_oracle
from seedcoder.curate.pipeline import check_options, run_step
from seedcoder.curate.rating import (
    RUBRIC_PROMPT,
    WEB_RUBRIC_PROMPT,
    OracleError,
    RatingRequest,
    build_rating_prompt,
    build_web_prompt,
)
from seedcoder.generate import Engine
from seedcoder.hf_convert import convert_to_hf
from seedcoder.serve import create_app

openai = pytest.importorskip("openai")
testclient = pytest.importorskip("starlette.testclient")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CODE = "def add(a, b):\n    \"\"\"The sum.\"\"\"\n    return a + b\n"
CORPUS = [RUBRIC_PROMPT, CODE, "Rating: [[7]]\nRating: [[10]]\n0 1 2 3 4 5 6 7 8 9 10 ]]"] * 4
INLINE = ExecutorConfig(kind="local", workers=1, progress=False)
EXTRA_VOCAB = 8  # room in the model's vocabulary for tokens added to the tokenizer below


def requests(count=3):
    return [RatingRequest(id=f"r{i}", text=CODE * (i + 1), language="python", path=f"pkg/m{i}.py")
            for i in range(count)]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return str(toy_tokenizer_file(tmp_path_factory.mktemp("tokenizer"), CORPUS, vocab_size=400))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path):
    return Tokenizer.from_file(tokenizer_path)


@pytest.fixture(scope="module")
def model(tokenizer):
    return toy_model(tokenizer.get_vocab_size() + EXTRA_VOCAB, seed=3, max_seq_len=4096)


@pytest.fixture(scope="module")
def checkpoint(model, tokenizer_path, tmp_path_factory):
    """Our model-only checkpoint of `model`, with its tokenizer beside the weights."""
    path = str(tmp_path_factory.mktemp("ckpt") / "model")
    save_model_only(model, path)
    shutil.copyfile(tokenizer_path, os.path.join(path, "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def in_memory(model, tokenizer):
    oracle = LogprobOracle.from_model(model, tokenizer, name="tiny", batch_size=2, progress=False)
    return oracle, oracle.rate(requests())


def direct_candidate_logprobs(model, tokenizer, prompt):
    """log p(candidate tokens | prompt) for each candidate, from one plain forward pass per candidate (no cache):
    the prompt's tokens + the candidate's own tokens (encoded alone)."""
    prompt_ids = tokenizer.encode(prompt).ids
    out = []
    with torch.no_grad():
        for candidate in CANDIDATES:
            ids = tokenizer.encode(candidate, add_special_tokens=False).ids
            rows = model(torch.tensor([prompt_ids + ids]))[0].log_softmax(-1)
            out.append(sum(rows[len(prompt_ids) + j - 1, ids[j]].item() for j in range(len(ids))))
    return out


def logprobs_of(result):
    return json.loads(result.raw)["logprobs"]


# ------------------------------------------------------------------------------------------ the numbers
def test_distribution_expectation_and_entropy(in_memory):
    oracle, results = in_memory
    assert oracle.name == "logprob:tiny" and [r.id for r in results] == ["r0", "r1", "r2"]
    for result in results:
        assert result.error is None and len(result.distribution) == 11
        assert sum(result.distribution) == pytest.approx(1.0, abs=1e-9) and min(result.distribution) > 0
        assert result.score == pytest.approx(sum(p * k for k, p in enumerate(result.distribution)), abs=1e-9)
        assert 0.0 <= result.score <= 10.0 and result.rating == math.floor(result.score + 0.5)
        entropy = -sum(p * math.log(p) for p in result.distribution)
        assert result.entropy == pytest.approx(entropy, abs=1e-9) and 0 < result.entropy <= math.log(11) + 1e-9
        # the distribution is the normalised candidates' probabilities
        weights = [math.exp(v) for v in logprobs_of(result)]
        assert list(result.distribution) == pytest.approx([w / sum(weights) for w in weights], abs=1e-9)
        assert "expectation" in result.explanation and result.value == result.score
    assert len({round(r.score, 6) for r in results}) == 3  # different files, different ratings


def test_rating_distribution_edge_cases():
    probabilities, expectation, entropy = rating_distribution([0.0] * 11)
    assert probabilities == pytest.approx([1 / 11] * 11) and expectation == pytest.approx(5.0)
    assert entropy == pytest.approx(math.log(11))
    probabilities, expectation, entropy = rating_distribution([-math.inf] * 10 + [-3.0])
    assert expectation == 10.0 and entropy == 0.0
    with pytest.raises(ValueError, match="expected 11"):
        rating_distribution([0.0] * 10)
    with pytest.raises(ValueError, match="not all -inf"):
        rating_distribution([-math.inf] * 11)


def test_ten_is_two_tokens_and_matches_a_direct_forward_pass(in_memory, model, tokenizer):
    """Our tokenizer splits digits: "10]]" is "1", "0", "]]", scored as a sequence (the tree's "1" node has two
    children: "]]" and "0"); every candidate's log-prob equals a plain forward pass of prompt + candidate."""
    oracle, results = in_memory
    prompt = oracle.prompt(requests()[0])
    assert prompt == build_rating_prompt(CODE, "python", "pkg/m0.py") + PROMPT_END
    spelled = {candidate: ids[first:] for candidate, (ids, first) in zip(CANDIDATES, candidate_tokens(tokenizer, prompt))}
    assert [tokenizer.decode([t]) for t in spelled["10]]"]] == ["1", "0", "]]"]
    assert spelled["10]]"][0] == spelled["1]]"][0] and len(spelled["7]]"]) == 2
    expected = direct_candidate_logprobs(model, tokenizer, prompt)
    assert logprobs_of(results[0]) == pytest.approx(expected, abs=1e-4)
    assert logprobs_of(results[0])[10] < logprobs_of(results[0])[1]  # "10]]" is "1" followed by more


def test_ten_as_one_token(model, tokenizer_path):
    """A tokenizer whose "10" is one token: "10]]" is two tokens, still matching a direct forward pass."""
    tokenizer = Tokenizer.from_file(tokenizer_path)
    tokenizer.add_tokens(["10"])
    assert tokenizer.get_vocab_size() <= model.cfg.vocab_size
    oracle = LogprobOracle.from_model(model, tokenizer, name="ten", progress=False)
    prompt = oracle.prompt(requests()[1])
    ids, first = candidate_tokens(tokenizer, prompt)[10]
    assert [tokenizer.decode([t]) for t in ids[first:]] == ["10", "]]"]
    result = oracle.rate(requests()[1:2])[0]
    assert logprobs_of(result) == pytest.approx(direct_candidate_logprobs(model, tokenizer, prompt), abs=1e-4)


def test_batches_and_a_prompt_cut_to_fit_the_context(model, tokenizer, in_memory):
    _, expected = in_memory
    one_by_one = LogprobOracle.from_model(model, tokenizer, name="b1", batch_size=1, progress=False).rate(requests())
    assert [r.score for r in one_by_one] == pytest.approx([r.score for r in expected], abs=1e-5)
    packed = LogprobOracle.from_model(model, tokenizer, name="packed", batch_size=3, progress=False)
    packed.scorer.pack = True  # CUDA's 16-bit path: the batch's prompts prefilled as one packed row (here: SDPA)
    assert [r.score for r in packed.rate(requests())] == pytest.approx([r.score for r in expected], abs=1e-5)
    short = LogprobOracle.from_model(model, tokenizer, name="short", max_seq_len=1200, progress=False)
    long_request = RatingRequest(id="long", text=CODE * 200, language="python", path="long.py")
    prompt = short.prompt(long_request)
    assert "[truncated: the first" in prompt and len(tokenizer.encode(prompt).ids) <= 1200
    (result,) = short.rate([long_request])
    assert result.error is None and 0 <= result.score <= 10
    bad = short.rate([RatingRequest(id="bad", text=None, language="python", path="x.py")])[0]
    assert bad.rating is None and "text is NoneType" in bad.error


PAGE = "Adding two numbers\n\nThe function below returns the sum of its two arguments.\n\n" + CODE
PAGE_URL = "https://example.org/docs/add.html"


def test_web_requests_are_rated_with_the_web_prompt(in_memory, model, tokenizer):
    """rubric="web": the web rubric prompt + `Rating: [[`, scored exactly like a file's; cut to fit the context."""
    oracle, _ = in_memory
    page = RatingRequest(id="w", text=PAGE, language="text", path=PAGE_URL, rubric="web")
    prompt = oracle.prompt(page)
    assert prompt == build_web_prompt(PAGE, PAGE_URL) + PROMPT_END
    (result,) = oracle.rate([page])
    assert result.error is None and len(result.distribution) == 11
    assert logprobs_of(result) == pytest.approx(direct_candidate_logprobs(model, tokenizer, prompt), abs=1e-4)
    (as_file,) = oracle.rate([RatingRequest(id="c", text=PAGE, language="python", path="add.py")])
    assert logprobs_of(as_file) != pytest.approx(logprobs_of(result), abs=1e-4)  # another prompt, other numbers
    short = LogprobOracle.from_model(model, tokenizer, name="short-web", max_seq_len=1400, progress=False)
    long_page = RatingRequest(id="long", text=PAGE * 60, language="text", path=PAGE_URL, rubric="web")
    cut = short.prompt(long_page)
    assert cut.startswith(WEB_RUBRIC_PROMPT.split("{", 1)[0]) and "[truncated: the first" in cut
    assert len(tokenizer.encode(cut).ids) <= 1400 and cut.endswith(PROMPT_END)
    (long_result,) = short.rate([long_page])
    assert long_result.error is None and 0 <= long_result.score <= 10


def test_cache(model, tokenizer, in_memory, tmp_path):
    _, expected = in_memory
    first = LogprobOracle.from_model(model, tokenizer, name="tiny", cache_dir=str(tmp_path), progress=False)
    results = first.rate(requests())
    assert [r.score for r in results] == pytest.approx([r.score for r in expected], abs=1e-5)  # other batches
    again = LogprobOracle.from_model(model, tokenizer, name="tiny", cache_dir=str(tmp_path), progress=False)
    again.scorer = None  # any miss would now fail: every answer must come from the cache
    cached = again.rate(requests())
    assert again.cache_hits == 3 and cached == results
    other = LogprobOracle.from_model(model, tokenizer, name="another", cache_dir=str(tmp_path), progress=False)
    other.rate(requests(1))
    assert other.cache_hits == 0  # another model's entries are not this one's


def test_a_checkpoint_rewritten_in_place_is_another_model_for_the_cache(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"1234")
    before = checkpoint_identity(str(tmp_path))
    assert checkpoint_identity(str(tmp_path)) == before and str(tmp_path) in before
    os.utime(tmp_path / "weights.bin", ns=(1, 1))
    assert checkpoint_identity(str(tmp_path)) != before


# ------------------------------------------------------------------------------------------ three ways, one answer
def test_checkpoint_and_hugging_face_folder(checkpoint, tokenizer_path, in_memory, tmp_path):
    _, expected = in_memory
    ours = make_oracle("logprob", checkpoint=checkpoint, progress=False)
    assert ours.name == f"logprob:{checkpoint}"
    assert [r.score for r in ours.rate(requests())] == pytest.approx([r.score for r in expected], abs=1e-4)
    hf_dir = str(tmp_path / "hf")
    convert_to_hf(checkpoint, hf_dir, tokenizer=tokenizer_path, log=lambda *args: None)
    assert os.path.isfile(os.path.join(hf_dir, "config.json"))
    hf = make_oracle("logprob", checkpoint=hf_dir, batch_size=3, progress=False)
    results = hf.rate(requests())
    for got, want in zip(results, expected):
        assert logprobs_of(got) == pytest.approx(logprobs_of(want), abs=1e-4)
        assert got.score == pytest.approx(want.score, abs=1e-4)


def test_seedcoder_serve_endpoint(model, tokenizer, in_memory, tmp_path):
    """The endpoint path against `seedcoder serve`'s app in process: echo + max_tokens 0 + logprobs."""
    _, expected = in_memory
    app = create_app(Engine(model, tokenizer, max_batch=4), "tiny-served")
    with testclient.TestClient(app) as http:
        oracle = make_oracle("logprob", base_url="http://testserver/v1", http_client=http, cache_dir=str(tmp_path),
                             concurrency=1, progress=False)  # the model name is read from /v1/models
        assert oracle.name == "logprob:tiny-served"
        results = oracle.rate(requests(2))  # each file: 11 prompts echoed (~900 tokens each): a second on this CPU
        assert len(results) == 2
        for got, want in zip(results, expected):
            assert logprobs_of(got) == pytest.approx(logprobs_of(want), abs=1e-4)
            assert got.score == pytest.approx(want.score, abs=1e-4) and got.rating == want.rating
        assert oracle.rate(requests(2)) == results and oracle.cache_hits == 2


# ------------------------------------------------------------------------------------------ bad input
def word_tokenizer(words):
    """A word-level tokenizer (whitespace and punctuation split) that knows only `words` (and <unk>, eos)."""
    vocab = {word: index for index, word in enumerate(["<unk>", "<|endoftext|>", *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def test_a_vocabulary_that_cannot_spell_the_ratings(model):
    no_digits = word_tokenizer(["Rating", ":", "[[", "]]"])
    with pytest.raises(OracleError, match=r"tokenizer of model 'no-digits' cannot spell the rating '0\]\]'"):
        LogprobOracle.from_model(model, no_digits, name="no-digits")
    no_ten = word_tokenizer(["Rating", ":", "[[", "]]", *"0123456789"])  # "10" is one word it does not know
    with pytest.raises(OracleError, match=r"model 'no-ten' cannot spell the rating '10\]\]'"):
        LogprobOracle.from_model(model, no_ten, name="no-ten")


def test_bad_options(checkpoint, tmp_path):
    with pytest.raises(OracleError, match="give one of `checkpoint`.*got neither"):
        make_oracle("logprob")
    with pytest.raises(OracleError, match="got both"):
        make_oracle("logprob", checkpoint=checkpoint, base_url="http://127.0.0.1:9/v1")
    missing = str(tmp_path / "missing")
    with pytest.raises(OracleError, match=f"checkpoint {missing}: .*not found"):
        make_oracle("logprob", checkpoint=missing)
    with pytest.raises(OracleError, match="dtype must be one of fp32, bf16, fp16"):
        make_oracle("logprob", checkpoint=checkpoint, dtype="fp8")
    with pytest.raises(OracleError, match="batch_size must be a positive integer"):
        make_oracle("logprob", checkpoint=checkpoint, batch_size=0)
    with pytest.raises(OracleError, match="bad options"):
        make_oracle("logprob", checkpoint=checkpoint, temperature=0.5)
    with pytest.raises(OracleError, match=r"endpoint http://127\.0\.0\.1:9/v1 .*failed the probe"):
        make_oracle("logprob", base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout_s=5)


def fake_completions_app(mode):
    """An OpenAI-style completions server that echoes without log-probs ("no-logprobs") or refuses echo."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(body: dict):
        if mode == "refuse-echo":
            return JSONResponse({"error": {"message": "echo is not supported", "type": "invalid_request_error",
                                           "param": "echo", "code": None}}, status_code=400)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        return {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [{"index": i, "text": p, "logprobs": None, "finish_reason": "length"}
                            for i, p in enumerate(prompts)]}

    return app


@pytest.mark.parametrize("mode, message", [
    ("no-logprobs", r"endpoint http://testserver/v1 \(model 'm'\) returned no log-probabilities"),
    ("refuse-echo", r"endpoint http://testserver/v1 \(model 'm'\) failed the probe .*echo is not supported"),
])
def test_an_endpoint_without_logprobs(mode, message):
    with testclient.TestClient(fake_completions_app(mode)) as http, pytest.raises(OracleError, match=message):
        make_oracle("logprob", base_url="http://testserver/v1", model="m", http_client=http, max_retries=0)


# ------------------------------------------------------------------------------------------ the oracle step
def make_dataset(directory, texts):
    """A finished one-shard dataset of Python files, as if a step had written it (an empty list: no rows)."""
    directory = str(directory)
    ds.prepare_output(directory, {"step": "fixture", "name": os.path.basename(directory)})
    rows = [{"id": f"id{n:03d}", "repo": "r", "path": f"f{n}.py", "language": "python", "text": text, "source": "file"}
            for n, text in enumerate(texts)]
    record = {"task": "part-00000", "stats": ds.write_part(directory, 0, ds.base_table(rows))}
    ds.write_json(ds.marker_path(directory, 0), record)
    ds.finish_dataset(directory, [record])
    return directory


def test_oracle_step_writes_the_score_distribution_and_entropy(checkpoint, tmp_path):
    source = make_dataset(tmp_path / "files", [CODE * (n + 1) for n in range(4)])
    out = str(tmp_path / "rated")
    success = run_step("oracle", out=out, inputs={"in": source}, executor=INLINE,
                       options={"n": 4, "backend": "logprob", "backend_options": {"checkpoint": checkpoint,
                                                                                   "progress": False}})
    assert success["oracle"] == [f"logprob:{checkpoint}"]
    rows = [row for _, table in ds.iter_tables(out) for row in table.to_pylist()]
    assert len(rows) == 4
    for row in rows:
        assert isinstance(row["rating_score"], float) and row["rating"] == math.floor(row["rating_score"] + 0.5)
        assert len(row["rating_distribution"]) == 11 and sum(row["rating_distribution"]) == pytest.approx(1.0)
        assert 0 < row["rating_entropy"] <= math.log(11) + 1e-9
    rubric_out = str(tmp_path / "rubric")
    run_step("oracle", out=rubric_out, inputs={"in": source}, executor=INLINE, options={"n": 4})
    for row in (row for _, table in ds.iter_tables(rubric_out) for row in table.to_pylist()):
        assert row["rating_distribution"] is None and row["rating_entropy"] is None
        assert abs(row["rating_score"] - row["rating"]) <= 0.5  # the proxy's unrounded mean


def test_oracle_step_rates_web_pages_with_the_logprob_rater(checkpoint, tmp_path):
    source = str(tmp_path / "pages")
    ds.prepare_output(source, {"step": "fixture", "name": "pages"})
    rows = [{"id": f"w{n}", "repo": "example.org", "path": f"/docs/{n}.html", "language": "text", "text": PAGE * (n + 1),
             "source": "web", "url": f"https://example.org/docs/{n}.html", "category": category}
            for n, category in enumerate(["docs", "forum"])]
    record = {"task": "part-00000", "stats": ds.write_part(source, 0, pa.Table.from_pylist(rows))}
    ds.write_json(ds.marker_path(source, 0), record)
    ds.finish_dataset(source, [record])
    out = str(tmp_path / "rated")
    success = run_step("oracle", out=out, inputs={"in": source}, executor=INLINE,
                       options={"n": 2, "rubric": "web", "backend": "logprob",
                                "backend_options": {"checkpoint": checkpoint, "progress": False}})
    assert success["rubric"] == "web" and success["stratified_by"] == "category"
    rated = {row["id"]: row for _, table in ds.iter_tables(out) for row in table.to_pylist()}
    oracle = make_oracle("logprob", checkpoint=checkpoint, progress=False)
    for row in rows:
        request = RatingRequest(id=row["id"], text=row["text"], language="text", path=row["url"], rubric="web")
        (expected,) = oracle.rate([request])
        assert rated[row["id"]]["rating_score"] == pytest.approx(expected.score, abs=1e-5)
        assert rated[row["id"]]["category"] == row["category"] and len(rated[row["id"]]["rating_distribution"]) == 11


def test_an_empty_sample_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"n: the number of files to rate must be >= 1, got 0"):
        check_options("oracle", {"n": 0})
    empty = make_dataset(tmp_path / "empty", [])
    with pytest.raises(CurateStateError, match=r"nothing to rate: the input .*empty holds no rows"):
        run_step("oracle", out=str(tmp_path / "rated"), inputs={"in": empty}, executor=INLINE, options={"n": 5})
