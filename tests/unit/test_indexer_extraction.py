"""Text extraction for the search index: each supported type, caps, and what is left out."""

from __future__ import annotations

import json

import pytest

from depot_indexer.extraction import ExtractionError, Kind, extract_text, kind_of

MAX = 1_000_000


def _pdf(*pages: str) -> bytes:
    """A minimal valid PDF whose pages each show one line of Helvetica text."""
    count = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(count))
    font = 3 + 2 * count
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
    ]
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R"
            f" /Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_plain_text_is_decoded_as_utf8() -> None:
    """Plain text comes back as its UTF-8 decoding."""
    assert extract_text("text/plain", "a.txt", "Grüße aus Köln".encode(), max_chars=MAX) == "Grüße aus Köln"


def test_invalid_utf8_is_replaced_not_rejected() -> None:
    """Bytes that are not UTF-8 become replacement characters instead of failing."""
    assert extract_text("text/plain", "a.txt", b"ok \xff\xfe done", max_chars=MAX) == "ok \ufffd\ufffd done"


def test_markdown_and_csv_are_text() -> None:
    """Markdown and CSV are indexed as their raw text."""
    assert "Heading" in extract_text("text/markdown", "r.md", b"# Heading\n\nbody", max_chars=MAX)
    assert "alice,42" in extract_text("text/csv", "t.csv", b"name,age\nalice,42\n", max_chars=MAX)


def test_extension_decides_when_content_type_is_generic() -> None:
    """A generic content type falls back to the filename's extension."""
    assert extract_text("application/octet-stream", "notes.MD", b"hello", max_chars=MAX) == "hello"
    assert kind_of("application/octet-stream", "scan.pdf") is Kind.PDF
    assert kind_of("text/plain; charset=utf-8", "x.bin") is Kind.PLAIN


def test_json_flattens_keys_and_string_values() -> None:
    """JSON yields its keys and string values, not its numbers or punctuation."""
    data = json.dumps({"customer": {"name": "Acme", "tags": ["gold", 7]}, "total": 12.5}).encode()
    words = extract_text("application/json", "order.json", data, max_chars=MAX).split("\n")
    assert words == ["customer", "name", "Acme", "tags", "gold", "total"]


def test_invalid_json_falls_back_to_raw_text() -> None:
    """A document that claims JSON but does not parse is indexed as raw text."""
    assert extract_text("application/json", "x.json", b"{not json", max_chars=MAX) == "{not json"


def test_html_keeps_text_and_drops_scripts_and_styles() -> None:
    """HTML loses its tags, scripts and styles; entities are decoded."""
    page = (
        b"<html><head><title>Report</title><style>body{color:red}</style></head>"
        b"<body><p>Revenue &amp; costs</p><script>alert('x')</script><div>Summary</div></body></html>"
    )
    text = extract_text("text/html", "r.html", page, max_chars=MAX)
    assert "Revenue & costs" in text
    assert "Report" in text
    assert "Summary" in text
    assert "alert" not in text
    assert "color" not in text
    assert "<" not in text


def test_pdf_text_is_extracted_from_every_page() -> None:
    """Text on each page of a PDF is extracted."""
    text = extract_text("application/pdf", "q.pdf", _pdf("Quarterly invoice", "Second page"), max_chars=MAX)
    assert "Quarterly invoice" in text
    assert "Second page" in text


def test_broken_pdf_raises_extraction_error_with_a_reason() -> None:
    """Bytes that are not a readable PDF raise ExtractionError naming why (the indexer reports index_failed)."""
    with pytest.raises(ExtractionError) as caught:
        extract_text("application/pdf", "bad.pdf", b"%PDF-1.4\ngarbage", max_chars=MAX)
    assert caught.value.reason.startswith("pdf_unreadable: ")


@pytest.mark.parametrize("cut", [100, 400, -10])
def test_truncated_pdf_raises_an_extraction_error_naming_why(cut: int) -> None:
    """A PDF cut short (as a capped read may return) raises ExtractionError with a pdf_unreadable reason, never
    another error, while the whole PDF yields its text."""
    whole = _pdf("hello", "second page")
    assert "hello" in extract_text("application/pdf", "whole.pdf", whole, max_chars=MAX)
    with pytest.raises(ExtractionError) as caught:
        extract_text("application/pdf", "cut.pdf", whole[:cut], max_chars=MAX)
    assert caught.value.reason.startswith("pdf_unreadable: ")


@pytest.mark.parametrize(
    ("content_type", "filename"),
    [("image/png", "photo.png"), ("application/zip", "a.zip"), ("application/octet-stream", "blob")],
)
def test_other_types_yield_no_text(content_type: str, filename: str) -> None:
    """Types without an extractor are indexed by filename and metadata only."""
    assert extract_text(content_type, filename, b"\x89PNG\r\n\x1a\nabc", max_chars=MAX) == ""


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", b"x" * 100),
        ("application/json", json.dumps(["word"] * 100).encode()),
        ("text/html", b"<p>" + b"y" * 100 + b"</p>"),
    ],
)
def test_output_is_capped_at_max_chars(content_type: str, data: bytes) -> None:
    """No extractor returns more than ``max_chars`` characters."""
    assert len(extract_text(content_type, "f", data, max_chars=10)) == 10


def test_pdf_output_is_capped() -> None:
    """PDF text is capped like any other."""
    assert len(extract_text("application/pdf", "q.pdf", _pdf("Quarterly invoice"), max_chars=5)) == 5


def test_control_characters_are_removed() -> None:
    """NUL and other control characters never reach PostgreSQL; tabs and newlines stay."""
    assert extract_text("text/plain", "a.txt", b"a\x00b\x02c\td\ne", max_chars=MAX) == "abc\td\ne"


def test_empty_input_yields_empty_text() -> None:
    """An empty object has no text."""
    assert extract_text("text/plain", "a.txt", b"", max_chars=MAX) == ""
