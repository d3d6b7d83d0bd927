"""Web ingest: WARC / WARC.gz files and folders of HTML pages -> a dataset of web pages (main text, code verbatim).

    plan = plan_web_ingest(["crawl/CC-MAIN-00000.warc.gz", {"path": "site/", "base_url": "https://docs.x.org/"}],
                           WebIngestOptions())
    for index, (source, entries) in enumerate(plan.tasks):               # what the executor runs per shard
        web_ingest_part(out_dir, index, plan.sources[source], entries, options)

Inputs, each a path or a table {path = "...", base_url = "https://..."}:

* a WARC file (`.warc`, `.warc.gz`; Common Crawl's format, read with fastwarc): one shard per file. Response
  records (HTTP) and resource records are pages; every other record (warcinfo, request, metadata, revisit, ...)
  is one dropped row "not_response: request". A record without WARC headers, an HTTP block without a status
  line, a body shorter than its Content-Length, or bytes fastwarc cannot read (a truncated or corrupt gzip
  member, garbage between records) each give one "malformed_record: ..." row; reading resumes at the next
  intact record (the next gzip member that inflates to "WARC/...", or the next "WARC/1." line), so one bad
  record never stops the run nor hides the records after it.
* a folder: walked in sorted order (directory links are not followed); its `.warc` / `.warc.gz` files are read
  as above, its `.html` / `.htm` files are pages whose URL is `base_url` + the relative path (default
  `file:///` + the relative path; their `repo` is then the folder's name). Other files are skipped (counted
  in `_SUCCESS.json` as `skipped_files`).

Each page: a non-2xx status is "http_status: 404 Not Found"; a Content-Type other than HTML is "not_html:
application/pdf" (a page without one is sniffed); a body over `max_page_bytes` is "oversize" (judged from its
length, never read). The bytes are decoded with the charset of a byte-order mark, else the HTTP header's, else
a <meta> tag's (WHATWG names: latin1 -> cp1252), else UTF-8, with undecodable bytes replaced (U+FFFD); an
unknown charset name falls back to UTF-8. A body with a NUL byte is "binary", one whose decoding replaced more
than `max_replaced_fraction` of its characters is "undecodable". Extraction: resiliparse's main-content
extraction (boilerplate such as navigation, sidebars and footers removed) with formatting preserved, so <pre>
blocks keep their lines and indentation. Text with no words is "empty", fewer than `min_words` words
"too_short" (that row keeps its text). Code of the main content (`code_stats`): `code_blocks` = <pre> blocks
(and multi-line <code> outside <pre>) whose text is in the extracted main text, `code_chars` = their characters
plus those of inline <code> whose words are words of the main text (so code in navigation the extractor removed
does not count); `has_code_tags` = any of them (counted in C++, seedcoder._webtext; `code_stats_reference` is the
same in Python). `category` (`page_category`): docs, qa, forum, blog, shop, news
or other, from schema.org declarations, the URL and the page's structure.

Rows (the web schema every web step shares): the base columns (`id`: sha1 of the WARC file's name and the
record id, or of the folder's name and the page's relative path; `repo`: the URL's host; `path`: the URL's
path and query; `language` "text"; `source` "web"; `text`) plus `url`, `fetch_date` (the WARC-Date, ISO 8601
UTC; None for pages in folders), `content_type`, `has_code_tags`, `code_blocks`, `code_chars`, `words`,
`category`, `size_bytes` (the HTML body's bytes).
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime
import hashlib
import html as html_lib
import json
import os
import re
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from html import entities as html_entities
from typing import Any
from urllib.parse import quote, urlsplit

import pyarrow as pa
from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import map_encoding_to_html5
from resiliparse.parse.html import HTMLTree

from seedcoder.config import build_section, option
from seedcoder.curate.dataset import base_table, marker_path, split_rows, write_part
from seedcoder.curate.errors import CurateConfigError
from seedcoder.curate.executor import Task
from seedcoder.curate.step import StepContext, StepKind, say

try:
    from seedcoder import _webtext
    _webtext.set_tables(html_entities.html5, html_lib._invalid_charrefs, html_lib._invalid_codepoints)  # unescape's
except ImportError as error:  # the extension is built by setup.py; planning and the reference run without it
    _webtext, _WEBTEXT_ERROR = None, error

CATEGORIES = ("docs", "qa", "forum", "blog", "shop", "news", "other")
HTML_TYPES = ("text/html", "application/xhtml+xml")
WARC_SUFFIXES = (".warc", ".warc.gz")
PAGE_SUFFIXES = (".html", ".htm", ".xhtml")
WEB_SCHEMA = pa.schema([
    ("url", pa.string()), ("fetch_date", pa.string()), ("content_type", pa.string()),
    ("has_code_tags", pa.bool_()), ("code_blocks", pa.int64()), ("code_chars", pa.int64()), ("words", pa.int64()),
    ("category", pa.string()), ("size_bytes", pa.int64())])
PAGE_RECORDS = (WarcRecordType.response, WarcRecordType.resource)
SCAN_CHUNK = 1 << 20


@dataclass
class WebIngestOptions:
    """How pages are read and extracted (the plan's fingerprint and every task hold these)."""

    min_words: int = option(10, "pages whose extracted text has fewer words are dropped as too_short")
    max_page_bytes: int = option(4 << 20, "larger HTML bodies are dropped as oversize (never read)")
    max_replaced_fraction: float = option(0.05, "a page whose decoding replaced more than this fraction of its "
                                                "characters (U+FFFD) is dropped as undecodable")
    main_content: bool = option(True, "keep the main content only (resiliparse's boilerplate removal); false: "
                                      "all the page's text")
    base_url: str = option("", "URL prefix of the pages in folders (an input table's base_url wins); empty: "
                                "file:/// + the relative path")
    shard_pages: int = option(2_000, "folders of HTML files: at most this many pages per shard")
    shard_bytes: int = option(256 << 20, "folders of HTML files: about this many HTML bytes per shard")

    def __post_init__(self) -> None:
        if self.min_words < 0:
            raise ValueError(f"min_words: must be >= 0, got {self.min_words}")
        if self.max_page_bytes < 1:
            raise ValueError(f"max_page_bytes: must be >= 1, got {self.max_page_bytes}")
        if not 0.0 <= self.max_replaced_fraction <= 1.0:
            raise ValueError(f"max_replaced_fraction: must be in [0, 1], got {self.max_replaced_fraction}")
        if self.shard_pages < 1 or self.shard_bytes < 1:
            raise ValueError(f"shard_pages / shard_bytes: must be >= 1, got {self.shard_pages} / {self.shard_bytes}")
        if self.base_url and not re.match(r"^[a-z][a-z0-9+.-]*://", self.base_url, re.I):
            raise ValueError(f"base_url: must start with a scheme such as https://, got {self.base_url!r}")


@dataclass
class WebIngestStepOptions(WebIngestOptions):
    """The step's options: the inputs and how they are read."""

    inputs: list[Any] = option([], "WARC / WARC.gz files and folders (of WARC and HTML files), or "
                                   "{path, base_url} tables")


@dataclass(frozen=True)
class WebSource:
    """One WARC file, or one folder's HTML pages."""

    kind: str  # "warc" or "pages"
    path: str  # absolute: the WARC file, or the folder the pages' relative paths start from
    name: str  # the WARC file's name, or the folder's name (unique among page folders): part of every row id
    base_url: str = ""  # pages: the URL prefix ("" -> file:///)


@dataclass
class WebIngestPlan:
    sources: list[WebSource]
    tasks: list[tuple]  # per shard: (source index, None) for a WARC file, (source index, ((relpath, size), ...))
    fingerprint: str  # changes when the inputs change (paths, sizes, mtimes) or the options do
    skipped_files: int = 0  # files in folders that are neither WARC nor HTML (no row)


# ------------------------------------------------------------------------------------------ planning
def _is_warc(name: str) -> bool:
    return name.lower().endswith(WARC_SUFFIXES)


def _is_page(name: str) -> bool:
    return name.lower().endswith(PAGE_SUFFIXES)


def _walk(root: str) -> tuple[list[str], list[tuple[str, int, int]], int]:
    """(WARC files (absolute), pages (relpath, size, mtime_ns), skipped count) of a folder, in sorted order."""
    warcs, pages, skipped = [], [], 0
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            if _is_warc(name):
                warcs.append(path)
            elif _is_page(name):
                try:
                    info = os.stat(path)
                    pages.append((relative, info.st_size, info.st_mtime_ns))
                except OSError:
                    pages.append((relative, 0, 0))  # read (and recorded as unreadable) by the task
            else:
                skipped += 1
    return warcs, pages, skipped


def plan_web_ingest(inputs: Sequence[str | Mapping[str, Any]], options: WebIngestOptions) -> WebIngestPlan:
    """Which WARC file or pages go to which shard; a pure function of the inputs (and their sizes) and options."""
    if not inputs:
        raise CurateConfigError("web_ingest: no inputs (give WARC / WARC.gz files or folders of them or of HTML "
                                "files)")
    sources: list[WebSource] = []
    tasks: list[tuple] = []
    skipped = 0
    fingerprint = hashlib.sha256()
    warc_paths: set[str] = set()
    folder_names: dict[str, int] = {}

    def add_warc(path: str) -> None:
        if path in warc_paths:
            raise CurateConfigError(f"web_ingest: WARC file {path} is given twice (its rows would repeat)")
        warc_paths.add(path)
        info = os.stat(path)
        fingerprint.update(json.dumps(["warc", path, info.st_size, info.st_mtime_ns]).encode())
        tasks.append((len(sources), None))
        sources.append(WebSource(kind="warc", path=path, name=os.path.basename(path)))

    def add_pages(root: str, pages: list[tuple[str, int, int]], base_url: str) -> None:
        name = os.path.basename(root.rstrip(os.sep)) or "pages"
        count = folder_names.get(name, 0)
        folder_names[name] = count + 1
        if count:  # ids derive from the folder's name: two folders of one name get name~2, ...
            name = f"{name}~{count + 1}"
        index = len(sources)
        sources.append(WebSource(kind="pages", path=root, name=name, base_url=base_url))
        fingerprint.update(json.dumps(["pages", root, name, base_url, pages]).encode())
        current: list[tuple[str, int]] = []
        current_bytes = 0
        for relative, size, _ in pages:
            if current and (len(current) >= options.shard_pages or current_bytes + size > options.shard_bytes):
                tasks.append((index, tuple(current)))
                current, current_bytes = [], 0
            current.append((relative, size))
            current_bytes += min(size, options.max_page_bytes)
        if current:
            tasks.append((index, tuple(current)))

    for spec in inputs:
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, Mapping) or "path" not in spec:
            raise CurateConfigError(f"web_ingest: an input is a path or a table with a 'path' key, got {spec!r}")
        unknown = sorted(set(spec) - {"path", "base_url"})
        if unknown:
            raise CurateConfigError(f"web_ingest: input {spec['path']!r} has unknown key(s) {unknown} "
                                    "(known: path, base_url)")
        path = os.path.abspath(os.path.expanduser(str(spec["path"])))
        base_url = str(spec.get("base_url") or options.base_url)
        if base_url and not re.match(r"^[a-z][a-z0-9+.-]*://", base_url, re.I):
            raise CurateConfigError(f"web_ingest: input {path}: base_url must start with a scheme such as "
                                    f"https://, got {base_url!r}")
        if not os.path.exists(path):
            raise CurateConfigError(f"web_ingest: input {path} does not exist")
        if os.path.isdir(path):
            warcs, pages, skipped_here = _walk(path)
            skipped += skipped_here
            for warc in warcs:
                add_warc(warc)
            if pages:
                add_pages(path, pages, base_url)
        elif _is_warc(path):
            add_warc(path)
        elif _is_page(path):
            info = os.stat(path)
            add_pages(os.path.dirname(path), [(os.path.basename(path), info.st_size, info.st_mtime_ns)], base_url)
        else:
            raise CurateConfigError(f"web_ingest: input {path} is a file but not a .warc, .warc.gz or .html file; "
                                    "give its folder or a WARC file")
    fingerprint.update(json.dumps(dataclasses.asdict(options), sort_keys=True).encode())
    return WebIngestPlan(sources=sources, tasks=tasks, fingerprint=fingerprint.hexdigest(), skipped_files=skipped)


