"""The web rubric: its prompt (every backend renders it for rubric="web") and the offline proxy
(`seedcoder.curate.web_rubric`, RubricOracle with rubric="web") on page-like texts and on the real pages of
tests/data/web."""

from __future__ import annotations

import json
import os
import statistics

import pytest
from web_pages import COOKING, FORUM, NAVIGATION, SHOP, SPAM, TUTORIAL

from seedcoder.curate.rating import (
    DEFAULT_PROMPT_CHARS,
    WEB_RUBRIC_PROMPT,
    OracleError,
    RatingRequest,
    build_prompt,
    build_rating_prompt,
    build_web_prompt,
    split_answer,
)
from seedcoder.curate.rubric import RubricOracle
from seedcoder.curate.web_rubric import line_kind, measure_page, web_rubric_answer, web_rubric_assessment

WEB_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "web")

# the tutorial's code without the prose that explains it
CODE_DUMP = "\n\n".join(block for block in TUTORIAL.split("\n\n")
                        if block.startswith(("def ", ">>>")) or block.startswith("    "))

URL = "https://example.org/tutorial/files.html"


# ------------------------------------------------------------------------------------------ the prompt
def test_web_prompt_has_the_rubric_the_url_and_the_page():
    prompt = build_web_prompt(TUTORIAL, URL)
    assert prompt.startswith(WEB_RUBRIC_PROMPT.split("{", 1)[0])
    for needle in ("as code-related text", "Teaching", "Code with explanation", "Reference value",
                   "Text quality", "Give a rating of 0", "shop", "navigation", "Judge the content, not the kind of site",
                   "Rating: [[X]]", f"URL: {URL}", "def count_matching_lines(path, word):"):
        assert needle in prompt, needle
    assert prompt.index("Rating: [[X]]") < prompt.index("def count_matching_lines")  # the page comes last
    long = build_web_prompt("word " * 10_000, URL, max_chars=1000)
    assert "[truncated: the first 1,000 of 50,000 characters are shown]" in long
    fenced = build_web_prompt("Use a fence:\n```python\nprint(1)\n```\n", URL)
    assert "\n````\nUse a fence:" in fenced  # a fence the page cannot close
    with pytest.raises(OracleError, match="max_chars must be > 0"):
        build_web_prompt("x", URL, max_chars=0)


def test_build_prompt_follows_the_request_rubric():
    code = RatingRequest(id="c", text="x = 1\n", language="python", path="a.py")
    page = RatingRequest(id="w", text=TUTORIAL, language="text", path=URL, rubric="web")
    assert build_prompt(code) == build_rating_prompt("x = 1\n", "python", "a.py")  # unchanged default
    assert build_prompt(page) == build_web_prompt(TUTORIAL, URL)
    assert build_prompt(page, max_chars=50).count("[truncated") == 1
    with pytest.raises(OracleError, match=r"request 'x': rubric must be one of code, web, got 'pages'"):
        RatingRequest(id="x", text="t", language="text", path=URL, rubric="pages")
    # the columns are not part of a request's identity
    assert page == RatingRequest(id="w", text=TUTORIAL, language="text", path=URL, rubric="web", columns={"words": 9})


# ------------------------------------------------------------------------------------------ the proxy
@pytest.mark.parametrize("line, kind", [
    ("def count_matching_lines(path, word):", "code"),
    ("    count += 1", "code"),
    (">>> list(range(5))", "code"),
    ("int main() {", "code"),
    ("x = compute(a, b);", "code"),
    ("$ pip install requests", "code"),
    ("The with statement closes the file when the block ends, even if an exception is raised.", "prose"),
    ("Return the number of lines of the file, counting the last one.", "prose"),
    ("Parameters", "short"),
    ("6.10.3.\xa0Options", "short"),
    ("  • Circle", "short"),
    ("Home", "short"),
])
def test_line_kind(line, kind):
    assert line_kind(line) == kind


