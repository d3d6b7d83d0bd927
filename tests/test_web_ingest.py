"""The web_ingest curation step and the Debian-page web corpus: real pages (tests/data/web, made by
seedcoder.curate.web_corpus) -> a web dataset; every kind of bad record; resume after a crash; page categories."""

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import zlib

import pytest
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate import web_corpus, web_ingest
from seedcoder.curate.errors import CurateConfigError
from seedcoder.curate.executor import ExecutorConfig, TaskError
from seedcoder.curate.step import StepContext
from seedcoder.curate.web_corpus import build_corpus, page_record, split_of
from seedcoder.curate.web_ingest import CATEGORIES, code_stats, decode_html, page_category

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "web")
PAGES = os.path.join(FIXTURE, "pages.warc.gz")
TRUNCATED = os.path.join(FIXTURE, "truncated.warc.gz")
INLINE = ExecutorConfig(kind="local", workers=1, progress=False)
CONTROLFLOW = "https://docs.python.org/3/tutorial/controlflow.html"
PUSH_BACK = "https://en.cppreference.com/w/cpp/container/vector/push_back"


def run(out, inputs, executor=INLINE, **options):
    """The step as `run_step("web_ingest", ...)` runs it."""
    step = web_ingest.STEP
    checked = step.check_options({"inputs": [str(i) if isinstance(i, os.PathLike) else i for i in inputs],
                                  **options})
    ctx = StepContext(kind=step.name, name=step.name, out_dir=str(out), options=checked, inputs={}, executor=executor)
    return step.run(ctx)


def rows(out, dropped=False):
    return [row for _, table in ds.iter_tables(str(out), dropped=dropped) for row in table.to_pylist()]


def members(path):
    """The gzip members of a file, inflated (a member that does not inflate: its raw bytes)."""
    data, result = open(path, "rb").read(), []
    while data:
        inflater = zlib.decompressobj(31)
        try:
            result.append(inflater.decompress(data))
            data = inflater.unused_data if inflater.eof else b""
        except zlib.error:
            result.append(None)
            data = data[data.find(b"\x1f\x8b\x08", 1):] if data.find(b"\x1f\x8b\x08", 1) > 0 else b""
    return result


def header(record: bytes, name: str) -> str:
    return re.search(rf"\r\n{name}: ([^\r]*)\r\n".encode(), record).group(1).decode()


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("web") / "web_ingest"
    success = run(out, [FIXTURE])
    return out, success, rows(out), rows(out, dropped=True)


def test_fixture_rows_are_every_record(fixture_run):
    out, success, kept, dropped = fixture_run
    # one row per record: pages.warc.gz holds one record per gzip member; truncated.warc.gz has 5 members, of
    # which the 2nd (cut mid-member) is one unreadable stretch and the 4th (cut at the end) a truncated body
    assert len(members(PAGES)) == 68 and len(members(TRUNCATED)) == 5
    assert len(kept) + len(dropped) == 68 + 5
    assert success["totals"]["kept_rows"] == len(kept) == 58
    assert success["warc_files"] == 2 and success["html_pages"] == 0 and ds.finished_parts(str(out)) == [0, 1]
    assert len({row["id"] for row in kept + dropped}) == len(kept) + len(dropped)
    labels = [json.loads(line) for line in open(os.path.join(FIXTURE, "labels.jsonl"))]
    by_url = {row["url"]: row for row in kept + dropped}
    assert {label["url"] for label in labels} <= set(by_url)  # every labelled page is read
    for label in labels:  # the labelled pages are kept, or dropped only for being short
        reason = by_url[label["url"]].get("drop_reason")
        assert reason is None or reason.startswith("too_short: "), (label["url"], reason)
    assert all(row["source"] == "web" and row["language"] == "text" for row in kept)
    assert all(row["words"] >= 10 and row["category"] in CATEGORIES for row in kept)


