"""Page-like texts for the web tests (the rubric proxy, the oracle step with rubric="web", web_filter): a tutorial
with explained code, a shop page, a forum thread that explains code, a navigation page, a page about something
else, spam; and a finished web dataset built from rows of them, as if web_ingest had written it."""

from __future__ import annotations

import os

import pyarrow as pa

from seedcoder.curate import dataset as ds

TUTORIAL = '''Reading a file line by line in Python

Python's built-in open() function returns a file object. Iterating over the file object yields one line at a \
time, so even a very large file never has to fit in memory.

The example below counts the lines that contain a given word. The with statement closes the file when the block \
ends, even if an exception is raised inside it.

def count_matching_lines(path, word):
    """Return how many lines of the file at `path` contain `word`."""
    count = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if word in line:
                count += 1
    return count

Here count_matching_lines opens the file with an explicit encoding: without it, Python uses the locale's default \
encoding, which differs between machines. The loop variable line keeps its trailing newline; call line.rstrip() \
if you need the text without it.

Parameters

path: the file to read.
word: the text to look for.

Returns

The number of matching lines, an integer.

To try it, save the function in a module and call it from the interpreter:

>>> count_matching_lines("notes.txt", "TODO")
3
'''

SHOP = """Mechanical Keyboard K8 Pro - Wireless, Hot-Swappable

$89.99   $119.99   25% off
In stock - free shipping on orders over $50
Add to cart
Buy now
Add to wishlist

Color: Black / White / Grey
Quantity: 1

Customer reviews (128)
Great keyboard, fast delivery. 5 stars.
Price was good and shipping took two days.

Related products
K6 Keyboard $69.99
Wrist rest $19.99
Keycap set $29.99
Checkout securely. 30 day warranty. Sign in to see your discount.
"""

FORUM = """Re: segfault when freeing a linked list in C

Posted by dave_k on March 3, 2021
Joined: Jan 2019
Posts: 412

I am getting a segmentation fault when I free my list. Here is the function I use, can anyone tell me what is \
wrong with it?

void free_list(struct node *head) {
    while (head != NULL) {
        free(head);
        head = head->next;
    }
}

Thanks in advance!

Reply Quote

Posted by mira on March 3, 2021
Joined: Jun 2015
Posts: 3,201

The problem is that free_list reads head->next after calling free(head): once the node is freed, its memory may \
already be reused, so reading from it is undefined behaviour. Save the next pointer before you free the node:

void free_list(struct node *head) {
    while (head != NULL) {
        struct node *next = head->next;
        free(head);
        head = next;
    }
}

This way each node is freed exactly once and the loop never touches freed memory. Running the program under \
valgrind or with -fsanitize=address would have reported the use after free.

Reply Quote
Sent from my phone
"""

NAVIGATION = """Home
Products
Docs
Blog
Community
About us
Contact

Archive
2023
2022
2021
2020
Tags
python
javascript
rust
go
Categories
News
Releases
Events
Copyright 2024 Example Inc. All rights reserved.
Privacy policy
Terms of use
"""

COOKING = """How to bake sourdough bread at home

Sourdough bread needs only flour, water and salt, and a lively starter. Feed your starter the evening before you \
bake so that it is at its most active in the morning.

Mix the flour and the water and let the dough rest for an hour before you add the starter and the salt. This rest, \
called the autolyse, lets the flour absorb the water and makes the dough easier to stretch.

Over the next four hours, stretch and fold the dough every half hour. When it has grown by about half, shape it \
into a round loaf and let it rise in the fridge overnight.
"""

SPAM = "\n".join(["Best online casino bonus 2024 click here to win big",
                  "Play casino slots now and make money fast",
                  "Free casino spins every day click here"] * 5)

PAGES = {"tutorial": TUTORIAL, "shop": SHOP, "forum": FORUM, "navigation": NAVIGATION, "cooking": COOKING,
         "spam": SPAM}


def web_row(number: int, text: str, category: str, url: str | None = None, **columns) -> dict:
    """A row of the web schema (docs/curation.md) for `text`; `columns` override the web columns."""
    url = url or f"https://example.org/{category}/page-{number}.html"
    host, _, path = url.removeprefix("https://").partition("/")
    code = "\n".join(line for line in text.splitlines() if line.startswith(("    ", "def ", ">>> ", "void ")))
    row = {"id": f"page{number:04d}", "repo": host, "path": "/" + path, "language": "text", "source": "web",
           "text": text, "url": url, "fetch_date": "2024-05-01T00:00:00Z", "content_type": "text/html",
           "has_code_tags": bool(code),
           "code_blocks": sum(line.startswith(("def ", ">>> ", "void ")) for line in text.splitlines()),
           "code_chars": len(code), "words": len(text.split()), "category": category,
           "size_bytes": len(text.encode()) + 2000}
    row.update(columns)
    return row


def make_web_dataset(directory, shards) -> str:
    """A finished dataset of web rows, one shard per list of rows in `shards`."""
    directory = str(directory)
    ds.prepare_output(directory, {"step": "fixture", "name": os.path.basename(directory)})
    markers = []
    for index, rows in enumerate(shards):
        table = pa.Table.from_pylist(rows) if rows else ds.base_table([])
        record = {"task": f"part-{index:05d}", "stats": ds.write_part(directory, index, table)}
        ds.write_json(ds.marker_path(directory, index), record)
        markers.append(record)
    ds.finish_dataset(directory, markers)
    return directory
