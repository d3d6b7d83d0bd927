"""A real web corpus, offline: HTML pages that Debian packages install, written as WARC.gz files with their URLs.

    python -m seedcoder.curate.web_corpus --out runs/web-corpus                      # every package found
    python -m seedcoder.curate.web_corpus --out D --packages python3-doc,gimp-help-en --max-pages 200 --seed 1
    python -m seedcoder.curate.web_corpus --fixture --out tests/data/web                # the committed test fixture
    build_corpus("runs/web-corpus", packages=["python3-doc"], max_pages=100)           # the same from Python

No network: the pages are the documentation that `apt install PACKAGE` puts under /usr/share. Each page becomes
a WARC/1.1 response record (WARC-Target-URI: the page's URL on its real site, e.g. docs.python.org/3/...,
en.cppreference.com/w/...; WARC-Date: the file's modification time; WARC-Record-ID: a UUID derived from the URL;
an HTTP/1.1 200 block with `Content-Type: text/html; charset=...`, the charset of the page's <meta> tag or
utf-8), each record its own gzip member (as Common Crawl writes them), after a warcinfo record. One file per
package (`PACKAGE.warc.gz`), or all in one (`single_file`). Deterministic: the same packages, options and seed
give the same bytes.

`labels.jsonl`, one line per page written: url, label ("code" or "other"), package, split ("train" or
"heldout", from a hash of the URL: `heldout_fraction` of the pages, never trained on), warc (the file), source
(the installed file). Labels are per package: programming documentation (Python, cppreference, Node.js, SQLite,
PostgreSQL) is "code"; office, image-editor and finance help (LibreOffice, GIMP, GnuCash) is "other"; the
Debian Reference is "code" (a system administrator's manual whose chapters are built around shell sessions,
command tables and configuration files, with a chapter on programming; Seed-Coder counts shell among its
languages). Two documented sections of "other" packages are programming and labelled "code": LibreOffice's
text/sbasic/ (the Basic and Python macro reference) and GIMP's Script-Fu tutorial (gimp-using-script-fu-*).
"""

from __future__ import annotations

import argparse
import datetime
import email.utils
import fnmatch
import gzip
import hashlib
import io
import json
import os
import random
import re
import sys
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastwarc.warc import WarcRecord, WarcRecordType

from seedcoder.config import option
from seedcoder.curate.errors import CurateInputError
from seedcoder.curate.step import StepContext, StepKind, say
from seedcoder.curate.web_ingest import meta_charset
from seedcoder.errors import UserError, exit_on_user_error
from seedcoder.fileio import atomic_write, atomic_write_text

LABELS_FILE = "labels.jsonl"
SOFTWARE = "seedcoder.curate.web_corpus"


@dataclass(frozen=True)
class DocPackage:
    """A Debian package's HTML documentation and where it lives on the web."""

    name: str
    root: str  # the folder its HTML files are under
    url: Callable[[str], str]  # relative path -> the page's URL on its real site
    label: str  # "code" or "other"
    licence: str
    include: str = r".*"  # regex a relative path must match (re.fullmatch)
    exclude: str = r"(.*/)?_.*"  # regex of relative paths to leave out (indexes, assets)
    code_sections: tuple[str, ...] = ()  # globs of relative paths labelled "code" in an "other" package


