"""Oracle ratings (seedcoder.curate: rating, oracle, rubric, chat_oracles): answer parsing, the prompt, stratified
sampling, the rubric proxy, and the OpenAI-compatible backend against a fake server on 127.0.0.1 (cache,
concurrency, retries, timeouts); the oracle step with rubric = "web" (web pages; the web proxy itself:
tests/test_web_rubric.py)."""

from __future__ import annotations

import glob
import http.server
import importlib.util
import json
import math
import os
import random
import sysconfig
import threading
import time
from collections import Counter

import pytest
from web_pages import FORUM, NAVIGATION, SHOP, TUTORIAL, make_web_dataset, web_row

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate.chat_oracles import ResponseCache
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.oracle import make_oracle, stratified_sample
from seedcoder.curate.pipeline import check_options, run_step
from seedcoder.curate.rating import (
    OracleError,
    RatingRequest,
    build_rating_prompt,
    build_web_prompt,
    parse_rating,
    split_answer,
    summarize_ratings,
)
from seedcoder.curate.rubric import is_commented_code, measure_code, rubric_assessment
from seedcoder.curate.web_rubric import web_rubric_assessment

INLINE = ExecutorConfig(kind="local", workers=1, progress=False)

# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("answer, expected", [
    ("Readable and modular.\nRating: [[7]]", 7),
    ("Explanation...\nRating: [[0]]", 0),
    ("Explanation...\nRating: [[10]]", 10),
    ("**Rating:** [[ 9 ]]", 9),
    ("rating: [[6]]\n", 6),
    ("Rating: [[8.0]]", 8),
    ("First I thought Rating: [[3]], but on reflection the tests are good.\nRating: [[8]]", 8),
    ("I must answer in the form Rating: [[X]].\nThe code is fine.\nRating: [[6]]", 6),
])
def test_parse_rating_well_formed(answer, expected):
    assert parse_rating(answer) == expected


@pytest.mark.parametrize("answer, problem", [
    ("The code is good. Rating: 7", "no 'Rating: [[X]]'"),
    ("The code is good. [[7]]", "no 'Rating: [[X]]'"),
    ("Rating: [[7.5]]", "malformed rating [[7.5]]"),
    ("Rating: [[seven]]", "malformed rating [[seven]]"),
    ("Rating: [[7/10]]", "malformed rating [[7/10]]"),
    ("Rating: [[X]]", "malformed rating [[X]]"),
    ("Rating: [[]]", "malformed rating [[]]"),
    ("Rating: [[11]]", "rating 11 is outside 0-10"),
    ("Rating: [[-1]]", "rating -1 is outside 0-10"),
    ("Rating: [[100]]", "rating 100 is outside 0-10"),
    ("", "empty answer"),
    ("   \n", "empty answer"),
    (None, "empty answer"),
])
def test_parse_rating_malformed_and_out_of_range(answer, problem):
    assert parse_rating(answer) is None
    assert split_answer(answer)[2].startswith(problem), split_answer(answer)


def test_explanation_is_the_text_before_the_rating():
    explanation, rating, problem = split_answer("Clear names, small functions.\n\nRating: [[8]]\n")
    assert (explanation, rating, problem) == ("Clear names, small functions.", 8, None)


def test_prompt_has_the_rubric_and_the_code():
    code = "def add(a, b):\n    return a + b\n"
    prompt = build_rating_prompt(code, "python", "pkg/math.py")
    for needle in ("Readability", "Modularity", "Clarity", "Reusability", "configuration or data",
                   "auto-generated", "almost no logic", "Rating: [[X]]", "File: pkg/math.py", "Language: python",
                   "```python\n" + code):
        assert needle in prompt, needle
    assert prompt.index("explanation") < prompt.index("Rating: [[X]]")
    clarity = prompt[prompt.index("3. Clarity"): prompt.index("4. Reusability")]
    for needle in ("commented-out blocks of code", "debug print statements", "print(...)", "console.log(...)",
                   "System.out.println(...)"):
        assert needle in clarity, needle
    long = build_rating_prompt("x = 1\n" * 10_000, "python", "big.py", max_chars=1000)
    assert "[truncated: the first 1,000 of 60,000 characters are shown]" in long and len(long) < 4000
    fenced = build_rating_prompt('doc = """\n```python\nprint(1)\n```\n"""\n', "markdown", "a.md")
    assert "````markdown\n" in fenced  # a fence the code's own ``` cannot close