# ------------------------------------------------------------------------------------------ decoding
_META_CHARSET = re.compile(rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _charset_name(label: str | None) -> str | None:
    """A charset label (HTTP header or <meta>) -> the Python codec the WHATWG Encoding standard maps it to."""
    if not label:
        return None
    return map_encoding_to_html5(label.strip().strip("\"'").strip(), fallback_utf8=False)


def meta_charset(data: bytes) -> str | None:
    """The charset label of the first <meta charset=...> or <meta http-equiv content="...; charset=..."> tag."""
    match = _META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


def decode_html(data: bytes, header_charset: str | None = None) -> tuple[str, str, int]:
    """(text, codec used, replaced characters): the charset of a byte-order mark, else the HTTP header's, else the
    <meta> tag's, else UTF-8; undecodable bytes become U+FFFD, an unknown charset name falls back to UTF-8."""
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), None)
    encoding = encoding or _charset_name(header_charset) or _charset_name(meta_charset(data)) or "utf-8"
    try:
        text, replaced = data.decode(encoding), 0  # strict first: a clean page needs no count of U+FFFD
    except (UnicodeDecodeError, LookupError) as error:  # LookupError: a name the WHATWG table knows, Python not
        encoding = encoding if isinstance(error, UnicodeDecodeError) else "utf-8"
        text = data.decode(encoding, errors="replace")  # U+FFFD the page itself holds are not replacements
        replaced = max(0, text.count("\ufffd") - data.count(b"\xef\xbf\xbd"))
    return text.lstrip("\ufeff"), "utf-8" if encoding == "utf-8-sig" else encoding, replaced