def test_measure_page_finds_explained_code_and_reference_sections():
    features = measure_page(TUTORIAL)
    assert features.text_code_blocks == 2 and features.explained_blocks == 2 and features.balanced_blocks == 2
    assert features.code_lines == 10 and 0.2 < features.code_fraction < 0.4
    assert features.reference_sections == 2  # Parameters, Returns
    assert features.code_identifiers >= 1 and features.mentioned_identifiers >= 1  # count_matching_lines, in the prose
    assert features.sentences >= 8 and features.programming_terms >= 8
    assert features.shop_terms == 0 and features.noise_lines == 0
    unbalanced = measure_page("Look at this function, its call is cut short by the page:\n\n"
                              "def broken(values):\n    total = sum(values[0]\n    return total\n")
    assert unbalanced.text_code_blocks == 1 and unbalanced.balanced_blocks == 0


def test_explained_tutorial_rates_high_and_the_zero_rules():
    tutorial = web_rubric_assessment(TUTORIAL, url=URL)
    assert tutorial.zero_rule is None and tutorial.rating >= 7, tutorial.explanation
    assert tutorial.rating == int(tutorial.score + 0.5) and 1.0 <= tutorial.score <= 10.0
    expected = {SHOP: "shop or product listing", NAVIGATION: "navigation or an auto-generated listing",
                COOKING: "no code-related content", SPAM: "mostly repeated lines", "Hello world.": "almost no text"}
    for text, rule in expected.items():
        assessment = web_rubric_assessment(text)
        assert assessment.rating == 0 and assessment.score == 0.0 and rule in assessment.zero_rule, assessment.zero_rule
        assert assessment.teaching is None and f"Zero rule: {assessment.zero_rule}." in assessment.explanation
    stuffed = " ".join(["Cheap casino games and casino bonus offers, casino every day."] * 3 + ["Win now."])
    assert "spam" in web_rubric_assessment(stuffed).zero_rule


def test_explanation_counts_and_code_without_explanation_rates_lower():
    tutorial, dump = web_rubric_assessment(TUTORIAL), web_rubric_assessment(CODE_DUMP)
    assert "2 code block(s)" in tutorial.explanation and "2 of 2 block(s) in the text next to explaining prose" in (
        tutorial.explanation)
    assert dump.zero_rule is None and dump.features.explained_blocks == 0
    assert dump.teaching < tutorial.teaching - 3 and dump.code < tutorial.code and dump.score < tutorial.score - 2


def test_a_forum_thread_that_explains_code_is_judged_by_its_content():
    forum, tutorial = web_rubric_assessment(FORUM), web_rubric_assessment(TUTORIAL)
    assert forum.zero_rule is None and forum.rating >= 6, forum.explanation
    assert forum.features.forum_lines >= 6 and "forum e.g." in forum.explanation  # signatures are noise ...
    assert forum.quality < tutorial.quality  # ... that costs text quality only
    assert abs(forum.code - tutorial.code) <= 1.5 and forum.features.explained_blocks == 2
    # the same thread without its signatures and post headers rates at least as high
    clean = "\n".join(line for line in FORUM.splitlines()
                      if not line.startswith(("Posted by", "Joined", "Posts:", "Reply", "Sent from", "Thanks")))
    assert web_rubric_assessment(clean).score > forum.score


def test_boilerplate_around_a_page_lowers_its_text_quality():
    wrapped = "Home\nDocs\nBlog\nAbout\nSign in\n\n" + TUTORIAL + "\nCopyright 2024 Example Inc.\nPrivacy policy\n" \
              "Cookie settings\nBack to top\n"
    plain, noisy = web_rubric_assessment(TUTORIAL), web_rubric_assessment(wrapped)
    assert noisy.features.noise_lines >= 8 and noisy.quality < plain.quality and noisy.score < plain.score


def test_the_rows_html_code_counts_are_used():
    inline = ("Call the open() function with a path and a mode, then use the returned file object in a with "
              "statement so that it is closed. The read() method returns the whole text as a string variable, "
              "and readline() returns one line.")
    without = web_rubric_assessment(inline)
    with_columns = web_rubric_assessment(inline, columns={"code_chars": 900, "code_blocks": 3, "has_code_tags": True,
                                                          "words": 40, "url": URL, "category": "docs"})
    assert without.features.code_blocks == 0 and with_columns.features.code_blocks == 3
    assert with_columns.features.code_chars == 900 and with_columns.code > without.code
    assert "the HTML has <pre>/<code>" in with_columns.explanation
    junk = web_rubric_assessment(inline, columns={"code_chars": None, "code_blocks": float("nan"), "words": "x"})
    assert junk.features.code_blocks == 0 and junk.score == without.score  # missing values are no code
    # the category does not change the judgement (the proxy does not rate by site type)
    for category in ("docs", "forum", "shop", "qa"):
        assert web_rubric_assessment(FORUM, columns={"category": category}).score == web_rubric_assessment(FORUM).score