def test_url_date_and_content_type_are_kept(fixture_run):
    _, _, kept, _ = fixture_run
    record = next(member for member in members(PAGES) if member and CONTROLFLOW.encode() in member[:600])
    row = next(row for row in kept if row["url"] == CONTROLFLOW)
    assert row["fetch_date"] == header(record, "WARC-Date")
    assert row["id"] == hashlib.sha1(f"pages.warc.gz\x00{header(record, 'WARC-Record-ID')}".encode()).hexdigest()
    assert row["repo"] == "docs.python.org" and row["path"] == "/3/tutorial/controlflow.html"
    assert row["content_type"] == "text/html" and row["category"] == "docs"
    body = record[record.index(b"\r\n\r\n", record.index(b"HTTP/1.1 200")) + 4:].rstrip(b"\r\n")
    assert row["size_bytes"] == len(body) == int(header(record, "Content-Length")) - len(
        record[record.index(b"HTTP/1.1 200"):record.index(b"\r\n\r\n", record.index(b"HTTP/1.1 200")) + 4])


def test_code_blocks_are_verbatim_and_boilerplate_is_gone(fixture_run):
    _, _, kept, _ = fixture_run
    by_url = {row["url"]: row for row in kept}
    python = by_url[CONTROLFLOW]
    assert ("# Strategy:  Iterate over a copy\nfor user, status in users.copy().items():\n"
            "    if status == 'inactive':\n        del users[user]\n") in python["text"]
    assert ">>> for w in words:\n...     print(w, len(w))\n...\ncat 3\n" in python["text"]
    assert "def fib(n):    # write Fibonacci series up to n" in python["text"]
    for boilerplate in ("Previous topic", "Quick search", "Report a Bug", "This Page", "Table of Contents"):
        assert boilerplate not in python["text"]  # the Sphinx sidebar and footer
    assert python["has_code_tags"] and python["code_blocks"] >= 50 and python["code_chars"] > 10_000
    cpp = by_url[PUSH_BACK]
    assert "int main()\n{\n    std::vector<std::string> numbers;\n" in cpp["text"]
    assert "Retrieved from" not in cpp["text"] and "Standard library headers" not in cpp["text"]
    assert cpp["code_blocks"] == 2 and cpp["has_code_tags"]
    # pages without any code tag: GIMP's and LibreOffice's help about using the programs
    plain = [row for row in kept if row["repo"] in ("docs.gimp.org", "help.libreoffice.org")
             and "script-fu" not in row["url"] and "/sbasic/" not in row["url"]]
    assert len(plain) >= 15 and all(row["code_blocks"] == 0 for row in plain)
    assert sum(not row["has_code_tags"] and row["code_chars"] == 0 for row in plain) >= 15
    basic = next(row for row in kept if row["url"].endswith("text/sbasic/shared/03080601.html"))
    assert basic["code_blocks"] >= 1 and basic["code_chars"] > 0
    assert sum(row["code_blocks"] > 0 for row in kept) >= 15


def test_categories_of_known_sites(fixture_run):
    _, _, kept, _ = fixture_run
    for row in kept:
        if row["repo"] in ("docs.python.org", "en.cppreference.com", "docs.gimp.org", "help.libreoffice.org",
                           "nodejs.org", "www.postgresql.org") or "/doc/manuals/" in row["url"]:
            assert row["category"] == "docs", row["url"]