def _looks_like_html(data: bytes) -> bool:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head


# ------------------------------------------------------------------------------------------ code and category
_CODE_TAGS = re.compile(r"<(?:pre|code)\b", re.I)
# a <pre> (with any <code> in it) or a <code> outside <pre>: group 1 or group 2 holds the inner HTML
_CODE_ELEMENTS = re.compile(r"<pre\b[^>]*>(.*?)</pre\s*>|<code\b[^>]*>(.*?)</code\s*>", re.S | re.I)
_TAG = re.compile(r"<[^>\x00]*>")  # never across the NUL that separates two elements' texts
_PUNCTUATION = b".,;:!?()[]{}<>\"'`=+-*/\\|&^%$#@~"
_SEPARATORS = bytes.maketrans(_PUNCTUATION, b" " * len(_PUNCTUATION))  # on UTF-8 bytes: C speed for any text


def _words(text: str) -> list[bytes]:
    """The words of `text` split at whitespace and ASCII punctuation (UTF-8 bytes)."""
    return text.encode("utf-8", "surrogatepass").translate(_SEPARATORS).split()


def _element_texts(fragments: Sequence[str]) -> list[str]:
    """The texts of elements' inner HTML (tags removed, entities decoded), as the HTML tree gives them; one pass
    over all of them."""
    if not fragments:
        return []
    return html_lib.unescape(_TAG.sub("", "\x00".join(fragment.replace("\x00", "") for fragment in fragments))
                             ).split("\x00")


