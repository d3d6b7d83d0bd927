"""The offline web rubric proxy (`RubricOracle` with rubric="web", name "rubric-proxy"): NOT an LLM.

The web rubric (`rating.WEB_RUBRIC_PROMPT`) asks whether a page is useful code-related text: does it teach or
explain programming, hold correct runnable code that its prose explains, document an API or a tool; 0 for pages
with no code-related content, spam, shops, navigation-only or auto-generated listing pages. This proxy measures
that from the page's extracted text (the first DEFAULT_PROMPT_CHARS characters, what an LLM rater sees) and, when
given, the row's web columns (`code_chars`, `code_blocks`: counted in the HTML's <pre>/<code>), then writes an
explanation and `Rating: [[X]]` that go through the same parser as an LLM's answer. Deterministic and offline.

What it measures (`measure_page` -> `PageFeatures`). The text is split into paragraphs at blank lines, each line
classified as code (a prompt `>>>` / `$`, a statement keyword at its start, an operator, an assignment, a line
ending in `;`, `{` or `}`, indentation, dense symbols), prose (six or more mostly alphabetic words) or short
(headings, menu items, list entries); a paragraph is code when most of its lines are, a run of code paragraphs is
one code block. Then: prose sentences; code blocks with prose right before or after them (code that is
explained); identifiers of the code (names with `_`, digits or inner capitals, or called / dotted in the code)
that the prose mentions; whether each block's brackets balance (complete code); headings; reference sections
(Parameters, Returns, Syntax, Example, ...) and signatures; programming terms per 100 prose words; boilerplate
lines (copyright, cookies, sign in, breadcrumbs, prev/next), forum signatures and post metadata (Posted by,
Joined:, Quote, Sent from my, asked/answered ...), navigation (runs of short lines), repeated lines, shop and
price vocabulary, spam vocabulary.

The zero rules, in order: almost no text (< 10 words); mostly repeated lines; spam; a shop or product listing
(price and cart vocabulary, little code); navigation or an auto-generated listing (short lines, < 3 sentences,
little code); no code-related content (no code and almost no programming terms). Otherwise four criteria, each
0-10, the web rubric's aspects: Teaching (sentences, programming terms, identifiers mentioned, explained code),
Code with explanation (code blocks, code share of the page, explained and balanced blocks), Reference value
(reference sections, signatures, headings, terms), Text quality (boilerplate/navigation/signature share,
repetition, length, shop terms). The score is their weighted mean (0.3, 0.3, 0.15, 0.25) within 1..10, the
rating its rounding half up.

Site types. The paper found LLM raters biased by site type (documentation and shops high, forums low). The proxy
does not look at the URL or the page category at all (forum signatures count as boilerplate lines, as a docs
page's navigation does), so a forum answer that explains code rates like documentation of the same shape;
`web_filter` corrects the raters' bias per category either way.

    features = measure_page(text)                                       # PageFeatures: sentences, code blocks...
    assessment = web_rubric_assessment(text, url=url, columns={"code_chars": 812, "code_blocks": 3})
    assessment.score, assessment.rating, assessment.zero_rule           # 7.12, 7, None
    answer = web_rubric_answer(text, url=url)                           # "...\nRating: [[7]]"
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from seedcoder.curate.rating import DEFAULT_PROMPT_CHARS

# The row columns the proxy reads when they are given (the web schema of docs/curation.md)
WEB_COLUMNS = ("url", "category", "code_chars", "code_blocks", "words", "has_code_tags")
WEIGHTS = {"teaching": 0.3, "code": 0.3, "reference": 0.15, "quality": 0.25}
HEADER = "[rubric-proxy (web): a static estimate of the web rubric from measured page properties, not an LLM judgement]"

# ------------------------------------------------------------------------------------------ line patterns
# A statement, a shell or REPL prompt, a preprocessor line... at the start of a line (case matters: "Return value"
# and "Import the module" are prose)
_CODE_START = re.compile(
    r"^(?:>>>|\.\.\.(?:\s|$)|\$ |# ?(?:include|define|ifn?def|endif|pragma)\b|#!|import\s+[\w.]+|from\s+[\w.]+\s+import\b|"
    r"def\s+\w+\s*\(|class\s+\w+\s*[:({<]|return\b|if\s*\(|for\s*\(|while\s*\(|switch\s*\(|else\s*[{:]|elif\b|"
    r"try\s*[{:]|except\b|catch\s*\(|public\s|private\s|protected\s|static\s|const\s+\w|let\s+\w|var\s+\w|"
    r"function\s*\w*\s*\(|fn\s+\w|func\s+\w|package\s+[\w.]+;?$|using\s+[\w.:]+|namespace\s+\w|template\s*<|"
    r"typedef\s|struct\s+\w+|enum\s+\w+|int\s+\w|void\s+\w|char\s*\*?\s*\w|auto\s+\w|std::|console\.|print\s*\(|"
    r"printf\s*\(|echo\s|sudo\s|apt(?:-get)?\s+install|pip\s+install|npm\s+(?:install|run)|git\s+\w|cd\s+\S|"
    r"export\s+\w+=|(?:SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP)\s+[\w*(]|@\w+(?:\(|$)|<\?php|</?\w+[^>]*>$)"
)
_OPERATOR = re.compile(r"==|!=|<=|>=|->|=>|::|&&|\|\||\+=|-=|\*=|\+\+|--\w|<<|>>|:=")
_ASSIGNMENT = re.compile(r"^[\w.\[\]'\"]+\s*=\s*\S")
_CALL = re.compile(r"\w[\w.]*\([^()]*\)\s*[;,)]?$")
_ENDS_LIKE_CODE = re.compile(r"(?:[;{}]|\)\s*:|\[\]|\(\))$")
# alphabetic words (trailing punctuation allowed), counted in a line at once
_WORDS = re.compile(r"(?<!\S)[^\W\d_][^\W\d_'’-]*[.,;:!?)\"'’]*(?!\S)")
_SENTENCE_END = re.compile(r"[.!?][\"'’)]*(?:\s|$)")
_HEADING_NUMBER = re.compile(r"^(?:\d+(?:\.\d+)*\.?|[A-Z]\.|#{1,6})\s+\S")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CODE_LOOKING = re.compile(r"[A-Za-z0-9]_[A-Za-z0-9]|_[A-Za-z0-9]|[a-z][A-Z]|[A-Za-z][0-9]")
_SIGNATURE = re.compile(
    r"^\s*(?:def\s+\w+\s*\(|class\s+\w+|(?:async\s+)?function\s+\w+\s*\(|fn\s+\w+|func\s+\w+|"
    r"(?:[\w:<>,*&\[\]]+\s+)+[*&]*[\w:~]+\s*\([^;{}]*\)\s*(?:const\s*)?(?:noexcept\s*)?;?\s*(?:\(\d+\))?\s*$|"
    r"[\w.]+\s*\([^()]*\)\s*(?:->|→)\s*\S+)"
)
# A documented API's signature alone on its line: "wave.open(file, mode=None)", "exception wave.Error",
# "str.split(sep=None, maxsplit=-1) -> list", "class collections.Counter([iterable])"
_API_SIGNATURE = re.compile(r"^(?:(?:exception|class|method|function|static|async|abstract)\s+)*"
                            r"[A-Za-z_][\w.:]*(?:\([^()]*(?:\([^()]*\)[^()]*)*\)(?:\s*(?:->|→)\s*\S.*)?|(?<=\.)\w+)$")
_REFERENCE_SECTION = re.compile(
    r"^(?:parameters?|arguments?|returns?|return (?:values?|type)|syntax|synopsis|signature|examples?|exceptions?|"
    r"raises|throws|errors|see also|notes?|usage|options|description|complexity|defined in header|attributes|"
    r"methods|properties|members|member functions|type requirements|fields|constructors?|deprecated|"
    r"since|availability|version added)\s*:?$",
    re.IGNORECASE,
)
_BOILERPLATE = re.compile(
    r"copyright|©|\(c\) \d{4}|all rights reserved|privacy(?: policy)?|terms (?:of|and) (?:use|service|conditions)|"
    r"cookies?\b|sign (?:in|up)|log ?(?:in|out)\b|create an account|subscribe|newsletter|share (?:this|on)|"
    r"follow us|skip to (?:main )?content|back to top|powered by|table of contents|last (?:updated|modified)|"
    r"^(?:home|next|prev(?:ious)?|up|top|menu|search|contents|index|navigation|toggle navigation|edit|print|"
    r"more|close|share|tweet|\W+)$|^prev\b|\bnext$"
)  # on the lower-cased line, as _FORUM
_BREADCRUMB = re.compile(r"(?:\s[|>»/<›]\s|‎)")
_FORUM = re.compile(
    r"posted (?:by|on)\b|\bjoined:?\s|\bposts:\s*\d|^re:\s|\breply\b|\bquote\b|reputation|last edited|"
    r"thanks in advance|sent from my|member since|registered:|report (?:post|abuse)|originally posted by|"
    r"^#\d+$|\b\d+ (?:replies|views|likes|posts|answers|votes)\b|^(?:like|upvote|downvote|permalink|flag)$|"
    r"\b(?:asked|answered|edited|modified) (?:\w+ )?\d+ \w+ ago|\b(?:asked|answered|edited) \w{3} \d{1,2}\b|"
    r"^(?:junior|senior|new|regular|veteran|active) member$|\bkarma\b|^signature$|^--\s*$"
)
# a forum line holds one of these words (a cheap test before _FORUM)
_FORUM_HINTS = frozenset("posted joined joined: posts: re: reply quote reputation edited thanks sent member registered: "
                         "report replies views likes answers votes like upvote downvote permalink flag asked answered "
                         "modified karma signature -- originally".split())
_PRICE = re.compile(r"[$€£¥]\s?\d[\d,]*(?:\.\d\d)?|\b\d[\d,]*(?:\.\d\d)?\s?(?:€|usd|eur|gbp)\b")  # on lower case
# Shop and spam vocabulary, searched in the lower-cased text: single words by set lookup, phrases by regex
SHOP_WORDS = frozenset("shipping checkout discount discounts sale sku qty quantity warranty wishlist price prices "
                       "bestseller bestsellers coupon coupons".split())
_SHOP_PHRASES = re.compile(
    r"add to (?:cart|basket|bag|wish ?list)|buy (?:it )?now|(?:in|out of) stock|free (?:shipping|delivery)|"
    r"shopping (?:cart|bag|basket)|order now|\d+ ?% off|special offer|customer reviews|in your cart"
)
_PRICE_MARKS = ("$", "€", "£", "¥", "usd", "eur", "gbp")
_SHOP_HINTS = ("add to", "buy ", "stock", "free ", "shopping", "order now", "% off", "offer", "reviews", "cart")
SPAM_WORDS = frozenset("casino casinos viagra cialis payday porn xxx bitcoin forex replica lottery escort escorts".split())
_SPAM_PHRASES = re.compile(r"weight loss|click here|make money|work from home|hot singles|free download")
_LOWER_WORD = re.compile(r"[a-z]+")
_SYMBOL = re.compile(r"[^\w\s]|_")
# Words that mark programming content (lower case; a prose word counts when it is one of these)
PROGRAMMING_TERMS = frozenset("""
function functions variable variables method methods class classes object objects argument arguments parameter
parameters return returns returned string strings integer integers int float floats boolean booleans array arrays
loop loops iterate iterates iteration iterator iterators compile compiles compiled compiler compilers syntax api
apis library libraries module modules package packages import imports code coding program programs programming
programmer programmers statement statements expression expressions exception exceptions pointer pointers query
queries sql database databases script scripts scripting shell terminal debug debugging debugger interpreter
runtime recursion recursive algorithm algorithms char byte bytes thread threads callback callbacks constructor
constructors destructor instance instances inheritance interface interfaces namespace namespaces template
templates declaration declarations declare declared macro macros operator operators operand operands keyword
keywords identifier identifiers attribute attributes struct structs enum enums tuple tuples dictionary
dictionaries regex regular json xml http https html css javascript typescript python java rust golang ruby php
perl bash kotlin swift haskell scala lua fortran cobol assembly c++ c# node.js linux unix git repository commit
commits server client endpoint endpoints request requests stdin stdout stderr allocate allocation allocator null
nullptr undefined nil buffer buffers stack heap queue queues hashmap hash bitwise boolean lambda lambdas closure
closures generator generators decorator decorators async await coroutine coroutines mutex semaphore deadlock
overload overloads overloaded override overridden polymorphism encapsulation abstraction typedef const constexpr
volatile static dynamic signature signatures invoke invoked invocation execute executes executed execution
executable binary binaries source sources header headers implementation implement implements implemented
refactor refactoring unittest assert assertion assertions testcase debugger breakpoint stacktrace traceback
compile-time run-time iterable iterables mutable immutable serialize serialization parse parser parsing
tokenizer lexer grammar cli argv argc main println printf cout cin std vector vectors container containers
allocator dereference reference references scope scopes global local globals locals garbage collection
""".split())
_STOPWORDS = frozenset("""the a an and or of to in is are was were be been it its this that these those for on with as by at
from not no but if then than so such can could may might will would should must do does did have has had
you your we our they their he she his her them there here which who whom what when where how why all any each
more most other some into over under about after before also only just very""".split())
_IDENTIFIER_STOPLIST = frozenset("""def class return import from print self this true false none null nil int void char
const static public private protected function var let for while if else elif std include define new delete
and not the""".split())


# ------------------------------------------------------------------------------------------ measurements
@dataclass
class PageFeatures:
    """What `measure_page` measured on a page's text (and the row's web columns, when given)."""

    chars: int = 0
    words: int = 0
    lines: int = 0  # non-blank lines
    code_lines: int = 0
    code_words: int = 0
    prose_lines: int = 0
    code_chars: int = 0  # characters of the code blocks found in the text (or the row's count, when larger)
    code_blocks: int = 0  # code blocks found in the text (or the row's count, when larger)
    text_code_blocks: int = 0  # code blocks found in the text
    explained_blocks: int = 0  # text code blocks with a prose paragraph right before or after them
    balanced_blocks: int = 0  # text code blocks whose (), [] and {} balance
    sentences: int = 0  # sentences of the prose paragraphs (four words or more)
    sentences_near_code: int = 0  # sentences of the prose paragraphs right before or after a code block
    prose_words: int = 0
    programming_terms: int = 0  # prose words that are PROGRAMMING_TERMS
    code_identifiers: int = 0  # distinct identifiers of the code
    mentioned_identifiers: int = 0  # ... of them that the prose mentions
    headings: int = 0
    reference_sections: int = 0  # distinct reference section titles (Parameters, Returns, ...)
    signatures: int = 0  # code lines that declare a function, method or class
    boilerplate_lines: int = 0
    forum_lines: int = 0  # forum signatures and post metadata
    navigation_lines: int = 0  # short non-heading lines in runs of three or more (menus, link lists)
    noise_words: int = 0  # words of the boilerplate, forum and navigation lines
    repeated_lines: int = 0  # non-code lines of 20+ characters that occur before
    long_lines: int = 0  # non-code lines of 20+ characters
    shop_terms: int = 0  # prices and shop vocabulary
    spam_terms: int = 0
    top_word_share: float = 0.0  # the most frequent content word's share of the prose words (keyword stuffing)
    has_code_tags: bool | None = None  # the row's column, when given
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few matched lines per kind, for explanations

    @property
    def code_fraction(self) -> float:
        return min(1.0, self.code_chars / self.chars) if self.chars else 0.0

    @property
    def noise_lines(self) -> int:
        return self.boilerplate_lines + self.forum_lines + self.navigation_lines

    @property
    def noise_share(self) -> float:
        """Words of boilerplate, forum-signature and navigation lines as a share of the words outside code."""
        return min(1.0, self.noise_words / max(self.words - self.code_words, 1))

    @property
    def repeated_share(self) -> float:
        return self.repeated_lines / self.long_lines if self.long_lines else 0.0

    @property
    def term_density(self) -> float:
        """Programming terms per 100 prose words."""
        return 100.0 * self.programming_terms / self.prose_words if self.prose_words else 0.0

    @property
    def shop_density(self) -> float:
        """Shop terms per 100 words."""
        return 100.0 * self.shop_terms / self.words if self.words else 0.0

    @property
    def mention_ratio(self) -> float:
        """Identifiers of the code mentioned in the prose, of at most 20 (a long listing need not be retold)."""
        return min(1.0, self.mentioned_identifiers / min(self.code_identifiers, 20)) if self.code_identifiers else 0.0


def _alphabetic_share(line: str, words: list[str]) -> float:
    return len(_WORDS.findall(line)) / len(words) if words else 0.0


_BULLET = re.compile(r"^\s*(?:[•·◦▪‣∙–—]|[-*+](?=\s))\s*")


def line_kind(line: str) -> str:
    """"code", "prose" or "short" (headings, menu items, list entries, output) for one non-blank line.

    Code: a statement or prompt at its start (`_CODE_START`), or two signals of code (an operator, an assignment,
    a call, an ending in `;` `{` `}` `):`, indentation, dense symbols) in a line that is not a long sentence, or
    one strong signal (not indentation or symbols alone) in a line of few alphabetic words. List bullets are
    ignored."""
    stripped = _BULLET.sub("", line.strip()) if _BULLET.match(line) and not _OPERATOR.match(line.strip()) else line.strip()
    if not stripped:
        return "short"
    words = stripped.split()
    alphabetic = _alphabetic_share(stripped, words)
    if _CODE_START.match(stripped):
        # "for (" / "return" / "static" also begin sentences of prose about code; a long alphabetic line is prose
        return "prose" if len(words) >= 8 and alphabetic >= 0.8 and stripped[-1:] in ".!?" else "code"
    strong = (bool(_OPERATOR.search(stripped)) + bool(_ASSIGNMENT.match(stripped))
              + (bool(_CALL.search(stripped)) and len(words) <= 6) + bool(_ENDS_LIKE_CODE.search(stripped)))
    indented = line[:1] in (" ", "\t") and len(line) - len(line.lstrip()) >= 2 and not _BULLET.match(line)
    symbols = len(_SYMBOL.findall(stripped))
    dense = symbols >= 0.25 * len(stripped.replace(" ", "")) and len(stripped) >= 6
    signals = strong + indented + dense
    if strong and signals >= 2 and not (len(words) >= 10 and alphabetic >= 0.85):
        return "code"
    if len(words) >= 6 and alphabetic >= 0.6:
        return "prose"
    if strong and alphabetic < 0.6:
        return "code"
    return "short"


def _balanced(text: str) -> bool:
    text = re.sub(r"\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'", '""', text)  # brackets inside strings do not count
    return all(text.count(opening) == text.count(closing) for opening, closing in ("()", "[]", "{}"))


def _sentences(paragraph: str) -> int:
    count = 0
    for piece in _SENTENCE_END.split(paragraph.replace("\n", " ")):
        if len(piece.split()) >= 4:
            count += 1
    return count


def _note(features: PageFeatures, kind: str, line: str) -> None:
    examples = features.examples.setdefault(kind, [])
    if len(examples) < 3:
        examples.append(line.strip()[:60])


def measure_page(text: str, columns: Mapping[str, Any] | None = None) -> PageFeatures:
    """The features of one page (module docstring); `columns`: the row's web columns (code_chars, code_blocks,
    has_code_tags), taken when they count more code than the text shows."""
    features = PageFeatures(chars=len(text), words=len(text.split()))
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip():
            current.append(line.rstrip())
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)

    kinds: list[str] = []  # per paragraph: code, prose, heading, short
    line_kinds: list[list[str]] = []
    for paragraph in paragraphs:
        per_line = [line_kind(line) for line in paragraph]
        line_kinds.append(per_line)
        code, prose = per_line.count("code"), per_line.count("prose")
        if code and code >= 0.5 * len(per_line) and code >= prose and (
                code >= 2 or any(_CODE_START.match(line.strip()) for line in paragraph)):
            kind = "code"
        elif len(paragraph) == 1 and len(paragraph[0].split()) <= 12 and _API_SIGNATURE.match(paragraph[0].strip()):
            kind = "code"  # an API's signature, documented by the prose after it
        elif prose and (2 * prose >= len(per_line) or 5 * sum(
                len(line.split()) for line, k in zip(paragraph, per_line) if k == "prose"
        ) >= 3 * sum(len(line.split()) for line in paragraph)):
            kind = "prose"  # most of its lines, or 60% of its words, are prose
        elif len(paragraph) == 1 and _looks_like_heading(paragraph[0]):
            kind = "heading"
        else:
            kind = "short"
        kinds.append(kind)

    # headings: a lone short line followed by more content
    for index, kind in enumerate(kinds):
        if kind == "heading" and index + 1 < len(kinds) and kinds[index + 1] in ("prose", "code", "short"):
            features.headings += 1
        elif kind == "heading":
            kinds[index] = "short"

    # code blocks: runs of code paragraphs
    blocks: list[tuple[int, int]] = []  # (first paragraph, last paragraph)
    index = 0
    while index < len(kinds):
        if kinds[index] == "code":
            end = index
            while end + 1 < len(kinds) and kinds[end + 1] == "code":
                end += 1
            blocks.append((index, end))
            index = end + 1
        else:
            index += 1
    code_texts = []
    near: set[int] = set()  # prose paragraphs next to a code block
    for first, last in blocks:
        block = "\n".join(line for paragraph in paragraphs[first : last + 1] for line in paragraph)
        code_texts.append(block)
        features.code_chars += len(block)
        features.balanced_blocks += _balanced(block)
        neighbours = [i for i in (first - 1, last + 1) if 0 <= i < len(kinds) and kinds[i] == "prose"]
        if first - 1 >= 0 and kinds[first - 1] == "heading" and first - 2 >= 0 and kinds[first - 2] == "prose":
            neighbours.append(first - 2)
        features.explained_blocks += bool(neighbours)
        near.update(neighbours)
    features.text_code_blocks = features.code_blocks = len(blocks)

    prose_texts = []
    sections: set[str] = set()
    words_seen: Counter[str] = Counter()  # the words of the prose (lower case, without punctuation around)
    long_seen: Counter[str] = Counter()
    for index, (paragraph, kind, per_line) in enumerate(zip(paragraphs, kinds, line_kinds)):
        in_code = kind == "code"
        run_words: list[int] = []  # words of the current run of short lines
        for line, line_type in zip(paragraph, per_line):
            stripped = line.strip()
            features.lines += 1
            if in_code:
                features.code_lines += 1
                features.code_words += len(stripped.split())
                if (_SIGNATURE.match(stripped) or _API_SIGNATURE.match(stripped)) and len(stripped) <= 200:
                    features.signatures += 1
                continue
            features.prose_lines += line_type == "prose"
            title = stripped.rstrip(":").strip()
            if _REFERENCE_SECTION.match(stripped) and title.lower() not in sections:
                sections.add(title.lower())
            if _SIGNATURE.match(stripped) and line_type != "prose" and "(" in stripped:
                features.signatures += 1
            if len(stripped) >= 20:
                key = " ".join(stripped.lower().split())
                features.long_lines += 1
                features.repeated_lines += long_seen[key] > 0
                long_seen[key] += 1
            words = len(stripped.split())
            lowered = stripped.lower() if words <= 15 else ""
            if words <= 15 and (lowered[:1] == "#" or not _FORUM_HINTS.isdisjoint(lowered.split())) and _FORUM.search(
                    lowered):
                features.forum_lines += 1
                features.noise_words += words
                _note(features, "forum", stripped)
            elif words <= 15 and (_BOILERPLATE.search(lowered) or len(_BREADCRUMB.findall(f" {stripped} ")) >= 2):
                features.boilerplate_lines += 1
                features.noise_words += words
                _note(features, "boilerplate", stripped)
            elif line_type == "short" and kind == "short" and words <= 4:
                run_words.append(words)
                if len(run_words) == 3:  # the run so far is navigation
                    features.navigation_lines += 3
                    features.noise_words += sum(run_words)
                    _note(features, "navigation", stripped)
                elif len(run_words) > 3:
                    features.navigation_lines += 1
                    features.noise_words += words
                continue
            run_words = []
        if kind == "prose":
            body = "\n".join(paragraph)
            prose_texts.append(body)
            count = _sentences(body)
            features.sentences += count
            if index in near:
                features.sentences_near_code += count
            words_seen.update(word for word in (word.strip(".,;:!?()[]\"'’“”") for word in body.lower().split())
                              if word)
    features.reference_sections = len(sections)
    features.prose_words = sum(words_seen.values())
    features.programming_terms = sum(count for word, count in words_seen.items() if word in PROGRAMMING_TERMS)
    content = [(count, word) for word, count in words_seen.items()
               if len(word) >= 4 and word.isalpha() and word not in _STOPWORDS]
    if features.prose_words >= 50 and content:
        features.top_word_share = max(content)[0] / features.prose_words

    identifiers = {name for block in code_texts for name in code_identifiers(block)}
    prose = "\n".join(prose_texts)
    prose_names = set(_IDENTIFIER.findall(prose))
    features.code_identifiers = len(identifiers)
    features.mentioned_identifiers = len(identifiers & prose_names)
    lower = text.lower()
    words = Counter(_LOWER_WORD.findall(lower))
    prices = len(_PRICE.findall(lower)) if any(mark in lower for mark in _PRICE_MARKS) else 0
    phrases = len(_SHOP_PHRASES.findall(lower)) if any(hint in lower for hint in _SHOP_HINTS) else 0
    features.shop_terms = prices + phrases + sum(words[word] for word in SHOP_WORDS)
    features.spam_terms = len(_SPAM_PHRASES.findall(lower)) + sum(words[word] for word in SPAM_WORDS)

    if columns:
        html_chars, html_blocks = _count(columns.get("code_chars")), _count(columns.get("code_blocks"))
        features.code_chars = max(features.code_chars, html_chars)
        features.code_blocks = max(features.code_blocks, html_blocks)
        tags = columns.get("has_code_tags")
        features.has_code_tags = None if tags is None else bool(tags)
    return features


def code_identifiers(code: str) -> set[str]:
    """Names of a piece of code that are clearly identifiers: three characters or more, not a keyword, and with an
    underscore, a digit or an inner capital, or called (`name(`) or a member (`.name`, `::name`)."""
    names = set()
    for match in _IDENTIFIER.finditer(code):
        name = match.group()
        if len(name) < 3 or name.lower() in _IDENTIFIER_STOPLIST:
            continue
        before, after = code[max(0, match.start() - 2) : match.start()], code[match.end() : match.end() + 2]
        if (_CODE_LOOKING.search(name) or after.lstrip(" ")[:1] == "(" or before.endswith((".", "::"))):
            names.add(name)
    return names


def _count(value: Any) -> int:
    """A non-negative count from a column value (None, NaN or junk: 0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    return int(number) if math.isfinite(number) and number > 0 else 0


def _looks_like_heading(line: str) -> bool:
    stripped = line.strip()
    words = stripped.split()
    if not words or len(words) > 10 or stripped[-1] in ".,;" or not any(char.isalpha() for char in stripped):
        return False
    return bool(_HEADING_NUMBER.match(stripped)) or stripped[0].isupper() or stripped[0].isdigit()


# ------------------------------------------------------------------------------------------ the judgement
def _up(value: float, low: float, high: float) -> float:
    """0 at `low` (or below), 10 at `high` (or above), linear between."""
    return 10.0 * min(1.0, max(0.0, (value - low) / (high - low)))


def _down(value: float, low: float, high: float) -> float:
    """10 at `low` (or below), 0 at `high` (or above)."""
    return 10.0 - _up(value, low, high)


def web_zero_rule(features: PageFeatures) -> str | None:
    """Which zero rule applies (a sentence for the explanation), or None."""
    f = features
    little_code = f.code_fraction < 0.1 and f.code_blocks <= 1
    if f.words < 10:
        return f"the page has almost no text ({f.words} words)"
    if f.long_lines >= 6 and f.repeated_share >= 0.5:
        return (f"the page is mostly repeated lines ({f.repeated_lines} of {f.long_lines} lines repeat): spam or an "
                "auto-generated page")
    if little_code and (f.spam_terms >= 3 or (f.top_word_share >= 0.12 and f.prose_words >= 100)):
        what = (f"{f.spam_terms} spam terms" if f.spam_terms >= 3
                else f"one word is {f.top_word_share:.0%} of the prose (keyword stuffing)")
        return f"the page is spam ({what})"
    if little_code and f.shop_terms >= 3 and f.shop_density >= 1.5:
        return (f"the page is a shop or product listing ({f.shop_terms} price and shop terms, "
                f"{f.shop_density:.1f} per 100 words)")
    if little_code and f.sentences < 3 and f.noise_share >= 0.5:
        return (f"the page is navigation or an auto-generated listing ({f.sentences} sentences; "
                f"{f.noise_share:.0%} of its words are navigation or boilerplate)")
    if f.code_chars < 20 and f.programming_terms < 3:
        return (f"the page has no code-related content (no code, {f.programming_terms} programming terms in "
                f"{f.prose_words} words of prose)")
    return None


@dataclass(frozen=True)
class WebAssessment:
    """The proxy's judgement of one page: the four criteria (0-10 each), their weighted mean, the rating, the
    explanation. Under a zero rule the criteria are None and the score and rating are 0."""

    features: PageFeatures
    zero_rule: str | None
    teaching: float | None
    code: float | None
    reference: float | None
    quality: float | None
    score: float  # within 1..10 (0 under a zero rule)
    rating: int  # the score rounded half up
    explanation: str


def web_rubric_assessment(text: str, *, url: str | None = None, columns: Mapping[str, Any] | None = None
                          ) -> WebAssessment:
    """Measure one page (the first DEFAULT_PROMPT_CHARS characters of its text, what an LLM rater sees; `columns`:
    the row's web columns, see `measure_page`) and judge it with the web rubric. `url` only names the page in the
    explanation: the proxy does not judge by site (module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"web_rubric_assessment: text must be a string, got {type(text).__name__}")
    features = measure_page(text[:DEFAULT_PROMPT_CHARS], columns)
    header = HEADER + (f"\nPage: {url}" if url else "")
    rule = web_zero_rule(features)
    if rule is not None:
        return WebAssessment(features, rule, None, None, None, None, 0.0, 0, f"{header}\nZero rule: {rule}.")
    f = features
    explained = f.explained_blocks / f.text_code_blocks if f.text_code_blocks else 0.0
    balanced = f.balanced_blocks / f.text_code_blocks if f.text_code_blocks else 0.0
    s_sentences = _up(f.sentences, 2, 25)
    s_terms = _up(f.term_density, 0.3, 3.0)
    s_mentions = _up(f.mention_ratio, 0.0, 0.4)
    if f.code_blocks:
        teaching = 0.3 * s_sentences + 0.3 * s_terms + 0.2 * s_mentions + 0.2 * 10.0 * explained
    else:  # prose about programming without code: it can teach, less than with examples
        teaching = 0.45 * s_sentences + 0.45 * s_terms

    fraction = f.code_fraction
    if fraction <= 0.6:
        s_share = _up(fraction, 0.0, 0.08)
    else:  # mostly code: a listing rather than explained code
        s_share = max(2.0, _down(fraction, 0.6, 0.95))
    if f.code_blocks:
        code = (0.3 * _up(f.code_blocks, 0, 3) + 0.25 * s_share + 0.3 * 10.0 * explained
                + 0.15 * (10.0 * balanced if f.text_code_blocks else 5.0))
    else:
        code = 0.25 * s_share  # inline code only

    reference = (0.35 * _up(f.reference_sections, 0, 3) + 0.25 * _up(f.signatures, 0, 2)
                 + 0.2 * _up(f.headings, 0, 4) + 0.2 * s_terms)

    quality = (0.35 * _down(f.noise_share, 0.05, 0.5) + 0.2 * _down(f.repeated_share, 0.05, 0.4)
               + 0.3 * _up(f.words, 40, 300) + 0.15 * _down(f.shop_density, 0.3, 2.0))

    criteria = {"teaching": teaching, "code": code, "reference": reference, "quality": quality}
    score = min(10.0, max(1.0, sum(WEIGHTS[name] * value for name, value in criteria.items())))
    rating = int(math.floor(score + 0.5))
    noise = ", ".join(f"{kind} e.g. {examples[0]!r}" for kind, examples in sorted(f.examples.items()))
    html = ("" if f.has_code_tags is None else
            f" (the HTML {'has' if f.has_code_tags else 'has no'} <pre>/<code>)")
    explanation = "\n".join([
        header,
        f"Teaching ({teaching:.1f}/10): {f.sentences} prose sentences ({f.sentences_near_code} next to code); "
        f"{f.term_density:.1f} programming terms per 100 words of prose; {f.mentioned_identifiers} of "
        f"{f.code_identifiers} identifiers of the code mentioned in the prose.",
        f"Code with explanation ({code:.1f}/10): {f.code_blocks} code block(s){html}, {f.code_chars:,} characters "
        f"({fraction:.0%} of the page); {f.explained_blocks} of {f.text_code_blocks} block(s) in the text next to "
        f"explaining prose, {f.balanced_blocks} with balanced brackets.",
        f"Reference value ({reference:.1f}/10): {f.reference_sections} reference section(s) (parameters, returns, "
        f"syntax, examples...), {f.signatures} signature(s), {f.headings} heading(s).",
        f"Text quality ({quality:.1f}/10): {f.words:,} words; {f.noise_share:.0%} of the words outside code are "
        f"in boilerplate, navigation or forum-signature lines{f' ({noise})' if noise else ''}; {f.repeated_share:.0%} "
        f"repeated lines; {f.shop_terms} price/shop term(s).",
    ])
    return WebAssessment(features, None, teaching, code, reference, quality, score, rating, explanation)


def web_rubric_answer(text: str, *, url: str | None = None, columns: Mapping[str, Any] | None = None) -> str:
    """The proxy's answer for one page: an explanation of the four criteria, then `Rating: [[X]]`."""
    assessment = web_rubric_assessment(text, url=url, columns=columns)
    return f"{assessment.explanation}\nRating: [[{assessment.rating}]]"


__all__ = ["PROGRAMMING_TERMS", "WEB_COLUMNS", "WEIGHTS", "PageFeatures", "WebAssessment", "line_kind",
           "measure_page", "web_rubric_answer", "web_rubric_assessment", "web_zero_rule"]