PACKAGES: dict[str, DocPackage] = {package.name: package for package in (
    DocPackage("python3-doc", "/usr/share/doc/python3-doc/html", lambda rel: "https://docs.python.org/3/" + rel,
               "code", "PSF-2.0 (Python Software Foundation License)",
               exclude=r"(.*/)?_.*|genindex.*|search\.html|py-modindex\.html"),
    DocPackage("cppreference-doc-en-html", "/usr/share/cppreference/doc/html/en",
               lambda rel: "https://en.cppreference.com/w/" + rel.removesuffix(".html"), "code",
               "CC-BY-SA-3.0 or GFDL-NIV (cppreference.com authors)", exclude=r"common/.*"),
    DocPackage("gimp-help-en", "/usr/share/gimp/2.0/help/en", lambda rel: "https://docs.gimp.org/2.10/en/" + rel,
               "other", "GFDL-1.2+ (GIMP documentation team)", code_sections=("gimp-using-script-fu-tutorial*",)),
    DocPackage("libreoffice-help-en-us", "/usr/share/libreoffice/help/en-US",
               lambda rel: "https://help.libreoffice.org/7.4/en-US/" + rel, "other",
               "MPL-2.0 (The Document Foundation, LibreOffice contributors)", exclude=r"noscript\.html",
               code_sections=("text/sbasic/*",)),
    DocPackage("debian-reference-en", "/usr/share/debian-reference",
               lambda rel: "https://www.debian.org/doc/manuals/debian-reference/" + rel, "code",
               "GPL-2+ (Osamu Aoki)", include=r"[^/]*\.en\.html"),
    DocPackage("gnucash-docs", "/usr/share/doc/gnucash-docs",
               lambda rel: "https://www.gnucash.org/docs/v4/C/" + re.sub(r"^(gnucash-(?:guide|help))-en", r"\1", rel),
               "other", "GFDL-1.1+ or GPL-2+ (GnuCash documentation team)", include=r"gnucash-(guide|help)-en/.*"),
    DocPackage("nodejs-doc", "/usr/share/doc/nodejs/api", lambda rel: "https://nodejs.org/docs/latest-v18.x/api/" + rel,
               "code", "MIT (Node.js contributors)", exclude=r"all\.html|assets/.*"),
    DocPackage("sqlite3-doc", "/usr/share/doc/sqlite3", lambda rel: "https://sqlite.org/" + rel, "code",
               "public domain (SQLite)"),
    DocPackage("postgresql-doc-15", "/usr/share/doc/postgresql-doc-15/html",
               lambda rel: "https://www.postgresql.org/docs/15/" + rel, "code",
               "PostgreSQL Licence (PostgreSQL Global Development Group)"),
)}


def package_pages(package: DocPackage) -> list[str]:
    """The relative paths of the package's HTML pages (sorted); [] when it is not installed."""
    pages = []
    for folder, dirs, names in os.walk(package.root):
        dirs.sort()
        for name in sorted(names):
            if not name.endswith((".html", ".htm")):
                continue
            relative = os.path.relpath(os.path.join(folder, name), package.root).replace(os.sep, "/")
            if re.fullmatch(package.include, relative) and not re.fullmatch(package.exclude, relative):
                pages.append(relative)
    return pages


def label_of(package: DocPackage, relative: str) -> str:
    return "code" if any(fnmatch.fnmatchcase(relative, glob) for glob in package.code_sections) else package.label


def split_of(url: str, heldout_fraction: float) -> str:
    """"heldout" for a fixed hash-chosen `heldout_fraction` of URLs, else "train" (the same on every machine)."""
    bucket = int(hashlib.sha1(url.encode("utf-8")).hexdigest()[:8], 16) / 0x1_0000_0000
    return "heldout" if bucket < heldout_fraction else "train"


# ------------------------------------------------------------------------------------------ WARC records
def _date(mtime: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(mtime), tz=datetime.timezone.utc)