def code_stats_reference(html: str, text: str) -> tuple[bool, int, int]:
    """The specification of `code_stats` in Python: (has_code_tags, code_blocks, code_chars) of the page's main
    content: its <pre> and <code> elements whose text is part of the extracted main text `text`, so code in
    navigation, sidebars and footers (which the extractor removed) does not count.

    A <pre> (or a multi-line <code> outside <pre>) is a block when its text (whitespace-normalised if need be)
    occurs in the main text; an inline <code> outside <pre> counts when each of its words (split at spaces and
    punctuation) is a word of the main text. `code_chars`: the characters of the counted elements. The elements
    are read from the HTML source by one regular expression rather than as tree nodes: a page of thousands of
    <code> elements (API references) then costs a few milliseconds, where a resiliparse node object for each
    costs more than the extraction itself (a <pre> nested in a <pre> and tags inside comments or scripts are
    what it reads differently from the tree)."""
    if _CODE_TAGS.search(html) is None:
        return False, 0, 0
    found = _CODE_ELEMENTS.findall(html)
    texts = _element_texts([pre or code for pre, code in found])
    flat = vocabulary = None
    blocks = chars = inline = 0
    for (pre, _), code in zip(found, texts):
        code = code.strip("\n") if pre else code.strip()
        if not code.strip():
            continue
        if pre or "\n" in code:
            if code not in text:  # the extractor keeps a block's lines; its spacing may differ
                flat = flat if flat is not None else " ".join(text.split())
                if " ".join(code.split()) not in flat:
                    continue
            blocks += 1
        else:
            vocabulary = vocabulary if vocabulary is not None else set(_words(text))
            if not vocabulary.issuperset(_words(code)):
                continue
            inline += 1
        chars += len(code)
    return blocks > 0 or inline > 0, blocks, chars


def code_stats(html: str, text: str) -> tuple[bool, int, int]:
    """`code_stats_reference` in C++ (seedcoder._webtext, csrc/webtext/): the same counts in one pass, about five
    times faster, so the step keeps pace with the bare extractor."""
    return _webtext_module().code_stats(html, text)


def _webtext_module() -> Any:
    if _webtext is None:
        raise ImportError("seedcoder._webtext (C++, csrc/webtext/) is not built: in the repository run "
                          "`pip install --no-build-isolation -e .` or `python setup.py build_ext --inplace`"
                          ) from _WEBTEXT_ERROR
    return _webtext


def _host_is(host: str, domains: frozenset[str]) -> bool:
    """Whether `host` is one of `domains` or a subdomain of one (each of its dot-suffixes looked up once)."""
    while host:
        if host in domains:
            return True
        host = host.partition(".")[2]
    return False


_SCHEMA_TYPES = {  # schema.org types a page declares (JSON-LD @type, microdata itemtype) -> category
    "qapage": "qa", "question": "qa", "product": "shop", "offer": "shop", "aggregateoffer": "shop",
    "discussionforumposting": "forum", "newsarticle": "news", "reportagenewsarticle": "news",
    "blogposting": "blog", "blog": "blog", "techarticle": "docs", "apireference": "docs",
}
_HOSTS = (  # (category, exact domains (and their subdomains), host prefixes)
    ("qa", ("stackoverflow.com", "stackexchange.com", "superuser.com", "serverfault.com", "askubuntu.com",
            "mathoverflow.net", "quora.com", "segmentfault.com"), ()),
    ("forum", ("reddit.com", "news.ycombinator.com", "discourse.org", "lobste.rs"),
     ("forum.", "forums.", "discuss.", "discourse.", "community.", "bbs.", "board.", "boards.")),
    ("docs", ("readthedocs.io", "readthedocs.org", "cppreference.com", "docs.rs", "pkg.go.dev",
              "developer.mozilla.org", "javadoc.io", "man7.org", "devdocs.io", "learn.microsoft.com"),
     ("docs.", "doc.", "developer.", "developers.", "devdocs.", "api.", "man.", "manual.", "help.", "reference.",
      "wiki.")),
    ("blog", ("medium.com", "dev.to", "hashnode.dev", "substack.com", "blogspot.com", "wordpress.com",
              "tumblr.com", "ghost.io"), ("blog.", "blogs.")),
    ("shop", ("amazon.com", "ebay.com", "etsy.com", "aliexpress.com", "walmart.com"), ("shop.", "store.")),
    ("news", ("nytimes.com", "bbc.co.uk", "bbc.com", "cnn.com", "theguardian.com", "reuters.com", "theverge.com",
              "techcrunch.com", "arstechnica.com", "zdnet.com", "theregister.com", "lwn.net", "infoq.com"),
     ("news.",)),
)
_HOSTS = tuple((category, frozenset(domains), prefixes) for category, domains, prefixes in _HOSTS)
_PATHS = (  # (category, regex on the URL's path + query)
    ("qa", re.compile(r"/(questions|q|question)/\d+")),
    ("forum", re.compile(r"/t/[^/]+/\d+|viewtopic\.php|showthread\.php|/(forum|forums|threads?|topic|topics|"
                         r"discussions?|board)(/|$|\.php)|/r/[^/]+/comments/", re.I)),
    ("docs", re.compile(r"/(docs?|documentation|reference|api|manual|manuals|man|guide|guides|tutorials?|library|"
                        r"handbook|javadoc|apidocs|help)(/|$)", re.I)),
    ("blog", re.compile(r"/(blog|blogs|posts?)(/|$)|/(19|20)\d\d/(0[1-9]|1[0-2])(/|$)", re.I)),
    ("shop", re.compile(r"/(shop|store|cart|checkout|products?|item|dp|buy|catalog)(/|$|\?)", re.I)),
    ("news", re.compile(r"/(news|press)(/|$)", re.I)),
)
_GENERATORS = (  # <meta name="generator"> substrings -> category
    ("forum", ("phpbb", "vbulletin", "discourse", "xenforo", "mybb", "simple machines", "invision", "flarum")),
    ("docs", ("docbook", "docutils", "sphinx", "doxygen", "javadoc", "mkdocs", "docusaurus", "gitbook", "rustdoc")),
    ("blog", ("wordpress", "blogger", "ghost", "jekyll")),
)