# ------------------------------------------------------------------------------------------ sampling


def test_stratified_sample_is_proportional_with_a_minimum_and_deterministic():
    rng = random.Random(5)
    languages = ["python"] * 6000 + ["cpp"] * 3000 + ["go"] * 900 + ["rust"] * 95 + ["zig"] * 5
    rng.shuffle(languages)
    chosen = stratified_sample(languages, 1000, seed=3)
    assert len(chosen) == len(set(chosen)) == 1000 and chosen == sorted(chosen)
    assert chosen == stratified_sample(languages, 1000, seed=3)
    assert chosen != stratified_sample(languages, 1000, seed=4)
    counts = Counter(languages[i] for i in chosen)
    assert counts["zig"] == 5  # all it has (below the minimum of 10)
    assert counts["rust"] == 10  # the minimum (proportional would give 9.5)
    assert abs(counts["python"] - 600) <= 2 and abs(counts["cpp"] - 300) <= 2 and abs(counts["go"] - 90) <= 2


def test_stratified_sample_edge_cases():
    languages = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    assert stratified_sample(languages, 100) == list(range(100))
    assert stratified_sample(languages, 500) == list(range(100))
    assert stratified_sample(languages, 0) == []
    few = stratified_sample(languages, 2)  # fewer rows than languages: the largest shares win
    assert len(few) == 2 and {languages[i] for i in few} == {"a", "b"}
    assert Counter(languages[i] for i in stratified_sample(languages, 6, min_per_language=5)) == {"a": 2, "b": 2, "c": 2}
    assert len(stratified_sample([None, "", "x", "x"], 2)) == 2  # missing languages count as "unknown"
    with pytest.raises(ValueError, match="n must be >= 0"):
        stratified_sample(languages, -1)


# ------------------------------------------------------------------------------------------ rubric proxy

WELL_WRITTEN = '''"""Inventory bookkeeping: items, stock levels and reorder decisions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Item:
    """One stock-keeping unit."""

    sku: str
    quantity: int
    reorder_level: int

    def needs_reorder(self) -> bool:
        """True when the stock has fallen to the reorder level."""
        return self.quantity <= self.reorder_level


class Inventory:
    """A collection of items keyed by SKU."""

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}

    def add(self, item: Item) -> None:
        """Register an item, replacing any previous one with the same SKU."""
        self._items[item.sku] = item

    def remove(self, sku: str, amount: int) -> None:
        """Take `amount` units of `sku` out of stock."""
        item = self._items[sku]
        if amount > item.quantity:
            raise ValueError(f"only {item.quantity} units of {sku} in stock")
        item.quantity -= amount

    def to_reorder(self) -> list[str]:
        """The SKUs whose stock is at or below their reorder level, sorted."""
        return sorted(sku for sku, item in self._items.items() if item.needs_reorder())


def total_units(inventory: Inventory) -> int:
    """All units in stock."""
    return sum(item.quantity for item in inventory._items.values())
'''

OBFUSCATED = '''import sys
a={}
def f(b,c,d):
 if b in a:
  if c>0:
   if d>0:
    if a[b][0]>c:
     if a[b][1]>d:
      a[b]=(a[b][0]-c,a[b][1]-d,a[b][2]*3+17,a[b][3]^255,a[b][4]+a[b][0]*c-d*91+a[b][1]%7+c*d*13-4096)
     else:
      a[b]=(a[b][0]-c,0,a[b][2]*3+17,a[b][3]^255,a[b][4]+a[b][0]*c-d*91+a[b][1]%7+c*d*13-4096)
    else:
     a[b]=(0,a[b][1]-d,a[b][2]*3+17,a[b][3]^255,a[b][4]+a[b][0]*c-d*91+a[b][1]%7+c*d*13-4096)
 else:
  a[b]=(c,d,5,77,c*d*13-4096)
def g(b):
 q=[];w=0
 for e in a:
  if a[e][0]<a[e][1]*3+9:q.append(e);w=w+a[e][0]*37%1009
 return q,w
f("x",3,4);f("y",8,2);f("x",1,1);print(g(0));f("z",5,5);print(g(1))
'''


