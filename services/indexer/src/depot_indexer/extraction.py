"""Text extraction: the searchable text of a document's bytes, by content type or extension.

Pure and synchronous (run it off the event loop with ``asyncio.to_thread``). Text-like
types (plain text, Markdown, CSV, JSON, HTML) and PDF yield text; every other type yields
``""`` and the document is indexed by its filename and metadata only. A PDF that cannot be
read at all raises :class:`ExtractionError` (the indexer then indexes it by filename and
reports ``document.index_failed``); one that breaks after some pages keeps their text. The result never
exceeds ``max_chars`` characters and keeps no control characters but tab and newlines
(PostgreSQL ``text`` refuses NUL; the search snippets use two others as markers).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from enum import Enum
from html.parser import HTMLParser
from typing import Any

import structlog
from pypdf import PdfReader

log = structlog.get_logger(__name__)


class Kind(Enum):
    """How a document's bytes are turned into text."""

    PLAIN = "plain"
    JSON = "json"
    HTML = "html"
    PDF = "pdf"
    NONE = "none"


_CONTENT_TYPES = {
    "text/plain": Kind.PLAIN,
    "text/markdown": Kind.PLAIN,
    "text/x-markdown": Kind.PLAIN,
    "text/csv": Kind.PLAIN,
    "text/tab-separated-values": Kind.PLAIN,
    "application/csv": Kind.PLAIN,
    "application/json": Kind.JSON,
    "text/json": Kind.JSON,
    "text/html": Kind.HTML,
    "application/xhtml+xml": Kind.HTML,
    "application/pdf": Kind.PDF,
    "application/x-pdf": Kind.PDF,
}

_EXTENSIONS = {
    "txt": Kind.PLAIN,
    "text": Kind.PLAIN,
    "log": Kind.PLAIN,
    "md": Kind.PLAIN,
    "markdown": Kind.PLAIN,
    "csv": Kind.PLAIN,
    "tsv": Kind.PLAIN,
    "json": Kind.JSON,
    "html": Kind.HTML,
    "htm": Kind.HTML,
    "xhtml": Kind.HTML,
    "pdf": Kind.PDF,
}

_SKIPPED_HTML = frozenset({"script", "style", "noscript", "template"})
_BLOCK_HTML = frozenset(
    {
        "p",
        "div",
        "br",
        "li",
        "tr",
        "td",
        "th",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "title",
        "section",
        "article",
        "header",
        "footer",
        "pre",
        "blockquote",
    }
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


class ExtractionError(Exception):
    """The document's bytes could not be turned into text; ``reason`` says why, for the event."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def kind_of(content_type: str, filename: str) -> Kind:
    """The extraction kind: by content type first, then by the filename's extension."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _CONTENT_TYPES:
        return _CONTENT_TYPES[media]
    if media.endswith("+json"):
        return Kind.JSON
    _, dot, extension = filename.rpartition(".")
    if dot and extension.lower() in _EXTENSIONS:
        return _EXTENSIONS[extension.lower()]
    if media.startswith("text/"):
        return Kind.PLAIN
    return Kind.NONE


def extract_text(content_type: str, filename: str, data: bytes, *, max_chars: int) -> str:
    """The searchable text of ``data``, at most ``max_chars`` characters (``""`` if none)."""
    extractors: dict[Kind, Callable[[bytes, int], str]] = {
        Kind.PLAIN: _plain,
        Kind.JSON: _json,
        Kind.HTML: _html,
        Kind.PDF: _pdf,
    }
    extractor = extractors.get(kind_of(content_type, filename))
    if extractor is None or not data or max_chars <= 0:
        return ""
    return _CONTROL.sub("", extractor(data, max_chars))[:max_chars]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").removeprefix("\ufeff")


def _plain(data: bytes, max_chars: int) -> str:
    return _decode(data)[:max_chars]


def _json(data: bytes, max_chars: int) -> str:
    text = _decode(data)
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return text[:max_chars]
    parts: list[str] = []
    size = 0
    for item in _json_strings(document):
        parts.append(item)
        size += len(item) + 1
        if size > max_chars:
            break
    return "\n".join(parts)[:max_chars]


def _json_strings(document: Any) -> Iterator[str]:
    """Keys and string values of a JSON document, depth-first, without recursion."""
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for key, value in reversed(list(node.items())):
                stack.append(value)
                stack.append(str(key))
        elif isinstance(node, list):
            stack.extend(reversed(node))


class _TextCollector(HTMLParser):
    """Collects an HTML document's visible text; skips scripts, styles and templates."""

    def __init__(self, max_chars: int) -> None:
        super().__init__(convert_charrefs=True)
        self._max_chars = max_chars
        self._skipping = 0
        self._parts: list[str] = []
        self._size = 0

    @property
    def full(self) -> bool:
        return self._size >= self._max_chars

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_HTML:
            self._skipping += 1
        elif tag in _BLOCK_HTML:
            self._append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_HTML:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_HTML:
            self._append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._append(data)

    def _append(self, text: str) -> None:
        if not self.full:
            self._parts.append(text)
            self._size += len(text)

    def text(self) -> str:
        joined = _SPACES.sub(" ", "".join(self._parts))
        return _BLANK_LINES.sub("\n\n", joined).strip()


def _html(data: bytes, max_chars: int) -> str:
    collector = _TextCollector(max_chars)
    text = _decode(data)
    chunk = 64 * 1024
    for start in range(0, len(text), chunk):
        collector.feed(text[start : start + chunk])
        if collector.full:
            break
    else:
        collector.close()
    return collector.text()


def _pdf(data: bytes, max_chars: int) -> str:
    parts: list[str] = []
    size = 0
    try:
        reader = PdfReader(io.BytesIO(data))
        for page in reader.pages:
            text = page.extract_text() or ""
            parts.append(text)
            size += len(text) + 1
            if size > max_chars:
                break
    except Exception as error:  # pypdf raises many error types on malformed input
        log.info("index.pdf_unreadable", error=repr(error), pages_read=len(parts))
        if not parts:
            raise ExtractionError(f"pdf_unreadable: {type(error).__name__}") from error
    return "\n".join(parts)