_TOC = "nav, aside, [role=navigation], [class*=sidebar i], [id*=sidebar i], [class*=toc i], [id*=toc i]"


def _declared_types(tree: HTMLTree) -> list[str]:
    """schema.org types the page declares: microdata itemtype URLs and JSON-LD @type values, lower-cased."""
    types = []
    for element in tree.document.query_selector_all('[itemtype], script[type="application/ld+json" i]').values():
        if element.tag != "script":
            types += [item.rstrip("/").rsplit("/", 1)[-1].lower() for item in (element.getattr("itemtype") or "").split()]
            continue
        script = element.text or ""
        types += [match.lower() for match in re.findall(r'"@type"\s*:\s*"([A-Za-z]+)"', script)]
        for group in re.findall(r'"@type"\s*:\s*\[([^\]]*)\]', script):
            types += [match.lower() for match in re.findall(r'"([A-Za-z]+)"', group)]
    return types


def _meta(tree: HTMLTree, attribute: str, value: str) -> str:
    element = tree.document.query_selector(f'meta[{attribute}="{value}" i]')
    return (element.getattr("content") or "").lower() if element is not None else ""


_FORUM_MARKUP = ("phpbb", "postbody", "forumbg", "topic-body", "message-body")
_CART_MARKUP = ("add-to-cart", "addtocart", "buy-now")


_MARKERS = ("generator", "og:type", "price", "navheader", "navfooter", "<h1", "<h2", "<h3", "<h4", "<pre", "<code",
            "<nav", "<aside", "navigation", "sidebar", "toc", "<time", *_FORUM_MARKUP, *_CART_MARKUP)


def _structure_category(tree: HTMLTree, source: str) -> str | None:
    """The category the page's markup suggests when neither declarations nor the URL decide. `source`: the
    page's HTML: a marker missing from it (markup is case-sensitive here) skips the tree search for it."""
    count = dict(zip(_MARKERS, _webtext_module().counts(source, _MARKERS)))  # one C++ pass per marker
    document = tree.document
    generator = _meta(tree, "name", "generator") if count["generator"] else ""
    for category, names in _GENERATORS[:1]:
        if any(name in generator for name in names):
            return category
    if any(count[marker] for marker in _FORUM_MARKUP) and document.query_selector(
            "#phpbb, .postbody, .forumbg, .topic-body, .message-body") is not None:
        return "forum"
    og_type = _meta(tree, "property", "og:type") if count["og:type"] else ""
    if og_type == "product" or (count["price"] and any(count[marker] for marker in _CART_MARKUP)
                                and document.query_selector('[itemprop="price"], [class*="price" i]') is not None
                                and document.query_selector('[class*="add-to-cart" i], [class*="addtocart" i], '
                                                            '[id*="add-to-cart" i], [class*="buy-now" i], '
                                                            '[name="add-to-cart"]') is not None):
        return "shop"
    for category, names in _GENERATORS[1:2]:
        if any(name in generator for name in names):
            return category
    body = tree.body
    if body is None:
        return None
    if (count["navheader"] or count["navfooter"]) and body.query_selector(".navheader, .navfooter") is not None:
        return "docs"  # DocBook's chunked HTML: manuals
    headings = sum(count[f"<h{level}"] for level in "1234")
    if headings >= 2 and (count["<pre"] >= 1 or count["<code"] >= 5) and any(
            count[marker] for marker in ("<nav", "<aside", "navigation", "sidebar", "toc")) and any(
            len(element.query_selector_all("a")) >= 5 for element in body.query_selector_all(_TOC).values()):
        return "docs"  # headings, code and a table of contents beside them
    for category, names in _GENERATORS[2:]:
        if any(name in generator for name in names):
            return category
    if og_type == "article" and count["<time"] and body.query_selector("article time[datetime]") is not None:
        return "blog"
    return None


