"""web_ingest.code_stats (C++, csrc/webtext/) against its Python specification code_stats_reference: the same
(has_code_tags, code_blocks, code_chars) on the pages of the committed WARC fixture, on HTML built to break a
scanner (unclosed and nested tags, upper case, character references of every kind, NULs, widths of str) and on
random HTML drawn from those pieces; word_count against len(str.split()), counts against str.count."""

from __future__ import annotations

import html as html_lib
import os
import random

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

from seedcoder.curate import web_corpus
from seedcoder.curate.web_ingest import _element_texts, _webtext_module, code_stats, code_stats_reference, decode_html


def both(html: str, text: str) -> tuple[bool, int, int]:
    expected = code_stats_reference(html, text)
    assert code_stats(html, text) == expected, (html[:300], text[:300])
    return expected


def _pages(path: str) -> list[str]:
    with open(path, "rb") as file:
        return [decode_html(record.reader.read())[0]
                for record in ArchiveIterator(file, record_types=WarcRecordType.response, parse_http=True)]


def _assert_pages_match(pages: list[str]) -> None:
    for html in pages:
        both(html, extract_plain_text(HTMLTree.parse(html), preserve_formatting=True, main_content=True))


def test_fixture_pages_match_the_reference():
    pages = _pages(os.path.join(web_corpus.FIXTURE_DIR, "pages.warc.gz"))
    assert len(pages) >= 20
    _assert_pages_match(pages)


def test_debian_doc_pages_match_the_reference(tmp_path):
    installed = web_corpus.installed_packages(list(web_corpus.PACKAGES))
    if not installed:
        pytest.skip("no Debian documentation package is installed (make web-docs); the fixture test covers less")
    web_corpus.build_corpus(str(tmp_path), list(installed), 12, say=lambda _: None)
    pages = [page for name in sorted(os.listdir(tmp_path)) if name.endswith(".warc.gz")
             for page in _pages(str(tmp_path / name))]
    assert len(pages) >= 12 * len(installed) // 2
    _assert_pages_match(pages)


EDGE_CASES = [
    ("<pre>a = 1\n  b = 2</pre>", "a = 1\n  b = 2"),
    ("<PRE class='x'>\n\nx\n</PRE >", "x"),
    ("<pre\n data-x=1>spaced   out\ncode</pre\t>", "spaced out code"),  # found only whitespace-normalised
    ("<prefix>not a pre</prefix><codex>nor code</codex>", "not a pre nor code"),
    ("<pre>never closed <code>inner()</code> text", "inner()"),
    ("<code>open <pre>x</pre>", "x"),
    ("<pre>a</pre\u3000>b</pre>", "a"),  # \s of the closing tag is Unicode whitespace
    ("<pre><pre>nested</pre></pre>", "nested"),
    ("<code>a<b</code>", "a<b"),  # a '<' without a '>' stays
    ("<code>a <i>b</i> c</code> <code>x\x00y</code>", "a b c xy"),
    ("<code>x > y</code><code>p < q</code>", "x > y p < q"),  # one element's '<' never pairs with the next's '>'
    ("<code>&lt;T&gt; &amp;&amp; &quot;q&quot; &#39;s&#x27;</code>", "<T> && \"q\" 's'"),
    ("<code>&amp;lt; &lt &notit; &notin; &ampfoo &AMP;</code>", "&lt; < ¬it; ∉ &foo &"),
    ("<code>&#0; &#128; &#x80; &#xD800; &#x110000; &#1114111; &#99999999999999999999999; &#x1F600;</code>", "x"),
    ("<code>&#; &#x; &#xZ; & &; &unknown; &" + "a" * 40 + ";</code>", "&#; &#x;"),
    ("<code>&#12\x00;</code><code>&lt\x00x</code>", "x"),
    ("<code>   </code><pre>\n\n</pre><code>\t\u00a0</code>", "anything"),
    ("<code>multi\nline</code>", "multi\nline"),
    ("<code>f(x)</code> <code>g(y)</code>", "call f(x) now"),  # g and y are not words of the text
    ("<code>()</code><code>+=</code>", "no words needed"),
    ("<code>naïve_π</code><code>日本語</code>", "naïve_π 日本語"),
    ("<code>\U0001F600 emoji</code><pre>𝔘𝔫𝔦𝔠𝔬𝔡𝔢</pre>", "\U0001F600 emoji 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"),  # 4-byte-wide str
    ("<code>Ā wide</code><pre>x\n</pre>", "Ā wide x"),  # 2-byte-wide str
    ("<pre>", ""), ("<", ""), ("", ""), ("<code", "x"), ("<code>", "x"), ("</pre></code>", "x"),
    ("<pre>a</pre><pre>b</pre><pre>a</pre>", "b\na"),  # a later block first in the text
]