def _rate(text, language, path):
    result = make_oracle().rate([RatingRequest(id="r", text=text, language=language, path=path)])[0]
    assert result.error is None and result.rating is not None, result
    assert result.raw.rstrip().endswith(f"Rating: [[{result.rating}]]") and "rubric-proxy" in result.raw
    return result


def test_rubric_gives_zero_to_data_generated_and_logic_free_files():
    blob = json.dumps({"items": [{"sku": f"A{i}", "quantity": i, "tags": ["x", "y"]} for i in range(200)]}, indent=2)
    assert _rate(blob, "json", "data/items.json").rating == 0
    assert _rate("a: 1\nb: [2, 3]\n", "yaml", "config.yml").rating == 0
    generated = "# Generated by the protocol buffer compiler.  DO NOT EDIT!\n# source: a.proto\n" + WELL_WRITTEN
    result = _rate(generated, "python", "a_pb2.py")
    assert result.rating == 0 and "auto-generated" in result.explanation
    go_generated = "// Code generated by mockgen. DO NOT EDIT.\npackage mocks\n\nfunc A() int { return 1 }\n"
    assert _rate(go_generated, "go", "mocks/a.go").rating == 0
    table = "PRIMES = [\n" + "".join(f"    {p}, {p + 2}, {p + 6},\n" for p in range(3, 3000, 10)) + "]\n"
    result = _rate(table, "python", "primes.py")
    assert result.rating == 0 and "mostly data" in result.explanation
    strings = "NAMES = (\n" + "".join(f'    "name_{i}",\n' for i in range(300)) + ")\n"
    assert _rate(strings, "python", "names.py").rating == 0
    imports_only = "from .a import b\nfrom .c import d\n\n__all__ = ['b', 'd']\n"
    assert _rate(imports_only, "python", "pkg/__init__.py").rating == 0
    minified = "function a(b){return b+1}" * 200
    assert _rate(minified, "javascript", "dist/app.min.js").rating == 0
    assert _rate("", "python", "empty.py").rating == 0


def test_rubric_prefers_a_well_written_module_to_an_obfuscated_one():
    good = _rate(WELL_WRITTEN, "python", "inventory.py")
    bad = _rate(OBFUSCATED, "python", "x.py")
    assert good.rating >= 7, good.raw
    assert 1 <= bad.rating <= good.rating - 3, (good.raw, bad.raw)
    for criterion in ("Readability", "Modularity", "Clarity", "Reusability"):
        assert criterion in good.explanation and criterion in bad.explanation


def with_leftovers(text, debug, commented):
    """`text` with a debug print before and a commented-out block after every `return` line (same indent)."""
    out = []
    for line in text.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        if line.strip().startswith("return "):
            out += [indent + statement for statement in debug]
            out.append(line)
            out += [indent + statement for statement in commented]
        else:
            out.append(line)
    return "\n".join(out) + "\n"


JAVA = """package shop;

import java.util.HashMap;
import java.util.Map;

/** Stock levels of the items of a shop, keyed by SKU. */
public class Inventory {
    private final Map<String, Integer> stock = new HashMap<>();

    /** Adds units of an item. */
    public void add(String sku, int units) {
        stock.merge(sku, units, Integer::sum);
    }

    /** The units in stock of an item, 0 when unknown. */
    public int unitsOf(String sku) {
        return stock.getOrDefault(sku, 0);
    }

    /** Takes units of an item out of stock. */
    public boolean remove(String sku, int units) {
        int have = unitsOf(sku);
        if (units > have) {
            return false;
        }
        stock.put(sku, have - units);
        return true;
    }
}
"""

LEFTOVERS = {  # language: (the clean file, debug prints, a commented-out block), each in the language's own syntax
    "python": (WELL_WRITTEN, ["print('DEBUG', locals())"],
               ["# old_items = dict(self._items)", "# for key, value in old_items.items():", "#     print(key, value)",
                "#     self._items[key] = value"]),
    "java": (JAVA, ['System.out.println("here " + sku);'],
             ["// int before = stock.size();", "// for (String key : stock.keySet()) {", "//     stock.put(key, 0);",
              "// }"]),
}