def test_every_drop_has_its_reason(fixture_run):
    _, success, _, dropped = fixture_run
    reasons = {row["url"]: row["drop_reason"] for row in dropped if row["url"]}
    assert reasons["https://docs.python.org/3/_static/py.png"] == "not_html: image/png"
    assert reasons["https://docs.python.org/3/tutorial/index.html"] == "not_response: request"
    assert reasons["https://docs.python.org/3/missing.html"] == "http_status: 404 Not Found"
    assert reasons["https://www.debian.org/doc/moved.html"] == "too_short: 4 words < min_words 10"
    assert reasons["https://docs.gimp.org/2.10/en/binary.html"].startswith("binary: NUL byte at offset ")
    assert reasons["https://docs.gimp.org/2.10/de/wrong-charset.html"].startswith(
        "undecodable: 80 of 1213 characters (7%) replaced decoding as utf-8 (declared charset 'utf-8')")
    short = next(row for row in dropped if row["url"] == "https://www.debian.org/doc/moved.html")
    assert short["text"] == "This page has moved."  # a too-short page keeps its text for inspection
    anonymous = sorted(row["drop_reason"] for row in dropped if not row["url"])
    assert anonymous[0].startswith("malformed_record: pages.warc.gz: record at byte ")  # the garbage header
    assert anonymous[1].startswith("malformed_record: truncated.warc.gz: bytes ")  # the member cut mid-file
    assert "Gzip decompression error" in anonymous[1] and "reading resumed at byte" in anonymous[1]
    assert anonymous[2:] == ["not_response: warcinfo"] * 2
    cut = [row for row in dropped if row["url"] and "truncated body" in row["drop_reason"]]
    assert len(cut) == 1 and cut[0]["drop_reason"].startswith("malformed_record: truncated.warc.gz: record at byte ")
    assert all(re.match(r"^[a-z_]+: .+", row["drop_reason"]) for row in dropped)
    assert success["totals"]["drop_reasons"] == {"binary": 1, "http_status": 1, "malformed_record": 3,
                                                 "not_html": 1, "not_response": 3, "too_short": 5, "undecodable": 1}


def test_records_after_a_cut_member_are_read(tmp_path):
    out = run(tmp_path / "out", [TRUNCATED])
    kept = rows(tmp_path / "out")
    labels = [json.loads(line) for line in open(os.path.join(FIXTURE, "labels.jsonl"))]
    assert sorted(row["url"] for row in kept) == sorted(label["url"] for label in labels
                                                        if label["warc"] == "truncated.warc.gz")
    assert out["totals"]["kept_rows"] == 2 and out["totals"]["dropped_rows"] == 3


def test_resume_after_a_crash_and_idempotent_rerun(tmp_path, monkeypatch, fixture_run):
    reference, _, _, _ = fixture_run
    out = tmp_path / "web"
    original = web_ingest.web_ingest_part

    def crashing(out_dir, index, source, entries, options):
        if index == 1:
            with open(os.path.join(out_dir, ".part-00001.parquet.abcdef.tmp"), "wb") as file:
                file.write(b"half a parquet file")  # what a kill mid-write leaves
            raise RuntimeError("simulated kill")
        return original(out_dir, index, source, entries, options)

    monkeypatch.setattr(web_ingest, "web_ingest_part", crashing)
    with pytest.raises(TaskError, match="simulated kill"):
        run(out, [FIXTURE])
    assert ds.part_done(str(out), 0) and not ds.part_done(str(out), 1) and not ds.is_finished(str(out))
    first_part = os.stat(ds.part_path(str(out), 0)).st_mtime_ns
    monkeypatch.setattr(web_ingest, "web_ingest_part", original)
    run(out, [FIXTURE])
    assert os.stat(ds.part_path(str(out), 0)).st_mtime_ns == first_part  # the finished shard was not redone
    assert not os.path.exists(out / ".part-00001.parquet.abcdef.tmp")
    assert [json.loads(line)["task"] for line in open(out / ds.LOG_FILE)] == ["part-00000", "part-00001"]
    for dropped in (False, True):
        assert rows(out, dropped) == rows(reference, dropped)  # the same as a run that was never interrupted

    again = run(out, [FIXTURE])  # finished: skipped whole, nothing rewritten
    assert again == ds.success_record(str(out))
    assert os.stat(ds.part_path(str(out), 0)).st_mtime_ns == first_part
    assert len(open(out / ds.LOG_FILE).readlines()) == 2
    run(out, [FIXTURE], min_words=3)  # other options: the directory is redone for them
    assert len(rows(out)) == len(rows(reference)) + 5  # the five pages of 3 and 4 words are kept now