def test_answer_parses_and_long_pages_are_cut_to_what_a_rater_sees():
    answer = web_rubric_answer(TUTORIAL, url=URL)
    explanation, rating, problem = split_answer(answer)
    assert problem is None and rating == web_rubric_assessment(TUTORIAL).rating and f"Page: {URL}" in explanation
    assert web_rubric_answer(TUTORIAL, url=URL) == answer  # deterministic
    long = (TUTORIAL + "\n") * 200
    assert len(long) > DEFAULT_PROMPT_CHARS
    assert web_rubric_assessment(long).score == web_rubric_assessment(long[:DEFAULT_PROMPT_CHARS]).score
    with pytest.raises(TypeError, match="text must be a string, got bytes"):
        web_rubric_assessment(b"bytes")


def test_rubric_oracle_rates_web_requests_with_the_web_proxy():
    oracle = RubricOracle()
    requests = [RatingRequest(id="t", text=TUTORIAL, language="text", path=URL, rubric="web"),
                RatingRequest(id="s", text=SHOP, language="text", path="https://shop.example.com/k8", rubric="web",
                              columns={"category": "shop", "code_chars": 0}),
                RatingRequest(id="c", text=TUTORIAL, language="python", path="tutorial.py"),
                RatingRequest(id="bad", text=None, language="text", path=URL, rubric="web")]
    tutorial, shop, as_code, bad = oracle.rate(requests)
    expected = web_rubric_assessment(TUTORIAL, url=URL)
    assert tutorial.rating == expected.rating and tutorial.score == round(expected.score, 4)
    assert tutorial.explanation.startswith("[rubric-proxy (web)") and tutorial.error is None
    assert shop.rating == 0 and "shop or product listing" in shop.explanation
    assert "Readability" in as_code.explanation  # the code rubric, unchanged
    assert bad.rating is None and "text is NoneType" in bad.error


# ------------------------------------------------------------------------------------------ real pages
def _fixture_pages():
    fastwarc = pytest.importorskip("fastwarc.warc")
    html2text = pytest.importorskip("resiliparse.extract.html2text")
    encoding = pytest.importorskip("resiliparse.parse.encoding")
    with open(os.path.join(WEB_DATA, "labels.jsonl"), encoding="utf-8") as file:
        labels = {row["url"]: row for row in map(json.loads, file)}
    pages = []
    with open(os.path.join(WEB_DATA, "pages.warc.gz"), "rb") as file:
        for record in fastwarc.ArchiveIterator(file, record_types=fastwarc.WarcRecordType.response, parse_http=True):
            url = record.headers.get("WARC-Target-URI")
            if url in labels:
                body = record.reader.read()
                html = encoding.bytes_to_str(body, encoding.detect_encoding(body))
                text = html2text.extract_plain_text(html, main_content=True, preserve_formatting=True)
                pages.append((labels[url]["label"], url, text))
    return pages


def test_real_documentation_rates_above_office_and_finance_help():
    """tests/data/web: Python, C++, SQLite, PostgreSQL... documentation ("code") against GIMP, LibreOffice and
    GnuCash help ("other"), labelled per package (its README)."""
    pages = _fixture_pages()
    scores = {"code": [], "other": []}
    for label, url, text in pages:
        scores[label].append(web_rubric_assessment(text, url=url).score)
    assert len(scores["code"]) >= 30 and len(scores["other"]) >= 15
    code, other = statistics.mean(scores["code"]), statistics.mean(scores["other"])
    assert code - other >= 3.0, (code, other)
    assert statistics.median(scores["code"]) >= 5.0 > 2.0 >= statistics.median(scores["other"])
    assert sum(score < 5.0 for score in scores["other"]) >= 0.8 * len(scores["other"])
    named = {url.rsplit("/", 2)[-2] + "/" + url.rsplit("/", 1)[-1]: text for _, url, text in pages}
    assert web_rubric_assessment(named["tutorial/controlflow.html"]).rating >= 8