@pytest.mark.parametrize("language", sorted(LEFTOVERS))
def test_rubric_rates_commented_out_blocks_and_debug_prints_lower(language):
    clean, debug, commented = LEFTOVERS[language]
    messy = with_leftovers(clean, debug, commented)
    path = "inventory.py" if language == "python" else "Inventory.java"
    good, bad = rubric_assessment(clean, language, path), rubric_assessment(messy, language, path)
    assert good.metrics.commented_code_lines == good.metrics.debug_prints == 0
    returns = clean.count("return ")
    assert bad.metrics.debug_prints == returns * len(debug)
    assert bad.metrics.commented_code_lines == returns * len(commented) and bad.metrics.commented_code_blocks == returns
    assert bad.clarity < good.clarity - 3 and bad.score < good.score - 1
    assert _rate(messy, language, path).rating < _rate(clean, language, path).rating
    assert "commented-out code lines" in bad.explanation and "debug print" in bad.explanation
    # only one kind of leftover still costs, less
    only_prints = rubric_assessment(with_leftovers(clean, debug, []), language, path)
    assert bad.clarity < only_prints.clarity < good.clarity


@pytest.mark.parametrize("language, code, debug_prints, commented_lines", [
    ("python", "x = 1\n# y = compute(x)\n# return y\n# The total of the values, in cents.\nprint(x)\nbreakpoint()\n",
     2, 2),
    ("javascript", "let a = 1;\n// const b = a + 1;\n// console.log(b);\n/* if (a > 1) {\n   return a;\n} */\n"
     "console.log('a', a);\ndebugger;\n// This explains what a is for\n", 2, 5),
    ("typescript", "const a: number = 1;\nconsole.debug(a);\n// TODO: use a = 2;\n", 1, 0),
    ("java", "int a = 1;\n// System.out.println(a);\nSystem.err.println(a);\ne.printStackTrace();\n", 2, 1),
    ("c", "int a = 1;\n/* a = a + 1; */\nprintf(\"%d\\n\", a);\nfprintf(stderr, \"a\");\nsnprintf(buf, 4, \"x\");\n",
     2, 1),
    ("cpp", "int a = 1;\nstd::cout << a << std::endl;\n// std::cerr << a;\n// See https://example.com/a(b);\n", 1, 1),
    ("go", "a := 1\n// fmt.Println(a)\n// b := a + 1\nfmt.Printf(\"%d\\n\", a)\nlog.Printf(\"a\")\n", 1, 2),
])
def test_clarity_leftovers_are_measured_per_language(language, code, debug_prints, commented_lines):
    metrics = measure_code(code, language)
    assert (metrics.debug_prints, metrics.commented_code_lines) == (debug_prints, commented_lines)


def test_comments_that_are_prose_are_not_commented_out_code():
    for text in ("The total of the values, in cents.", "x = the number of items", "TODO: call reset() here;",
                 "See https://example.com/api(v2)", "if you want this, do that:", "noqa: E501", "-*- coding: utf-8 -*-",
                 "Returns the sum of a and b", "type: ignore"):
        assert not is_commented_code(text), text
    for text in ("total = compute(values)", "self.reset()", "return x;", "}", "import os", "for (int i = 0; i < n; i++) {",
                 "if value is not None and value > limit:", "b := a + 1", "from .a import b"):
        assert is_commented_code(text), text


def test_rubric_score_is_the_unrounded_mean():
    result = _rate(WELL_WRITTEN, "python", "inventory.py")
    assessment = rubric_assessment(WELL_WRITTEN, "python", "inventory.py")
    assert result.score == pytest.approx(assessment.score, abs=1e-4) and 1.0 <= result.score <= 10.0
    assert result.rating == math.floor(assessment.score + 0.5)
    zero = _rate("a: 1\n", "yaml", "a.yml")
    assert zero.rating == 0 and zero.score == 0.0 and zero.distribution is None