def _page_bytes(url):
    record = next(member for member in members(PAGES) if member and url.encode() in member[:600])
    start = record.index(b"\r\n\r\n", record.index(b"HTTP/1.1 200")) + 4
    return record[start:].rstrip(b"\r\n")


def _warc(path, records, plain=False):
    """A WARC file of web_corpus records (or raw bytes), one gzip member per record (or uncompressed)."""
    blobs = []
    for record in records:
        if isinstance(record, bytes):
            blobs.append(record)
            continue
        buffer = io.BytesIO()
        record.write(buffer)
        blobs.append(buffer.getvalue() if plain else gzip.compress(buffer.getvalue(), mtime=0))
    path.write_bytes(b"".join(blobs))
    return path


def test_bad_records_never_stop_the_run(tmp_path):
    date = web_corpus.BAD_DATE
    page = _page_bytes(PUSH_BACK)
    good = [page_record(f"https://en.cppreference.com/w/page{i}", page, date) for i in range(3)]
    # plain WARC: a record whose Content-Length runs past the file's end swallows nothing after it
    raw = [io.BytesIO() for _ in range(3)]
    for record, buffer in zip(good, raw):
        record.write(buffer)
    blobs = [buffer.getvalue() for buffer in raw]
    plain = tmp_path / "plain.warc"
    garbage = b"WARC/1.1\r\nnot a header\r\nContent-Length: 5\r\n\r\nabcde\r\n\r\n"
    bad_length = b"WARC/1.1\r\nWARC-Type: response\r\nContent-Length: abc\r\n\r\nxyz\r\n\r\n"
    plain.write_bytes(blobs[0] + garbage + blobs[1] + bad_length + blobs[2][:-500])
    zipped = tmp_path / "zipped.warc.gz"
    members_ = [gzip.compress(blob, mtime=0) for blob in blobs]
    zipped.write_bytes(members_[0] + members_[1][:200] + b"\x00 junk between members \x00" + members_[2])
    junk = tmp_path / "junk.warc.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00 this is not deflate data at all" * 4)
    not_warc = tmp_path / "notes.warc"
    not_warc.write_bytes(b"just some text, not a WARC file\n" * 10)
    latin = ("<html><head><meta charset='iso-8859-1'></head><body><p>" + "Größe und Gewicht der Würfel. " * 5
             + "</p></body></html>").encode("iso-8859-1")
    mixed = ("<html><body><p>" + "Valid words here and there. " * 10 + "</p></body></html>").encode() + b"\xff\xfe" * 3
    utf16 = ("<html><body><p>" + "Unicode sixteen text with enough words. " * 3 + "</p></body></html>").encode(
        "utf-16")
    encodings = _warc(tmp_path / "encodings.warc.gz", [
        page_record("https://x.org/latin1", latin, date),  # charset from the <meta>: decoded right
        web_corpus._record(web_corpus.WarcRecordType.response, "k", date,
                           web_corpus._http_block(mixed, "text/html; charset=utf-8", date), url="https://x.org/mixed"),
        web_corpus._record(web_corpus.WarcRecordType.response, "u", date,
                           web_corpus._http_block(utf16, "text/html; charset=utf-16", date), url="https://x.org/u16"),
        web_corpus._record(web_corpus.WarcRecordType.response, "k2", date,
                           web_corpus._http_block(b"not html at all, {}", "application/json", date),
                           url="https://x.org/api.json"),
        web_corpus._record(web_corpus.WarcRecordType.response, "k3", date,
                           web_corpus._http_block(b"\x00" * 200 + b"<html>", "text/html; charset=x-klingon", date),
                           url="https://x.org/binary"),
        web_corpus._record(web_corpus.WarcRecordType.response, "big", date,
                           web_corpus._http_block(page * 3, "text/html", date), url="https://x.org/big"),
        web_corpus._record(web_corpus.WarcRecordType.response, "http", date, b"no HTTP status line here\r\n\r\n",
                           url="https://x.org/nohttp"),
    ])
    out = tmp_path / "out"
    success = run(out, [plain, zipped, junk, not_warc, encodings], max_page_bytes=2 * len(page))
    kept = {row["url"]: row for row in rows(out)}
    dropped = rows(out, dropped=True)
    reasons = [row["drop_reason"] for row in dropped]
    assert success["parts"] == 5 and success["totals"]["kept_rows"] == len(rows(out)) == 7
    assert success["totals"]["dropped_rows"] == len(dropped) == 11
    # plain: records 0 and 1 are kept around the garbage; the bad Content-Length and the cut last record are rows
    assert {"https://en.cppreference.com/w/page0", "https://en.cppreference.com/w/page1"} <= set(kept)
    assert any(reason.startswith("malformed_record: plain.warc: record at byte ") and "no WARC-Type" in reason
               for reason in reasons)
    assert any(re.match(r"malformed_record: plain\.warc: bytes \d+-\d+ unreadable \(Invalid WARC header\); reading "
                        r"resumed at byte \d+", reason) for reason in reasons)
    assert any(reason.startswith("malformed_record: plain.warc: record at byte ") and "truncated body" in reason
               for reason in reasons)
    # gzip: the cut member and the junk after it are one stretch; the next member is read
    zipped_rows = [row for row in rows(out) if row["id"] in {
        hashlib.sha1(f"zipped.warc.gz\x00{header(blob, 'WARC-Record-ID')}".encode()).hexdigest() for blob in blobs}]
    assert len(zipped_rows) == 2  # records 0 and 2
    assert any(re.match(r"malformed_record: zipped\.warc\.gz: bytes \d+-\d+ unreadable \(Gzip decompression error",
                        reason) and "reading resumed" in reason for reason in reasons)
    assert any(reason.startswith("malformed_record: junk.warc.gz: bytes 0-") and "no intact record after it" in reason
               for reason in reasons)
    assert any(reason.startswith("malformed_record: notes.warc: bytes 0-320 unreadable") for reason in reasons)
    # encodings: meta charset, replacement of a few bad bytes, UTF-16 from the header, bad types
    assert "Größe und Gewicht der Würfel." in kept["https://x.org/latin1"]["text"]
    assert kept["https://x.org/mixed"]["text"].count("\ufffd") == 6
    assert "Unicode sixteen text" in kept["https://x.org/u16"]["text"]
    by_url = {row["url"]: row["drop_reason"] for row in dropped if row["url"]}
    assert by_url["https://x.org/api.json"] == "not_html: application/json"
    assert by_url["https://x.org/binary"] == "binary: NUL byte at offset 0"
    assert by_url["https://x.org/big"] == f"oversize: {3 * len(page)} bytes > max_page_bytes {2 * len(page)}"
    assert by_url["https://x.org/nohttp"].startswith("malformed_record: encodings.warc.gz: record at byte ")
    assert "no HTTP status line" in by_url["https://x.org/nohttp"]