def page_category(url: str | None, tree: HTMLTree | None, html: str | None = None) -> str:
    """The page's site type, one of CATEGORIES: what the page declares (schema.org QAPage, Product/Offer,
    DiscussionForumPosting, NewsArticle, BlogPosting, TechArticle), else its host (stackoverflow.com, docs.*,
    forum.*, medium.com, shop.*, news.*), else its path (/questions/123, /t/slug/123, viewtopic.php, /docs/,
    /reference/, /api/, /manual/, /blog/, dated /2024/05/, /product/, /cart, /news/), else its structure (a forum
    engine's markup, price + add-to-cart markup, a docs generator, a sidebar table of contents with headings and
    code), else "other"."""
    # html: a hint that skips the tree's search when the page has neither microdata nor JSON-LD
    declares = html is None or any(_webtext_module().counts(html, ("itemtype", "ld+json")))
    if tree is not None and tree.document is not None and declares:
        for declared in _declared_types(tree):
            if declared in _SCHEMA_TYPES:
                return _SCHEMA_TYPES[declared]
    if url:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            path = parts.path + ("?" + parts.query if parts.query else "")
        except ValueError:
            host, path = "", ""
        host = host.removeprefix("www.")
        for category, domains, prefixes in _HOSTS:
            if _host_is(host, domains) or host.startswith(prefixes or ("\x00",)):
                return category
        for category, pattern in _PATHS:
            if pattern.search(path):
                return category
    if tree is not None and tree.document is not None:
        return _structure_category(tree, html if html is not None else tree.document.html) or "other"
    return "other"