def _http_block(body: bytes, content_type: str, date: datetime.datetime, status: str = "200 OK") -> bytes:
    http_date = email.utils.format_datetime(date, usegmt=True)
    return (f"HTTP/1.1 {status}\r\nDate: {http_date}\r\nLast-Modified: {http_date}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body


def _record(kind: WarcRecordType, key: str, date: datetime.datetime, block: bytes, *, url: str | None = None,
            content_type: str = "application/http; msgtype=response", extra: Mapping[str, str] | None = None
            ) -> WarcRecord:
    record = WarcRecord()
    record.init_headers(kind, f"uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}".encode())
    record.record_date = date
    if url is not None:
        record.headers["WARC-Target-URI"] = url
    for name, value in (extra or {}).items():
        record.headers[name] = value
    record.set_bytes_content(block)
    record.is_http = content_type.startswith("application/http")  # also lets `write` add WARC-Payload-Digest
    record.headers["Content-Type"] = content_type
    return record


def page_record(url: str, body: bytes, date: datetime.datetime, charset: str | None = None) -> WarcRecord:
    """A WARC response record of an HTML page served with HTTP 200 (charset: the <meta> one, else utf-8)."""
    if charset is None:
        declared = meta_charset(body)
        charset = declared.lower() if declared and _valid_charset(declared) else "utf-8"
    return _record(WarcRecordType.response, url, date, _http_block(body, f"text/html; charset={charset}", date),
                   url=url)


def _valid_charset(name: str) -> bool:
    try:
        "".encode(name)
        return True
    except LookupError:
        return False


def warcinfo_record(filename: str, date: datetime.datetime, description: str) -> WarcRecord:
    fields = (f"software: {SOFTWARE}\r\nformat: WARC File Format 1.1\r\n"
              "conformsTo: https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/\r\n"
              f"description: {description}\r\n").encode()
    return _record(WarcRecordType.warcinfo, "warcinfo:" + filename, date, fields,
                   content_type="application/warc-fields", extra={"WARC-Filename": filename})


def _member(record: WarcRecord) -> bytes:
    """One record as its own gzip member (deterministic bytes: gzip header mtime 0)."""
    raw = io.BytesIO()
    record.write(raw, checksum_data=True)
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


class WarcFile:
    """A .warc.gz written atomically (a temp file renamed into place on close), one gzip member per record."""

    def __init__(self, path: str, description: str, date: datetime.datetime) -> None:
        self.path = path
        self.members: list[bytes] = [_member(warcinfo_record(os.path.basename(path), date, description))]

    def add(self, record: WarcRecord) -> None:
        self.members.append(_member(record))

    def add_raw(self, member: bytes) -> None:
        self.members.append(member)

    def close(self) -> int:
        data = b"".join(self.members)
        atomic_write(self.path, lambda file: file.write(data))
        return len(data)


# ------------------------------------------------------------------------------------------ the corpus
@dataclass
class CorpusPage:
    package: str
    relative: str
    url: str
    label: str
    source: str  # the installed file


def choose_pages(packages: Sequence[str], max_pages: int | Mapping[str, int], seed: int, max_page_bytes: int,
                 include: Mapping[str, Sequence[str]] | None = None, say: Callable[[str], None] = print
                 ) -> tuple[list[CorpusPage], list[str]]:
    """(pages, missing packages): up to max_pages pages of each installed package (a seeded sample of the pages of
    at most max_page_bytes, plus the relative paths in `include`), in package order and then path order."""
    chosen, missing = [], []
    for name in packages:
        if name not in PACKAGES:
            raise UserError(f"unknown package {name!r}; known: {', '.join(PACKAGES)}")
        package = PACKAGES[name]
        pages = package_pages(package) if os.path.isdir(package.root) else []
        if not pages:
            missing.append(name)
            say(f"missing: {name} (no HTML under {package.root}; install it with `apt install {name}`)")
            continue
        wanted = list((include or {}).get(name, ()))
        absent = [relative for relative in wanted if relative not in pages]
        if absent:
            raise UserError(f"{name} has no page {absent[0]!r} under {package.root}")
        limit = max_pages.get(name, 0) if isinstance(max_pages, Mapping) else max_pages
        small = [relative for relative in pages if relative not in wanted
                 and os.path.getsize(os.path.join(package.root, relative)) <= max_page_bytes]
        rng = random.Random(f"{seed}:{name}")
        sample = sorted(wanted + rng.sample(small, max(0, min(limit - len(wanted), len(small)))))
        say(f"found: {name}: {len(pages):,} pages under {package.root} ({len(small):,} of at most {max_page_bytes:,} "
            f"bytes) -> {len(sample)} chosen")
        chosen += [CorpusPage(name, relative, package.url(relative), label_of(package, relative),
                              os.path.join(package.root, relative)) for relative in sample]
    return chosen, missing


def build_corpus(out: str, packages: Sequence[str] | None = None, max_pages: int | Mapping[str, int] = 200,
                 seed: int = 0, max_page_bytes: int = 1 << 20, heldout_fraction: float = 0.2,
                 single_file: str | None = None, include: Mapping[str, Sequence[str]] | None = None,
                 say: Callable[[str], None] = print) -> dict[str, Any]:
    """Write PACKAGE.warc.gz files (or one `single_file`) and labels.jsonl under `out`; returns a summary."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise UserError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    packages = list(packages or PACKAGES)
    pages, missing = choose_pages(packages, max_pages, seed, max_page_bytes, include, say)
    if not pages:
        raise UserError(f"none of the packages {', '.join(packages)} is installed (their HTML is "
                        "missing); install them with apt, e.g. `apt install python3-doc gimp-help-en`")
    os.makedirs(out, exist_ok=True)
    files: dict[str, WarcFile] = {}
    labels = []
    for page in pages:
        name = single_file or f"{page.package}.warc.gz"
        if name not in files:
            newest = max(os.path.getmtime(p.source) for p in pages if single_file or p.package == page.package)
            description = (f"HTML pages installed by Debian packages ({', '.join(sorted({p.package for p in pages}))})"
                           if single_file else f"HTML pages installed by the Debian package {page.package}")
            files[name] = WarcFile(os.path.join(out, name), description, _date(newest))
        with open(page.source, "rb") as file:
            body = file.read()
        files[name].add(page_record(page.url, body, _date(os.path.getmtime(page.source))))
        labels.append({"url": page.url, "label": page.label, "package": page.package,
                       "split": split_of(page.url, heldout_fraction), "warc": name, "source": page.source})
    sizes = {name: warc.close() for name, warc in files.items()}
    write_labels(out, labels)
    summary = summarize(labels, sizes, missing)
    say(f"wrote {len(labels):,} pages into {len(files)} WARC file(s) ({sum(sizes.values()) / 2**20:.1f} MiB) and "
        f"{LABELS_FILE} under {out}")
    return summary


def write_labels(out: str, labels: Sequence[Mapping[str, Any]]) -> None:
    atomic_write_text(os.path.join(out, LABELS_FILE), "".join(json.dumps(row, sort_keys=True) + "\n" for row in labels))


def summarize(labels: Sequence[Mapping[str, Any]], sizes: Mapping[str, int], missing: Sequence[str]) -> dict:
    per_package: dict[str, dict[str, int]] = {}
    for row in labels:
        counts = per_package.setdefault(row["package"], {"code": 0, "other": 0, "train": 0, "heldout": 0})
        counts[row["label"]] += 1
        counts[row["split"]] += 1
    return {"pages": len(labels), "packages": per_package, "missing": list(missing), "files": dict(sizes)}


# ------------------------------------------------------------------------------------------ the test fixture
FIXTURE_PAGES = {  # package -> pages per package in tests/data/web (small pages, 8 packages)
    "python3-doc": 12, "cppreference-doc-en-html": 12, "gimp-help-en": 10, "libreoffice-help-en-us": 10,
    "debian-reference-en": 1, "nodejs-doc": 2, "sqlite3-doc": 4, "postgresql-doc-15": 4, "gnucash-docs": 5,
}
FIXTURE_INCLUDE = {  # pages the tests name (known code blocks, known categories)
    "python3-doc": ["tutorial/controlflow.html"],
    "cppreference-doc-en-html": ["cpp/container/vector/push_back.html"],
    "libreoffice-help-en-us": ["text/sbasic/shared/03080601.html"],
    "debian-reference-en": ["pr01.en.html"],
    "gimp-help-en": ["gimp-using-script-fu-tutorial-first-script.html"],
}
FIXTURE_SEED = 11
FIXTURE_MAX_PAGE_BYTES = 24_000
FIXTURE_FILE = "pages.warc.gz"
TRUNCATED_FILE = "truncated.warc.gz"
TRUNCATED_PAGES = {"gimp-help-en": 2, "sqlite3-doc": 2}  # 4 pages: the 2nd and the 4th are cut
BAD_DATE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def _bad_records(good: CorpusPage) -> list[bytes]:
    """Gzip members of records that web_ingest must drop, each with its reason (the only synthetic bytes)."""
    members = []
    # a real non-HTML response: the Python docs' logo
    png_path = os.path.join(PACKAGES["python3-doc"].root, "_static", "py.png")
    png = open(png_path, "rb").read() if os.path.exists(png_path) else b"\x89PNG\r\n\x1a\n" + bytes(64)
    members.append(_member(_record(WarcRecordType.response, "https://docs.python.org/3/_static/py.png", BAD_DATE,
                                   _http_block(png, "image/png", BAD_DATE), url="https://docs.python.org/3/_static/py.png")))
    # the request record a crawler writes before a response
    request = f"GET /3/tutorial/index.html HTTP/1.1\r\nHost: docs.python.org\r\nUser-Agent: {SOFTWARE}\r\n\r\n"
    members.append(_member(_record(WarcRecordType.request, "request:https://docs.python.org/3/tutorial/index.html",
                                   BAD_DATE, request.encode(), url="https://docs.python.org/3/tutorial/index.html",
                                   content_type="application/http; msgtype=request")))
    # a 404 page, a too-short page, binary bytes labelled text/html, a page whose declared charset does not match
    not_found = b"<html><body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>"
    members.append(_member(_record(WarcRecordType.response, "https://docs.python.org/3/missing.html", BAD_DATE,
                                   _http_block(not_found, "text/html; charset=utf-8", BAD_DATE, "404 Not Found"),
                                   url="https://docs.python.org/3/missing.html")))
    short = b"<html><head><title>Moved</title></head><body><p>This page has moved.</p></body></html>"
    members.append(_member(_record(WarcRecordType.response, "https://www.debian.org/doc/moved.html", BAD_DATE,
                                   _http_block(short, "text/html; charset=utf-8", BAD_DATE),
                                   url="https://www.debian.org/doc/moved.html")))
    binary = zlib.compress(open(good.source, "rb").read())[:3000]  # compressed bytes: NULs, not text
    members.append(_member(_record(WarcRecordType.response, "https://docs.gimp.org/2.10/en/binary.html", BAD_DATE,
                                   _http_block(binary, "text/html", BAD_DATE),
                                   url="https://docs.gimp.org/2.10/en/binary.html")))
    latin = ("<html><body><p>" + "Größenänderung für Bilder und Ebenen, schnell und einfach. " * 20
             + "</p></body></html>").encode("iso-8859-1")
    members.append(_member(_record(WarcRecordType.response, "https://docs.gimp.org/2.10/de/wrong-charset.html",
                                   BAD_DATE, _http_block(latin, "text/html; charset=utf-8", BAD_DATE),
                                   url="https://docs.gimp.org/2.10/de/wrong-charset.html")))
    # a record whose WARC header block is garbage (one gzip member of its own; the records after it must be read)
    members.append(gzip.compress(b"WARC/1.1\r\nthis is not a header line\r\n\x01\x02\r\nContent-Length: 14\r\n\r\n"
                                 b"garbage record\r\n\r\n", mtime=0))
    return members


def build_fixture(out: str, say: Callable[[str], None] = print) -> dict[str, Any]:
    """tests/data/web: pages.warc.gz (real pages of 9 packages + the bad records of `_bad_records` in the middle),
    truncated.warc.gz (4 real pages, the 2nd cut mid-member, the 4th cut at the end of the file), labels.jsonl."""
    packages = list(FIXTURE_PAGES)
    pages, missing = choose_pages(packages, FIXTURE_PAGES, FIXTURE_SEED, FIXTURE_MAX_PAGE_BYTES, FIXTURE_INCLUDE, say)
    if missing:
        raise UserError(f"--fixture needs every fixture package installed; missing: {', '.join(missing)}")
    os.makedirs(out, exist_ok=True)
    newest = _date(max(os.path.getmtime(page.source) for page in pages))
    main = WarcFile(os.path.join(out, FIXTURE_FILE), "HTML pages installed by Debian packages, and bad records",
                    newest)
    labels = []
    middle = len(pages) // 2
    for number, page in enumerate(pages):
        if number == middle:
            for member in _bad_records(pages[0]):
                main.add_raw(member)
        main.add(page_record(page.url, open(page.source, "rb").read(), _date(os.path.getmtime(page.source))))
        labels.append({"url": page.url, "label": page.label, "package": page.package,
                       "split": split_of(page.url, 0.2), "warc": FIXTURE_FILE, "source": page.source})
    sizes = {FIXTURE_FILE: main.close()}
    pool, _ = choose_pages(list(TRUNCATED_PAGES), {name: 3 * count for name, count in TRUNCATED_PAGES.items()},
                           FIXTURE_SEED + 1, 8_000, None, lambda _: None)
    used = {row["url"] for row in labels}
    extra = []
    for name, count in TRUNCATED_PAGES.items():
        extra += [page for page in pool if page.package == name and page.url not in used][:count]
    if len(extra) != 4:
        raise UserError(f"--fixture: expected 4 distinct pages for {TRUNCATED_FILE}, got {len(extra)}")
    truncated = WarcFile(os.path.join(out, TRUNCATED_FILE), "real pages; two gzip members cut on purpose", newest)
    for number, page in enumerate(extra):
        member = _member(page_record(page.url, open(page.source, "rb").read(), _date(os.path.getmtime(page.source))))
        if number % 2:  # the 2nd and 4th records: their gzip members end halfway
            truncated.add_raw(member[: len(member) // 2])
        else:
            truncated.add_raw(member)
            labels.append({"url": page.url, "label": page.label, "package": page.package,
                           "split": split_of(page.url, 0.2), "warc": TRUNCATED_FILE, "source": page.source})
    sizes[TRUNCATED_FILE] = truncated.close()
    write_labels(out, labels)
    summary = summarize(labels, sizes, [])
    say(f"wrote {len(labels)} pages ({', '.join(f'{n} {s / 1024:.0f} KiB' for n, s in sizes.items())}) and "
        f"{LABELS_FILE} under {out}")
    return summary


# ------------------------------------------------------------------------------------------ the pipeline step
FIXTURE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "tests", "data", "web")


@dataclass
class WebCorpusOptions:
    packages: list[str] = option(list(PACKAGES), "Debian packages whose HTML pages are written (the ones not "
                                                 "installed are skipped, and said)")
    max_pages: int = option(200, "pages per package (a seeded sample)")
    seed: int = option(0, "sampling seed")
    max_page_bytes: int = option(1 << 20, "larger pages are left out")
    heldout_fraction: float = option(0.2, "share of the pages labelled heldout (never trained on)")
    fallback: bool = option(True, "none of the packages installed: copy the committed fixture (tests/data/web, real "
                                  "pages of 9 packages and bad records) instead of failing")

    def __post_init__(self) -> None:
        unknown = [name for name in self.packages if name not in PACKAGES]
        if unknown:
            raise ValueError(f"packages: unknown package {unknown[0]!r}; known: {', '.join(PACKAGES)}")
        if not self.packages:
            raise ValueError("packages: needs at least one package")
        if self.max_pages < 1 or self.max_page_bytes < 1:
            raise ValueError(f"max_pages / max_page_bytes: must be >= 1, got {self.max_pages} / {self.max_page_bytes}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction: must be in [0, 1), got {self.heldout_fraction}")


def installed_packages(packages: Sequence[str]) -> dict[str, int]:
    """{package: its HTML pages} for the packages installed here."""
    found = {}
    for name in packages:
        root = PACKAGES[name].root
        count = len(package_pages(PACKAGES[name])) if os.path.isdir(root) else 0
        if count:
            found[name] = count
    return found


def run_web_corpus(ctx: StepContext) -> dict[str, Any]:
    """The step `web_corpus`: the WARC.gz files + labels.jsonl of the installed packages (or the fixture)."""
    options = ctx.options
    installed = installed_packages(options["packages"])
    done = ctx.prepare(installed=installed)  # installing a package later makes a new corpus
    if done is not None:
        return done
    if installed:
        summary = build_corpus(ctx.out_dir, list(installed), options["max_pages"], options["seed"],
                               options["max_page_bytes"], options["heldout_fraction"], say=lambda text: say(
                                   f"{ctx.name}: {text}"))
        summary["fixture"] = False
    elif options["fallback"] and os.path.isfile(os.path.join(FIXTURE_DIR, LABELS_FILE)):
        say(f"{ctx.name}: NONE of {', '.join(options['packages'])} is installed; using the committed fixture "
            f"{FIXTURE_DIR} instead (install the packages with apt for the real corpus, e.g. `apt install "
            f"python3-doc cppreference-doc-en-html gimp-help-en libreoffice-help-en-us`)")
        for name in sorted(os.listdir(FIXTURE_DIR)):
            if name.endswith((".warc.gz", ".warc", LABELS_FILE)):
                with open(os.path.join(FIXTURE_DIR, name), "rb") as file:
                    data = file.read()
                atomic_write(os.path.join(ctx.out_dir, name), lambda out, data=data: out.write(data))
        with open(os.path.join(ctx.out_dir, LABELS_FILE), encoding="utf-8") as file:
            labels = [json.loads(line) for line in file if line.strip()]
        sizes = {name: os.path.getsize(os.path.join(ctx.out_dir, name)) for name in os.listdir(ctx.out_dir)
                 if name.endswith((".warc.gz", ".warc"))}
        summary = {**summarize(labels, sizes, list(options["packages"])), "fixture": True}
    else:
        raise CurateInputError(f"{ctx.name}: none of the packages {', '.join(options['packages'])} is installed "
                               "(install them with apt, e.g. `apt install python3-doc gimp-help-en`)"
                               + ("" if options["fallback"] else "; fallback = false"))
    return ctx.finish_other({"kind": "web_corpus", **summary})


STEP = StepKind("web_corpus", "WARC.gz files + labels.jsonl from the HTML documentation Debian packages install",
                run_web_corpus, WebCorpusOptions, reads=(), line="warc")


# ------------------------------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seedcoder.curate.web_corpus",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="packages: " + ", ".join(PACKAGES))
    parser.add_argument("--out", required=True, help="output folder (WARC.gz files + labels.jsonl)")
    parser.add_argument("--packages", help="comma-separated Debian packages (default: all known)")
    parser.add_argument("--max-pages", type=int, default=200, help="pages per package (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--max-page-bytes", type=int, default=1 << 20, help="skip larger pages (default: 1 MiB)")
    parser.add_argument("--heldout-fraction", type=float, default=0.2, help="held-out share of pages (default: 0.2)")
    parser.add_argument("--single-file", metavar="NAME", help="one WARC.gz of this name instead of one per package")
    parser.add_argument("--fixture", action="store_true", help="write the test fixture (tests/data/web) instead")
    args = parser.parse_args(argv)

    def run() -> int:
        if args.fixture:
            summary = build_fixture(args.out)
        else:
            packages = [name.strip() for name in args.packages.split(",") if name.strip()] if args.packages else None
            summary = build_corpus(args.out, packages, args.max_pages, args.seed, args.max_page_bytes,
                                   args.heldout_fraction, args.single_file)
        for name, counts in summary["packages"].items():
            print(f"  {name:26} code {counts['code']:5}  other {counts['other']:5}  train {counts['train']:5}  "
                  f"heldout {counts['heldout']:5}")
        return 0

    return exit_on_user_error("web_corpus", run)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["FIXTURE_DIR", "FIXTURE_PAGES", "LABELS_FILE", "PACKAGES", "STEP", "DocPackage", "WebCorpusOptions",
           "build_corpus", "build_fixture", "choose_pages", "installed_packages", "label_of", "main", "package_pages",
           "page_record", "run_web_corpus", "split_of", "warcinfo_record"]