def test_folder_of_pages_and_warcs(tmp_path):
    site = tmp_path / "site"
    (site / "tutorial").mkdir(parents=True)
    (site / "tutorial" / "controlflow.html").write_bytes(_page_bytes(CONTROLFLOW))
    (site / "vector push_back.htm").write_bytes(_page_bytes(PUSH_BACK))
    (site / "latin.html").write_bytes(("<html><head><meta http-equiv='Content-Type' content='text/html; "
                                       "charset=ISO-8859-1'></head><body><p>" + "Café crème brûlée déjà vu. " * 4
                                       + "</p></body></html>").encode("latin-1"))
    (site / "empty.html").write_bytes(b"<html><body><nav><a href='/'>Home</a></nav></body></html>")
    (site / "logo.png").write_bytes(b"\x89PNG\r\n")
    (site / "crawl").mkdir()
    shutil.copy(TRUNCATED, site / "crawl" / "truncated.warc.gz")
    out = tmp_path / "file_urls"
    success = run(out, [site])
    assert success["warc_files"] == 1 and success["html_pages"] == 4 and success["skipped_files"] == 1
    kept = {row["url"]: row for row in rows(out)}
    dropped = {row["url"]: row for row in rows(out, dropped=True)}
    python = kept["file:///tutorial/controlflow.html"]
    assert python["repo"] == "site" and python["path"] == "/tutorial/controlflow.html" and python["fetch_date"] is None
    assert python["id"] == hashlib.sha1(b"site\x00tutorial/controlflow.html").hexdigest()
    assert python["category"] == "docs"  # from the page's structure (Sphinx), no URL to go by
    assert "Café crème brûlée déjà vu." in kept["file:///latin.html"]["text"]
    assert dropped["file:///empty.html"]["drop_reason"] == "empty: no text after extraction"
    assert sum(url.startswith("https://") for url in kept) == 2  # the WARC in the folder
    assert "file:///vector%20push_back.htm" in kept

    out = tmp_path / "base_url"
    run(out, [{"path": str(site), "base_url": "https://docs.python.org/3/"}])
    python = next(row for row in rows(out) if row["url"] == CONTROLFLOW)
    assert python["repo"] == "docs.python.org" and python["path"] == "/3/tutorial/controlflow.html"