# ------------------------------------------------------------------------------------------ one page
def _sha1(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def _row(row_id: str, url: str | None, *, repo: str | None = None, fetch_date: str | None = None,
         content_type: str | None = None, size: int = 0) -> dict[str, Any]:
    host, path = "", ""
    if url:
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            path = parts.path + ("?" + parts.query if parts.query else "")
        except ValueError:  # e.g. an invalid IPv6 host: the row keeps the URL
            path = url
    return {"id": row_id, "repo": repo or host, "path": path, "language": "text", "text": "", "source": "web",
            "url": url, "fetch_date": fetch_date, "content_type": content_type, "has_code_tags": False,
            "code_blocks": 0, "code_chars": 0, "words": 0, "category": None, "size_bytes": size}


def extract_page(row: dict[str, Any], data: bytes, header_charset: str | None,
                 options: WebIngestOptions) -> str | None:
    """Decode, parse and extract the HTML `data` into `row` (text, code counts, words, category); returns the drop
    reason, or None for a page that is kept."""
    row["size_bytes"] = len(data)
    html, encoding, replaced = decode_html(data, header_charset)
    nul = -1 if encoding.startswith(("utf-16", "utf-32")) else data.find(b"\x00")
    if nul >= 0:
        return f"binary: NUL byte at offset {nul}"
    if html and replaced > options.max_replaced_fraction * len(html):
        declared = header_charset or meta_charset(data)
        note = f"declared charset {declared!r}" if declared else "no declared charset"
        return (f"undecodable: {replaced} of {len(html)} characters ({replaced / len(html):.0%}) replaced decoding "
                f"as {encoding} ({note})")
    try:
        tree = HTMLTree.parse(html)
        text = extract_plain_text(tree, preserve_formatting=True, main_content=options.main_content,
                                  list_bullets=True, alt_texts=False, links=False, form_fields=False,
                                  noscript=False)
        has_code, blocks, chars = code_stats(html, text)
        category = page_category(row["url"], tree, html)
    except Exception as error:  # resiliparse's parser errors; a page must never stop the run
        return f"malformed_html: {type(error).__name__}: {error}"
    text = text.strip("\n")
    words = _webtext_module().word_count(text)  # len(text.split()), without a list of every word
    row.update(has_code_tags=has_code, code_blocks=blocks, code_chars=chars, words=words, category=category)
    if words == 0:
        return "empty: no text after extraction"
    if words < options.min_words:
        row["text"] = text
        return f"too_short: {words} words < min_words {options.min_words}"
    row["text"] = text
    return None


# ------------------------------------------------------------------------------------------ WARC files
def _fetch_date(record: WarcRecord) -> str | None:
    try:
        date = record.record_date
    except (ValueError, OSError):
        return None
    if date is None:
        return None
    if date.tzinfo is None:
        date = date.replace(tzinfo=datetime.timezone.utc)
    return date.astimezone(datetime.timezone.utc).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _content_type(value: str | None) -> tuple[str | None, str | None]:
    """A Content-Type header -> (MIME type lower-cased, charset parameter)."""
    if not value:
        return None, None
    mime, _, params = value.partition(";")
    match = re.search(r"charset\s*=\s*([^;\s]+)", params, re.I)
    return mime.strip().lower() or None, match.group(1) if match else None


def _record_row(source: WebSource, record: WarcRecord, options: WebIngestOptions) -> tuple[dict, str | None]:
    headers = record.headers
    position = record.stream_pos
    record_id = record.record_id
    url = headers.get("WARC-Target-URI") if headers is not None else None
    row = _row(_sha1(source.name, record_id or f"@{position}"), url, fetch_date=_fetch_date(record))
    where = f"{source.name}: record at byte {position}"
    if not record_id or headers.get("WARC-Type") is None:
        return row, f"malformed_record: {where} has no WARC-Type / WARC-Record-ID header (truncated or garbage)"
    if record.record_type not in PAGE_RECORDS:
        return row, f"not_response: {headers.get('WARC-Type')}"
    if not url:
        return row, f"malformed_record: {where}: a {headers.get('WARC-Type')} record without WARC-Target-URI"
    charset = None
    http_encoded = False
    if record.record_type == WarcRecordType.response and record.is_http:
        http = record.http_headers
        status = http.status_code if http is not None else None
        if status is None:
            line = (http.status_line if http is not None else None) or ""
            return row, f"malformed_record: {where}: no HTTP status line (got {line[:60]!r})"
        if not 200 <= status < 300 or status == 204:
            return row, f"http_status: {status} {http.reason_phrase or ''}".rstrip()
        row["content_type"], charset = _content_type(http.get("Content-Type"))
        http_encoded = any(http.get(name) for name in ("Content-Encoding", "Transfer-Encoding"))
    elif record.record_type == WarcRecordType.response:
        row["content_type"] = _content_type(headers.get("Content-Type"))[0]
        return row, f"not_html: {row['content_type'] or 'no Content-Type'} (a response record that is not HTTP)"
    else:  # resource: the block is the document itself
        row["content_type"], charset = _content_type(headers.get("Content-Type"))
    declared = record.content_length
    row["size_bytes"] = declared
    content_type = row["content_type"]
    if content_type is not None and content_type not in HTML_TYPES:
        return row, f"not_html: {content_type}"
    if declared > options.max_page_bytes:
        return row, f"oversize: {declared} bytes > max_page_bytes {options.max_page_bytes}"
    try:
        data = record.reader.read(options.max_page_bytes + 1)
    except (OSError, ValueError) as error:
        return row, f"malformed_record: {where}: the body is unreadable: {error}"
    row["size_bytes"] = len(data)
    if len(data) > options.max_page_bytes:
        return row, f"oversize: more than {options.max_page_bytes} bytes (max_page_bytes) once decoded"
    if not http_encoded and len(data) < declared:
        return row, f"malformed_record: {where}: truncated body: {len(data)} of {declared} bytes"
    if content_type is None and not _looks_like_html(data):
        return row, "not_html: no Content-Type and the body does not look like HTML"
    return row, extract_page(row, data, charset, options)


def _member_end(file: Any, position: int, size: int) -> int | None:
    """The end of the gzip member starting at `position`, or None when it does not inflate (corrupt, truncated)."""
    inflater = zlib.decompressobj(31)
    file.seek(position)
    consumed = 0
    while not inflater.eof:
        chunk = file.read(min(SCAN_CHUNK, size - position - consumed))
        if not chunk:
            return None
        try:
            inflater.decompress(chunk, 1 << 16)
            while inflater.unconsumed_tail:
                inflater.decompress(inflater.unconsumed_tail, 1 << 16)
        except zlib.error:
            return None
        consumed += len(chunk) - len(inflater.unused_data)
        if inflater.eof:
            return position + consumed
    return position + consumed


def _member_starts_record(file: Any, position: int, size: int) -> bool:
    """Whether a whole, intact gzip member starts at `position` and inflates to a WARC record."""
    inflater = zlib.decompressobj(31)
    file.seek(position)
    try:
        head = inflater.decompress(file.read(min(1 << 16, size - position)), 16)
    except zlib.error:
        return False
    return head.startswith(b"WARC/") and _member_end(file, position, size) is not None


def _plain_record_end(file: Any, position: int) -> int | None:
    """The end of the uncompressed WARC record at `position` (header block + Content-Length + CRLF CRLF)."""
    file.seek(position)
    head = file.read(1 << 16)
    end = head.find(b"\r\n\r\n")
    match = re.search(rb"\r\nContent-Length:\s*(\d+)", head[:end], re.I) if end >= 0 else None
    return position + end + 4 + int(match.group(1)) + 4 if match else None


def _plain_starts_record(file: Any, position: int) -> bool:
    file.seek(position)
    head = file.read(1 << 16)
    end = head.find(b"\r\n\r\n")
    return end > 0 and re.search(rb"\r\nContent-Length:\s*\d+", head[:end], re.I) is not None


def _next_record(file: Any, start: int, size: int, gzipped: bool) -> int | None:
    """The first offset >= `start` where an intact record begins (a gzip member inflating to "WARC/...", or a
    "WARC/1." line with a Content-Length), or None."""
    magic = b"\x1f\x8b\x08" if gzipped else b"WARC/1."
    position = start
    while position < size:
        file.seek(position)
        chunk = file.read(SCAN_CHUNK + len(magic))
        found = chunk.find(magic)
        while found >= 0:
            candidate = position + found
            at_line_start = gzipped or candidate == 0 or (found > 0 and chunk[found - 1:found] == b"\n")
            if at_line_start and (_member_starts_record(file, candidate, size) if gzipped
                                  else _plain_starts_record(file, candidate)):
                return candidate
            found = chunk.find(magic, found + 1)
        position += SCAN_CHUNK
    return None


def _warc_rows(source: WebSource, options: WebIngestOptions) -> Iterator[tuple[dict, str | None]]:
    """Rows of every record of a WARC file; unreadable stretches are one row each and reading resumes after them."""
    name = source.name
    try:
        file = open(source.path, "rb")
    except OSError as error:
        yield _row(_sha1(name, "@file"), None), f"unreadable: {source.path}: {error.strerror or error}"
        return
    with file:
        size = os.fstat(file.fileno()).st_size
        gzipped = file.read(2) == b"\x1f\x8b"
        start = 0
        while True:
            file.seek(start)
            last = None
            try:
                for record in ArchiveIterator(file, parse_http=True, auto_decode="all"):
                    last = record.stream_pos
                    yield _record_row(source, record, options)
                return
            except (OSError, ValueError) as error:
                problem = str(error) or type(error).__name__
            if last is None:
                bad, scan = start, start + 1
            else:
                end = (_member_end(file, last, size) if gzipped else _plain_record_end(file, last))
                bad = end if end is not None and end > last else last + 1
                scan = bad
            resume = _next_record(file, scan, size, gzipped)
            until = size if resume is None else resume
            what = (f"reading resumed at byte {resume}" if resume is not None
                    else "no intact record after it")
            row = _row(_sha1(name, f"@{bad}"), None, size=until - bad)
            yield row, (f"malformed_record: {name}: bytes {bad}-{until} unreadable ({problem}); {what}")
            if resume is None:
                return
            start = resume


# ------------------------------------------------------------------------------------------ folders of pages
def _page_rows(source: WebSource, entries: Sequence[tuple[str, int]],
               options: WebIngestOptions) -> Iterator[tuple[dict, str | None]]:
    base = source.base_url.rstrip("/") + "/" if source.base_url else "file:///"
    for relative, size in entries:
        url = base + quote(relative)
        repo = None if source.base_url else source.name
        row = _row(_sha1(source.name, relative), url, repo=repo, content_type="text/html", size=size)
        path = os.path.join(source.path, relative)
        try:
            with open(path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                row["size_bytes"] = size
                if size > options.max_page_bytes:
                    yield row, f"oversize: {size} bytes > max_page_bytes {options.max_page_bytes}"
                    continue
                data = file.read(options.max_page_bytes + 1)
        except OSError as error:
            yield row, f"unreadable: {error.strerror or error}"
            continue
        yield row, extract_page(row, data, None, options)


def web_ingest_part(out_dir: str, index: int, source: WebSource, entries: Sequence[tuple[str, int]] | None,
                    options: WebIngestOptions | Mapping[str, Any]) -> dict[str, Any]:
    """Read one WARC file (entries None) or one group of pages and write part `index`; returns the shard's stats."""
    if not isinstance(options, WebIngestOptions):
        options = build_section(WebIngestOptions, options, prefix="web_ingest.")
    produced = _warc_rows(source, options) if entries is None else _page_rows(source, entries, options)
    rows, reasons = [], []
    for row, reason in produced:
        rows.append(row)
        reasons.append(reason)
    table = base_table(rows, WEB_SCHEMA)
    kept, dropped = split_rows(table, [reason is None for reason in reasons], reasons)
    return write_part(out_dir, index, kept, dropped)


# ------------------------------------------------------------------------------------------ the step
def run_web_ingest(ctx: StepContext) -> dict[str, Any]:
    values = {key: value for key, value in ctx.options.items() if key != "inputs"}
    options = WebIngestOptions(**values)
    tick = time.perf_counter()
    plan = plan_web_ingest(ctx.options["inputs"], options)
    warcs = sum(source.kind == "warc" for source in plan.sources)
    pages = sum(len(entries) for _, entries in plan.tasks if entries is not None)
    say(f"{ctx.name}: planned {warcs:,} WARC file(s) and {pages:,} HTML page(s) into {len(plan.tasks)} shard(s) "
        f"in {time.perf_counter() - tick:.1f} s")
    done = ctx.prepare(plan=plan.fingerprint)
    if done is not None:
        return done
    tasks = [Task(key=f"part-{index:05d}", function="seedcoder.curate.web_ingest:web_ingest_part",
                  args={"out_dir": ctx.out_dir, "index": index, "source": plan.sources[source_index],
                        "entries": entries, "options": values},
                  marker=marker_path(ctx.out_dir, index))
             for index, (source_index, entries) in enumerate(plan.tasks)]
    return ctx.finish(ctx.run(tasks), {"warc_files": warcs, "html_pages": pages, "skipped_files": plan.skipped_files})


STEP = StepKind("web_ingest", "WARC / WARC.gz files and folders of HTML pages -> web pages (main text, code verbatim)",
                run_web_ingest, WebIngestStepOptions, reads=(), line="web")


__all__ = ["CATEGORIES", "STEP", "WEB_SCHEMA", "WebIngestOptions", "WebIngestPlan", "WebIngestStepOptions",
           "WebSource", "code_stats", "code_stats_reference", "decode_html", "extract_page", "meta_charset", "page_category",
           "plan_web_ingest", "run_web_ingest", "web_ingest_part"]
