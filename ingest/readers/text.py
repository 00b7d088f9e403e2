"""Plain text, Markdown and HTML files: decoded (see ``encoding``) and kept exactly as decoded, so chunk
offsets point into the file's own text; Markdown headings become the section path of what follows them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from cjkrag.ingest.readers.base import ReadContext, ReaderError, check_size
from cjkrag.ingest.readers.encoding import decode
from cjkrag.types import Document

EXTENSIONS = (".txt", ".md", ".markdown", ".html", ".htm")
_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_MD_HEADING_RE = re.compile(r"^[ ]{0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def read_text_file(ctx: ReadContext) -> Iterator[Document]:
    path, ext = ctx.path, ctx.path.suffix.lower()
    data = read_capped(ctx)
    declared = None
    if ext in (".html", ".htm"):
        m = _META_CHARSET_RE.search(data[:4096])
        declared = m.group(1).decode("ascii") if m else None
    text, encoding = decode(data, ctx.source, declared, encoding=ctx.encoding)
    title = ""
    fmt = ext.lstrip(".")
    spans: list[tuple[int, int, dict[str, Any]]] = []
    if ext in (".html", ".htm"):
        title, text = html_to_text(text)
        fmt = "html"
    elif ext in (".md", ".markdown"):
        title = markdown_title(text)
        spans = markdown_sections(text)
        fmt = "md"
    if not text.strip():
        raise ReaderError("empty or whitespace-only file", "nothing to index; add text or remove it", "skipped")
    yield ctx.document(text, title=title or path.stem, metadata={"format": fmt, "encoding": encoding}, spans=spans)


def read_capped(ctx: ReadContext) -> bytes:
    check_size(ctx)
    try:
        return ctx.path.read_bytes()
    except OSError as exc:
        raise ReaderError(f"cannot read: {exc.strerror}", "check the file's permissions") from None


def markdown_title(text: str) -> str:
    m = _MD_HEADING_RE.search(text)
    return m.group(2).strip() if m else ""


def markdown_sections(text: str) -> list[tuple[int, int, dict[str, Any]]]:
    """One span per heading: from the heading to the next one, with the heading path (``["A", "A.1"]``)."""
    marks = [(m.start(), len(m.group(1)), m.group(2).strip()) for m in _MD_HEADING_RE.finditer(text)]
    spans: list[tuple[int, int, dict[str, Any]]] = []
    path: list[tuple[int, str]] = []
    for i, (start, level, heading) in enumerate(marks):
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading))
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        spans.append((start, end, {"section": [h for _, h in path]}))
    return spans


_BLOCK_TAGS = (
    "p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table",
    "section", "article", "header", "footer", "nav", "aside", "main", "pre", "blockquote", "hr", "figure",
    "figcaption", "form", "fieldset", "address", "details", "summary", "caption", "th", "td",
)  # fmt: skip


def html_to_text(html: str) -> tuple[str, str]:
    """(title, visible text) of an HTML page: script/style dropped, block elements on their own lines."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text().split()) if title_tag else ""
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    raw = soup.get_text()
    lines = [" ".join(line.split()) for line in raw.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not title:
        h1 = soup.find("h1")
        title = " ".join(h1.get_text().split()) if h1 else ""
    return title, text