def test_bad_options_and_inputs(tmp_path):
    with pytest.raises(ConfigError, match=r"\[web_ingest\]: min_words: must be >= 0, got -1"):
        web_ingest.STEP.check_options({"min_words": -1})
    with pytest.raises(ConfigError, match=r"base_url: must start with a scheme"):
        web_ingest.STEP.check_options({"base_url": "docs.python.org"})
    with pytest.raises(CurateConfigError, match="no inputs"):
        run(tmp_path / "a", [])
    with pytest.raises(CurateConfigError, match="does not exist"):
        run(tmp_path / "b", [str(tmp_path / "missing.warc.gz")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CurateConfigError, match=r"notes\.txt is a file but not a \.warc"):
        run(tmp_path / "c", [str(tmp_path / "notes.txt")])
    with pytest.raises(CurateConfigError, match=r"unknown key\(s\) \['kind'\]"):
        run(tmp_path / "d", [{"path": FIXTURE, "kind": "warc"}])
    with pytest.raises(CurateConfigError, match="given twice"):
        run(tmp_path / "e", [PAGES, PAGES])


# ------------------------------------------------------------------------------------------ small functions
def test_decode_html_charsets():
    assert decode_html("café".encode("cp1252"), "ISO-8859-1") == ("café", "cp1252", 0)  # WHATWG: latin1 = cp1252
    assert decode_html("café".encode(), '"utf-8"') == ("café", "utf-8", 0)
    assert decode_html(b"<meta charset=koi8-r>\xc4\xc1")[0:2] == ("<meta charset=koi8-r>да", "koi8-r")
    assert decode_html("\ufeffcafé".encode(), "iso-8859-1") == ("café", "utf-8", 0)  # a BOM wins over headers
    assert decode_html("café".encode("utf-16"), None) == ("café", "utf-16", 0)
    assert decode_html(b"caf\xe9 ok", "x-klingon") == ("caf\ufffd ok", "utf-8", 1)  # unknown name: UTF-8
    assert decode_html(b"caf\xe9 ok") == ("caf\ufffd ok", "utf-8", 1)
    assert decode_html("ok \ufffd".encode()) == ("ok \ufffd", "utf-8", 0)  # a real U+FFFD is not a replacement


@pytest.mark.parametrize("url,html,expected", [
    ("https://stackoverflow.com/questions/231767/what-does-yield-do", "", "qa"),
    ("https://unix.stackexchange.com/questions/1/x", "", "qa"),
    ("https://example.com/questions/42/how-to", "", "qa"),
    ("https://discuss.python.org/t/pep-703/12345", "", "forum"),
    ("https://example.com/t/some-topic/991", "", "forum"),
    ("https://www.example.org/phpBB3/viewtopic.php?t=7", "", "forum"),
    ("https://www.reddit.com/r/rust/comments/abc/title/", "", "forum"),
    ("https://docs.python.org/3/library/os.html", "", "docs"),
    ("https://example.com/docs/install", "", "docs"),
    ("https://example.com/en/reference/api-x", "", "docs"),
    ("https://numpy.org/doc/stable/reference/generated/numpy.sum.html", "", "docs"),
    ("https://www.php.net/manual/en/function.strlen.php", "", "docs"),
    ("https://en.cppreference.com/w/cpp/container/vector", "", "docs"),
    ("https://medium.com/@someone/my-post-1a2b", "", "blog"),
    ("https://blog.rust-lang.org/2024/05/02/Rust-1.78.0.html", "", "blog"),
    ("https://example.com/2023/11/understanding-closures/", "", "blog"),
    ("https://example.com/posts/why-go", "", "blog"),
    ("https://shop.example.com/mug", "", "shop"),
    ("https://example.com/product/keyboard-123", "", "shop"),
    ("https://example.com/cart", "", "shop"),
    ("https://news.ycombinator.com/item?id=1", "", "forum"),
    ("https://www.theregister.com/2024/01/01/story/", "", "news"),
    ("https://example.com/news/release-2", "", "news"),
    ("https://example.com/about", "<html><body><p>About us.</p></body></html>", "other"),
    (None, None, "other"),
    # structure: declarations win over the URL; markup decides where the URL says nothing
    ("https://example.com/a", '<html><body itemscope itemtype="https://schema.org/QAPage"><p>q</p></body></html>', "qa"),
    ("https://docs.example.com/x", '<html><head><script type="application/ld+json">{"@context": "https://schema.org", '
     '"@type": "Product", "offers": {"@type": "Offer", "price": "9"}}</script></head><body></body></html>', "shop"),
    ("https://example.com/p/1", '<html><body><span itemprop="price">9.99</span><button class="btn add-to-cart">Add'
     '</button></body></html>', "shop"),
    ("https://example.com/x", '<html><head><meta name="generator" content="phpBB"></head><body></body></html>',
     "forum"),
    ("https://example.com/x", '<html><body><div class="sidebar">' + "<a href='#'>s</a>" * 6 + "</div><h1>A</h1><h2>B"
     "</h2><pre>x = 1</pre></body></html>", "docs"),
    ("https://example.com/x", '<html><body><div class="navheader">x</div><p>Chapter</p></body></html>', "docs"),
    ("https://example.com/x", '<html><head><meta name="generator" content="WordPress 6.4"></head><body><p>hi</p>'
     '</body></html>', "blog"),
])
def test_page_category(url, html, expected):
    assert page_category(url, HTMLTree.parse(html) if html is not None else None) == expected


def test_code_stats_counts_the_main_content_only():
    html = ("<html><body><nav><code>nav_code()</code></nav><div class='sphinxsidebar'><code>toc()</code></div>"
            "<main><p>Call <code>run()</code> then:</p><pre>for x in y:\n    print(x)\n</pre>"
            "<pre class='x'><code>int main() {}</code></pre><code>line1\nline2</code><code>a &lt; b</code>"
            "<pre>dropped_by_the_extractor()</pre></main></body></html>")
    text = "Call run() then:\nfor x in y:\n    print(x)\nint main() {}\nline1\nline2 a < b"
    assert code_stats(html, text) == (True, 3, len("for x in y:\n    print(x)") + len("int main() {}")
                                      + len("run()") + len("line1\nline2") + len("a < b"))
    assert code_stats(html, "Call run() then:") == (True, 0, len("run()"))  # the extractor dropped the blocks
    assert code_stats(html, "nothing of it") == (False, 0, 0)
    assert code_stats("<p>no code</p>", "no code") == (False, 0, 0)
    # the tree's reading of the same elements agrees on real pages (the fixture's Python tutorial)
    page = _page_bytes(CONTROLFLOW).decode()
    tree = HTMLTree.parse(page)
    text = extract_plain_text(tree, main_content=True, preserve_formatting=True, alt_texts=False)
    flat = " ".join(text.split())
    blocks = [element.text for element in tree.body.query_selector_all("pre, code:not(pre *)").values()
              if element.tag == "pre" or "\n" in element.text.strip()]
    counted = [block for block in blocks if " ".join(block.split()) in flat]
    assert len(counted) == 57 and code_stats(page, text)[1] == len(counted)


# ------------------------------------------------------------------------------------------ the corpus builder
def test_build_corpus_writes_warcs_web_ingest_reads(tmp_path, monkeypatch, capsys):
    root = tmp_path / "usr_share" / "pydoc"
    (root / "tutorial").mkdir(parents=True)
    (root / "_static").mkdir()
    (root / "tutorial" / "controlflow.html").write_bytes(_page_bytes(CONTROLFLOW))
    (root / "library.html").write_bytes(_page_bytes(PUSH_BACK))
    (root / "_static" / "skip.html").write_text("<p>asset</p>")
    fake = web_corpus.DocPackage("fake-doc", str(root), lambda rel: "https://docs.fake.org/" + rel, "code",
                                 "test", code_sections=())
    missing = web_corpus.DocPackage("missing-doc", str(tmp_path / "nowhere"), lambda rel: rel, "other", "test")
    monkeypatch.setattr(web_corpus, "PACKAGES", {"fake-doc": fake, "missing-doc": missing})
    summary = build_corpus(str(tmp_path / "corpus"), ["fake-doc", "missing-doc"], max_pages=5, seed=3)
    printed = capsys.readouterr().out
    assert "missing: missing-doc" in printed and "found: fake-doc: 2 pages" in printed
    assert summary["pages"] == 2 and summary["missing"] == ["missing-doc"]
    labels = [json.loads(line) for line in open(tmp_path / "corpus" / "labels.jsonl")]
    assert [label["url"] for label in labels] == ["https://docs.fake.org/library.html",
                                                  "https://docs.fake.org/tutorial/controlflow.html"]
    assert all(label["split"] == split_of(label["url"], 0.2) and label["label"] == "code" for label in labels)
    warc = tmp_path / "corpus" / "fake-doc.warc.gz"
    records = members(str(warc))
    assert len(records) == 3 and b"WARC-Type: warcinfo" in records[0]
    assert b"Content-Type: application/http; msgtype=response" in records[1]
    assert b"HTTP/1.1 200 OK\r\n" in records[1] and b"Content-Type: text/html; charset=utf-8\r\n" in records[1]
    out = tmp_path / "ingested"
    run(out, [warc])
    kept = {row["url"]: row for row in rows(out)}
    assert kept["https://docs.fake.org/tutorial/controlflow.html"]["text"] == next(
        row for row in rows(out) if row["url"].endswith("controlflow.html"))["text"]
    assert "    if status == 'inactive':" in kept["https://docs.fake.org/tutorial/controlflow.html"]["text"]
    # deterministic: the same inputs give the same bytes
    build_corpus(str(tmp_path / "again"), ["fake-doc"], max_pages=5, seed=3)
    assert (tmp_path / "again" / "fake-doc.warc.gz").read_bytes() == warc.read_bytes()


def test_split_and_labels():
    urls = [f"https://docs.python.org/3/page{i}.html" for i in range(2000)]
    heldout = sum(split_of(url, 0.2) == "heldout" for url in urls) / len(urls)
    assert 0.17 < heldout < 0.23 and split_of(urls[0], 0.2) == split_of(urls[0], 0.2)
    gimp, office = web_corpus.PACKAGES["gimp-help-en"], web_corpus.PACKAGES["libreoffice-help-en-us"]
    assert web_corpus.label_of(gimp, "gimp-using-script-fu-tutorial-lists.html") == "code"
    assert web_corpus.label_of(gimp, "gimp-tool-crop.html") == "other"
    assert web_corpus.label_of(office, "text/sbasic/shared/03080601.html") == "code"
    assert web_corpus.label_of(office, "text/swriter/main0000.html") == "other"
    assert web_corpus.PACKAGES["cppreference-doc-en-html"].url("cpp/container/vector/push_back.html") == PUSH_BACK