def test_rubric_on_real_code_is_mostly_mid_to_high():
    paths = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    sample = random.Random(0).sample(paths, 40)
    results = make_oracle().rate([
        RatingRequest(id=path, text=open(path, encoding="utf-8", errors="replace").read(), language="python", path=path)
        for path in sample
    ])
    summary = summarize_ratings(results)
    assert summary["rated"] == 40 and summary["unparseable"] == 0 and summary["failed"] == 0
    nonzero = [r.rating for r in results if r.rating]
    assert len(nonzero) >= 34 and sum(nonzero) / len(nonzero) >= 6.5, summary


def test_rubric_reports_bad_requests_without_raising():
    oracle = make_oracle("rubric")
    assert oracle.name == "rubric-proxy"
    results = oracle.rate([RatingRequest(id="ok", text="x = 1\n", language="python", path="a.py"),
                           RatingRequest(id="bad", text=None, language="python", path="b.py")])
    assert [r.id for r in results] == ["ok", "bad"]
    assert results[1].rating is None and "text is NoneType" in results[1].error
    assert summarize_ratings(results)["failed"] == 1


def test_make_oracle_errors():
    with pytest.raises(OracleError, match="unknown oracle backend 'gpt'"):
        make_oracle("gpt")
    with pytest.raises(OracleError, match="takes no options"):
        make_oracle("rubric", model="x")
    with pytest.raises(OracleError, match="`model`"):
        make_oracle("openai", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(OracleError, match="bad options"):
        make_oracle("openai", model="m", base_url="http://127.0.0.1:9/v1", no_such_option=1)
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(OracleError, match="needs the vllm package"):
            make_oracle("vllm", model="m")


# ------------------------------------------------------------------------------------------ OpenAI-compatible


class FakeOpenAI:
    """A chat-completions server on 127.0.0.1: answers 'Rating: [[len(prompt) % 11]]', counting calls; can fail the
    first `failures` calls with `failure_status`, sleep `delay_s` per call, or answer `answer` verbatim."""

    def __init__(self):
        self.calls = 0
        self.failures = 0
        self.failure_status = 500
        self.delay_s = 0.0
        self.answer: str | None = None
        self.in_flight = self.max_in_flight = 0
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.calls += 1
                    call = fake.calls
                    fake.bodies.append(body)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    if fake.delay_s:
                        time.sleep(fake.delay_s)
                    if call <= fake.failures:
                        self._send(fake.failure_status, {"error": {"message": "try again", "type": "server_error"}})
                        return
                    prompt = body["messages"][-1]["content"]
                    content = fake.answer if fake.answer is not None else (
                        f"Looks fine.\nRating: [[{len(prompt) % 11}]]")
                    self._send(200, {
                        "id": f"c{call}", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    })
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_server():
    server = FakeOpenAI()
    yield server
    server.close()


def _requests(count, offset=0):
    return [RatingRequest(id=f"id{i}", text="x = 1\n" * (i + 1), language="python", path=f"f{i}.py")
            for i in range(offset, offset + count)]


def test_openai_backend_rates_in_order_and_caches(fake_server, tmp_path):
    cache = str(tmp_path / "cache")
    oracle = make_oracle("openai", base_url=fake_server.base_url, model="fake-coder", cache_dir=cache, concurrency=3)
    assert oracle.name == "openai:fake-coder"
    requests = _requests(6)
    results = oracle.rate(requests)
    assert fake_server.calls == 6
    assert [r.id for r in results] == [q.id for q in requests]
    for request, result in zip(requests, results):
        prompt = build_rating_prompt(request.text, request.language, request.path)
        assert result.rating == len(prompt) % 11 and result.error is None and result.explanation == "Looks fine."
    body = fake_server.bodies[0]
    assert body["model"] == "fake-coder" and body["temperature"] == 0.0 and body["max_tokens"] == 1024

    again = oracle.rate(requests)  # all from the cache
    assert fake_server.calls == 6 and again == results and oracle.cache_hits == 6
    fresh = make_oracle("openai", base_url=fake_server.base_url, model="fake-coder", cache_dir=cache)
    assert fresh.rate(requests) == results and fake_server.calls == 6  # the cache is on disk
    assert len(glob.glob(os.path.join(cache, "*", "*.json"))) == 6
    assert not glob.glob(os.path.join(cache, "**", "*.tmp"), recursive=True)
    mixed = fresh.rate(_requests(2, offset=5))  # one cached, one new
    assert fake_server.calls == 7 and mixed[0] == results[5]
    other_sampling = make_oracle("openai", base_url=fake_server.base_url, model="fake-coder", cache_dir=cache,
                                 temperature=0.7)
    other_sampling.rate(requests[:2])  # other sampling parameters: another cache key
    assert fake_server.calls == 9
    other_model = make_oracle("openai", base_url=fake_server.base_url, model="other", cache_dir=cache)
    other_model.rate(requests[:1])
    assert fake_server.calls == 10

    # a corrupt cache entry is a miss, answered again and rewritten
    prompt = build_rating_prompt(requests[0].text, requests[0].language, requests[0].path)
    entry = fresh.cache._path(ResponseCache.key("fake-coder", prompt, fresh.sampling))
    with open(entry, "w") as file:
        file.write("{not json")
    fresh.rate(requests)
    assert fake_server.calls == 11 and json.load(open(entry))["answer"].startswith("Looks fine.")


def test_openai_backend_runs_requests_concurrently(fake_server):
    fake_server.delay_s = 0.25
    oracle = make_oracle("openai", base_url=fake_server.base_url, model="m", concurrency=4)
    started = time.perf_counter()
    results = oracle.rate(_requests(8))
    elapsed = time.perf_counter() - started
    assert all(r.rating is not None for r in results)
    assert fake_server.max_in_flight >= 3, fake_server.max_in_flight
    assert elapsed < 8 * 0.25 * 0.75, elapsed  # sequential would take 2 s


def test_openai_backend_retries_with_backoff(fake_server):
    fake_server.failures = 2
    oracle = make_oracle("openai", base_url=fake_server.base_url, model="m", max_retries=3, backoff_s=0.05)
    started = time.perf_counter()
    [result] = oracle.rate(_requests(1))
    assert result.rating is not None and result.error is None
    assert fake_server.calls == 3 and oracle.calls == 3
    assert time.perf_counter() - started >= 0.05 * 0.75 + 0.1 * 0.75  # two backoffs: 0.05 s, then 0.1 s (±25%)

    fake_server.calls, fake_server.failures = 0, 5
    short = make_oracle("openai", base_url=fake_server.base_url, model="m", max_retries=1, backoff_s=0.01)
    [result] = short.rate(_requests(1))
    assert result.rating is None and fake_server.calls == 2
    assert result.error.startswith("request failed after 2 attempt(s): InternalServerError"), result.error
    assert summarize_ratings([result])["failed"] == 1

    fake_server.calls, fake_server.failures, fake_server.failure_status = 0, 5, 400
    [result] = short.rate(_requests(1))  # a client error is not retried
    assert fake_server.calls == 1 and result.error.startswith("request failed after 1 attempt(s): BadRequestError")


def test_openai_backend_times_out(fake_server):
    fake_server.delay_s = 3.0
    oracle = make_oracle("openai", base_url=fake_server.base_url, model="m", timeout_s=0.3, max_retries=0)
    started = time.perf_counter()
    [result] = oracle.rate(_requests(1))
    elapsed = time.perf_counter() - started
    assert result.rating is None and "APITimeoutError" in result.error, result.error
    assert elapsed < 2.0, elapsed


def test_openai_backend_counts_unparseable_answers(fake_server, tmp_path):
    fake_server.answer = "The code is nice, I would give it a seven."
    oracle = make_oracle("openai", base_url=fake_server.base_url, model="m", cache_dir=str(tmp_path))
    results = oracle.rate(_requests(3))
    assert all(r.rating is None and r.error.startswith("unparseable answer: no 'Rating: [[X]]'") for r in results)
    assert results[0].raw == fake_server.answer
    assert summarize_ratings(results) == {"total": 3, "rated": 0, "unparseable": 3, "failed": 0,
                                          "histogram": {str(k): 0 for k in range(11)}, "mean": None,
                                          "mean_score": None}


def test_openai_backend_sends_the_web_rubric_for_web_requests(fake_server, tmp_path):
    oracle = make_oracle("openai", base_url=fake_server.base_url, model="m", cache_dir=str(tmp_path))
    url = "https://example.org/tutorial/files.html"
    page = RatingRequest(id="w", text=TUTORIAL, language="text", path=url, rubric="web")
    code = RatingRequest(id="c", text=TUTORIAL, language="python", path="files.py")
    web_result, code_result = oracle.rate([page, code])
    sent = {body["messages"][-1]["content"] for body in fake_server.bodies}  # concurrent: in any order
    web_prompt, code_prompt = build_web_prompt(TUTORIAL, url), build_rating_prompt(TUTORIAL, "python", "files.py")
    assert sent == {web_prompt, code_prompt} and web_prompt != code_prompt
    assert web_result.rating == len(web_prompt) % 11 and code_result.rating == len(code_prompt) % 11  # parsed alike
    assert oracle.rate([page])[0] == web_result and fake_server.calls == 2  # cached under its own prompt


# ------------------------------------------------------------------------------------------ the step, web rubric
def test_oracle_step_rates_web_pages_with_the_web_rubric(tmp_path):
    rows = [web_row(0, TUTORIAL, "docs"), web_row(1, SHOP, "shop", url="https://shop.example.com/keyboards/k8"),
            web_row(2, FORUM, "forum"), web_row(3, NAVIGATION, "other")]
    source = make_web_dataset(tmp_path / "pages", [rows[:2], rows[2:]])
    out = str(tmp_path / "rated")
    success = run_step("oracle", out=out, inputs={"in": source}, executor=INLINE, options={"n": 10, "rubric": "web"})
    assert success["rubric"] == "web" and success["stratified_by"] == "category" and success["sampled"] == 4
    rated = {row["id"]: row for _, table in ds.iter_tables(out) for row in table.to_pylist()}
    assert sorted(rated) == [row["id"] for row in rows]
    for row in rows:
        columns = {name: row[name] for name in ("url", "category", "code_chars", "code_blocks", "words", "has_code_tags")}
        expected = web_rubric_assessment(row["text"], url=row["url"], columns=columns)
        got = rated[row["id"]]
        assert got["rating"] == expected.rating and got["rating_score"] == pytest.approx(expected.score, abs=1e-4)
        assert got["rating_explanation"].startswith("[rubric-proxy (web)") and row["url"] in got["rating_explanation"]
        # every input column is kept: web_filter reads the category of each rated page
        assert got["category"] == row["category"] and got["url"] == row["url"] and got["fetch_date"] == row["fetch_date"]
    assert rated["page0000"]["rating"] >= 7 and rated["page0002"]["rating"] >= 6
    assert rated["page0001"]["rating"] == 0 and rated["page0003"]["rating"] == 0

    # the default rubric on the same rows: files, base columns only, and a page (language "text") is data to it
    code_out = str(tmp_path / "as_code")
    code_success = run_step("oracle", out=code_out, inputs={"in": source}, executor=INLINE, options={"n": 10})
    assert code_success["rubric"] == "code" and code_success["stratified_by"] == "language"
    code_rows = [row for _, table in ds.iter_tables(code_out) for row in table.to_pylist()]
    assert len(code_rows) == 4 and "category" not in code_rows[0]
    assert all(row["rating"] == 0 and "configuration or data (text)" in row["rating_explanation"] for row in code_rows)


def test_web_sample_is_stratified_by_category(tmp_path):
    rows = [web_row(n, TUTORIAL, "docs") for n in range(6)] + [web_row(6 + n, FORUM, "forum") for n in range(2)]
    source = make_web_dataset(tmp_path / "pages", [rows])
    out = str(tmp_path / "rated")
    run_step("oracle", out=out, inputs={"in": source}, executor=INLINE, options={"n": 4, "rubric": "web", "seed": 3})
    categories = Counter(row["category"] for _, table in ds.iter_tables(out) for row in table.to_pylist())
    assert categories == {"docs": 2, "forum": 2}  # proportional would be 3 + 1; each category gets its minimum
    with pytest.raises(ConfigError, match=r"rubric: must be one of code, web, got 'html'"):
        check_options("oracle", {"rubric": "html"})