@pytest.mark.parametrize("html, text", EDGE_CASES)
def test_edge_cases_match_the_reference(html, text):
    both(html, text)


def test_edge_cases_count_what_they_should():
    assert both("<pre>a = 1\n  b = 2</pre>", "a = 1\n  b = 2") == (True, 1, len("a = 1\n  b = 2"))
    assert both("<pre\n data-x=1>spaced   out\ncode</pre\t>", "spaced out code")[1] == 1
    assert both("<prefix>not a pre</prefix><codex>nor code</codex>", "not a pre nor code") == (False, 0, 0)
    assert both("<code>f(x)</code> <code>g(y)</code>", "call f(x) now") == (True, 0, len("f(x)"))
    assert both("<code>x > y</code><code>p < q</code>", "x > y p < q") == (True, 0, len("x > y") + len("p < q"))
    entities = "<code>&amp;lt; &lt &notit; &notin; &ampfoo &AMP;</code>"
    assert html_lib.unescape("&amp;lt; &lt &notit; &notin; &ampfoo &AMP;") == "&lt; < ¬it; ∉ &foo &"
    assert both(entities, "&lt; < ¬it; ∉ &foo &") == (True, 0, len("&lt; < ¬it; ∉ &foo &"))


def test_element_texts_keep_elements_apart():
    assert _element_texts(["x > y", "p < q", "a<b>c"]) == ["x > y", "p < q", "ac"]


PIECES = ["<pre>", "</pre>", "<PRE class=\"a\">", "</pre >", "<code>", "</code>", "<CODE>", "</Code\n>", "<prefix>",
          "<i>", "</i>", "<", ">", "&lt;", "&amp;", "&gt", "&#65;", "&#x42;", "&#0;", "&#xD800;", "&notit;", "&zz;",
          "&", "#", ";", "\n", " ", "  ", "\t", "\u00a0", "\u3000", "\x00", "x", "y = 1", "f(x)", "foo.bar",
          "é", "Ā", "日本", "\U0001F600", "print(x)", "if a:\n    b"]


def test_random_html_matches_the_reference():
    rng = random.Random(20261207)
    for _ in range(3000):
        html = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40)))
        kept = [piece for piece in html_lib.unescape(html).split("<") if rng.random() < 0.7]
        text = rng.choice([" ".join(kept), "\n".join(kept), "", html_lib.unescape(html)])
        both(html, text)


def test_word_count_is_len_split():
    word_count = _webtext_module().word_count
    for text in ["", " ", "a", " a  b ", "\u00a0x\u2003y\x1cz\x85w", "é ü\n\t日本", "\U0001F600 x", "x" * 1000]:
        assert word_count(text) == len(text.split()), repr(text)


def test_counts_are_str_count():
    counts = _webtext_module().counts
    rng = random.Random(7)
    needles = ("a", "aa", "aba", "<h1", "<pre", "ld+json", "itemtype", "toc", "x", "é")[:-1]
    for _ in range(500):
        text = "".join(rng.choice(["a", "b", "aa", "<h1", "<pre", "ld+json", "itemtype", " ", "é", "Ā", "\U0001F600"])
                       for _ in range(rng.randint(0, 30)))
        assert counts(text, needles) == tuple(text.count(needle) for needle in needles), text
    assert counts("abc", ("",)) == (4,) and counts("", ("a",)) == (0,)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="code_stats"):
        code_stats(b"<pre>x</pre>", "x")
    with pytest.raises(TypeError, match="word_count"):
        _webtext_module().word_count(None)
    with pytest.raises(TypeError, match=r"needles\[1\] must be an ASCII str"):
        _webtext_module().counts("text", ("a", "é"))
